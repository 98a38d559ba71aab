"""Atomic, durable file writes: saved models, indexes and results are never left half-written or missing.

Guarantees of :func:`atomic_path` (one file) and :func:`atomic_dir` (a whole directory):

* **Old or new, never neither.** Content is written to a hidden temporary sibling and moved into place only when
  complete. A file is moved with :func:`os.replace`. A directory that already exists is swapped with Linux's
  ``renameat2(RENAME_EXCHANGE)``, so there is no moment at which the target is missing; where the exchange is not
  available (other systems, or a filesystem that lacks it) two renames are used, and a kill between them is
  repaired by the next write (see below).
* **Durable.** Every file written is fsynced before the move, and the parent directory after it, so a power loss
  leaves the old or the new version, not an empty file.
* **Readable like any other file.** Modes follow the umask, as :func:`open` and :func:`os.mkdir` do: files
  ``0o666 & ~umask``, directories ``0o777 & ~umask`` (``tempfile``'s private 0600/0700 would lock out a service
  running under another account).
* **Loading runs no code.** :func:`load_torch` reads ``.pt`` files with ``torch.load(weights_only=True)``: tensors,
  numbers, strings, lists, tuples and dicts only. A pickle that names any other callable is refused before it runs.
* **No litter.** Temporaries are named ``.<name>.<host>-<pid>.<8 hex>.tmp`` (and, for the fallback swap,
  ``.<name>.old-<host>-<pid>-<8 hex>``; ``<host>`` is a hash of the host name). :func:`remove_stale_temporaries`
  deletes those left by a killed process -- its process is gone from this host, or the temporary is older than
  :data:`STALE_AFTER_S` (a reused pid, another host) -- and never another live process's. :func:`atomic_dir`
  runs it on the parent on every write, :func:`atomic_path` once per directory and process (a folder of thousands
  of images is not rescanned for each one).
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import errno
import hashlib
import json
import os
import pickle
import re
import secrets
import shutil
import socket
import stat
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fashionlens.errors import ModelError

STALE_AFTER_S = 24 * 3600
"""A temporary this old is stale even if a process with its pid runs (pids are reused)."""

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# Temporaries name their writer as <host>-<pid> (a pid means nothing on another host of a shared filesystem); the
# mkstemp names and `.old-<pid>` directories of earlier versions have no host, or no pid at all.
_HOST = hashlib.sha1(socket.gethostname().encode()).hexdigest()[:8]
_TEMP = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<host>[0-9a-f]{8})-(?P<pid>\d+)\.[0-9a-f]{8}|[a-z0-9_]{8})\.tmp$")
_OLD = re.compile(r"^\.(?P<name>.+)\.old-(?:(?P<host>[0-9a-f]{8})-)?(?P<pid>\d+)(?:-[0-9a-f]{8})?$")
_scanned: set[str] = set()
_scanned_lock = threading.Lock()


def _temp_sibling(target: Path, kind: str = "tmp") -> Path:
    writer = f"{_HOST}-{os.getpid()}"
    if kind == "old":
        return target.with_name(f".{target.name}.old-{writer}-{secrets.token_hex(4)}")
    return target.with_name(f".{target.name}.{writer}.{secrets.token_hex(4)}.tmp")


def _writer_alive(host: str | None, pid: int | None) -> bool:
    """Whether the writer of a temporary may still run (``True`` when that cannot be told: age decides)."""
    if pid is None or (host is not None and host != _HOST):
        return True
    if pid == os.getpid() or os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(directory: str | os.PathLike[str], max_age_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete the temporaries in ``directory`` that interrupted writes left behind; returns what was removed.

    A temporary is stale when the process that made it no longer runs, or when it is older than ``max_age_s``
    (earlier versions did not record the pid: age alone decides for those). An ``.old-`` directory whose target is
    missing is the previous version of an interrupted two-rename swap: it is put back instead of deleted.
    """
    folder = Path(directory)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        if not entry.name.startswith("."):
            continue
        match = _TEMP.match(entry.name) or _OLD.match(entry.name)
        if match is None:
            continue
        pid = int(match.group("pid")) if match.group("pid") else None
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue  # removed meanwhile
        if age < max_age_s and _writer_alive(match.group("host"), pid):
            continue
        path = Path(entry.path)
        target = folder / match.group("name")
        if match.re is _OLD and not os.path.lexists(target):
            try:
                os.rename(path, target)
            except OSError:
                continue  # never delete what may be the only copy
            _fsync_dir(folder)
            continue
        _remove(path)
        removed.append(path)
    return removed


def _clean_once(directory: Path) -> None:
    key = os.path.abspath(directory)
    with _scanned_lock:
        if key in _scanned:
            return
        if len(_scanned) > 4096:  # a long-lived process writing into many folders: forget, rescan later
            _scanned.clear()
        _scanned.add(key)
    remove_stale_temporaries(directory)


def _fsync(path: Path, directory: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # Windows cannot open a directory; its renames are durable on their own
            return
        raise
    try:
        os.fsync(fd)
    except OSError as error:
        if not (directory and error.errno in (errno.EINVAL, errno.EBADF, errno.EACCES)):
            raise
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    _fsync(path, directory=True)


def _fsync_tree(root: Path) -> None:
    """fsync every file and directory under ``root`` (children before their directory)."""
    for folder, _, files in os.walk(root, topdown=False):
        for name in files:
            file = Path(folder) / name
            if stat.S_ISREG(file.lstat().st_mode):
                _fsync(file)
        _fsync_dir(Path(folder))


def _load_renameat2() -> Any:
    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2  # glibc >= 2.28, musl >= 1.2.4
    except (AttributeError, OSError, TypeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function


_renameat2 = _load_renameat2() if os.name == "posix" else None


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap the paths ``a`` and ``b``; ``False`` when this system or filesystem cannot."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, f"cannot swap {a} and {b}: {os.strerror(code)}")


def _swap_in(tmp: Path, target: Path) -> None:
    """Move the finished ``tmp`` onto ``target``; afterwards ``tmp`` holds the old version, if any is left to delete."""
    if os.path.lexists(target) and _exchange(tmp, target):
        _fsync_dir(target.parent)
        return
    if not os.path.lexists(target):
        os.replace(tmp, target)  # nothing to keep: one atomic rename (replaces an empty directory made meanwhile)
        _fsync_dir(target.parent)
        return
    # No atomic exchange here: move the old version aside, then the new one in. A kill between the two renames
    # leaves only `.<name>.old-<host>-<pid>-<hex>`; remove_stale_temporaries (run by the next write) renames it back.
    old = _temp_sibling(target, "old")
    os.replace(target, old)
    os.replace(tmp, target)
    _fsync_dir(target.parent)
    _remove(old)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], durable: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success move it onto ``path``, on failure delete it.

    The temporary exists (empty, with the umask's mode) when yielded; the caller writes or overwrites it.
    ``durable=False`` skips the fsyncs (~5 ms a file): for caches, where a write lost to a power cut is only
    recomputed, the move stays atomic.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _clean_once(target.parent)
    tmp = _temp_sibling(target)
    os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))  # the umask applies, as for open()
    try:
        yield tmp
        if durable:
            _fsync(tmp)
        os.replace(tmp, target)
        if durable:
            _fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary directory next to ``path``; on success it replaces ``path`` as a whole.

    Stale temporaries of killed writes in the parent are removed first; the old version is deleted only after the
    new one is in place.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent)
    tmp = _temp_sibling(target)
    os.mkdir(tmp, 0o777)  # the umask applies
    try:
        yield tmp
        _fsync_tree(tmp)
        _swap_in(tmp, target)
    finally:
        if os.path.lexists(tmp):
            _remove(tmp)


def run_dir(model_dir: str | os.PathLike[str]) -> Path:
    """The folder beside ``model_dir`` where its training run keeps checkpoints and ``history.json``.

    ``models/tagger`` trains in ``models/tagger.run``: outside the model folder, so saving the model atomically
    never touches a resumable run, and a finished run can be deleted without touching the model.
    """
    path = Path(model_dir)
    return path.with_name(path.name + ".run")


def default_cache_dir() -> Path:
    """Where fashionlens caches derived files (features, compiled networks): ``$FASHIONLENS_CACHE`` or
    ``~/.cache/fashionlens``."""
    return Path(os.environ.get("FASHIONLENS_CACHE", Path.home() / ".cache" / "fashionlens"))


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Atomically write ``text`` to ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


_SCALARS = (str, bytes, int, float, bool, complex, type(None))  # exact types: np.float64 subclasses float
_TORCH_VALUES = (torch.Tensor, torch.Size, torch.dtype, torch.device)


def _check_plain(obj: Any, where: str) -> None:
    """Raise ``TypeError`` naming the first value under ``obj`` that :func:`load_torch` would refuse."""
    if type(obj) in (dict, collections.OrderedDict):  # a state_dict is an OrderedDict
        for key, value in obj.items():
            _check_plain(key, f"a key of {where}")
            _check_plain(value, f"{where}[{key!r}]")
    elif type(obj) in (list, tuple):
        for i, value in enumerate(obj):
            _check_plain(value, f"{where}[{i}]")
    elif type(obj) not in _SCALARS and not isinstance(obj, _TORCH_VALUES):
        raise TypeError(f"{where} is a {type(obj).__module__}.{type(obj).__qualname__}: only tensors and plain "
                        f"values can be saved (they load without running code)")


def plain_values(obj: Any) -> Any:
    """``obj`` with NumPy arrays turned into tensors and NumPy scalars into Python numbers, so that it saves.

    Dicts, lists and tuples are rebuilt (a state_dict's ``OrderedDict`` is kept as it is); anything else is returned
    unchanged, for :func:`save_torch` to refuse.
    """
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.array(obj))  # a copy: the checkpoint must not alias a live RNG or buffer
    if isinstance(obj, np.generic):
        return obj.item()
    if type(obj) is dict:
        return {plain_values(key): plain_values(value) for key, value in obj.items()}
    if type(obj) in (list, tuple):
        return type(obj)(plain_values(value) for value in obj)
    return obj


def save_torch(path: str | os.PathLike[str], obj: Any) -> None:
    """Atomically :func:`torch.save` ``obj`` to ``path``, to be read back with :func:`load_torch`.

    Raises:
        TypeError: ``obj`` holds something other than tensors and plain values (numbers, strings, ``None``, lists,
            tuples, dicts), which :func:`load_torch` would refuse; nothing is written.
    """
    _check_plain(obj, Path(path).name)
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_torch(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Any:
    """Load a file written by :func:`save_torch` without executing code from it.

    Only tensors and plain values (numbers, strings, ``None``, lists, tuples, dicts) are accepted, so a planted
    ``model.pt`` or ``last.pt`` whose pickle calls ``os.system`` is refused instead of run.

    Raises:
        ModelError: The file is missing, damaged, or holds anything else; the one-line message names it.
    """
    file = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about foreign pickle protocols; the error says enough
            return torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        found = re.search(r"GLOBAL ([\w.]+)", str(error))
        what = f"references {found.group(1)}" if found else "holds something other than tensors and plain values"
        raise ModelError(f"refusing to load {file}: it {what}; only tensors and plain values are loaded, so that "
                         f"a planted file cannot run code") from error
    except Exception as error:  # a damaged file fails in many ways inside the unpickler (IndexError, KeyError...)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"cannot load {file}: {first}") from error
