"""Mutation check: break each promise of the critical code with a one-line mutant and make sure a test notices.

Every mutant in ``scripts/mutants.toml`` names a file, an exact snippet of it, the snippet's replacement and the
tests that must turn red. The script copies the project (tracked and untracked, not ignored, files: uncommitted work
is included) into a scratch folder, checks that those tests pass there unmutated, then applies one mutant at a time
and runs its tests with ``pytest -x``. A mutant whose tests still pass *survived*; a snippet that no longer occurs
exactly once (the code drifted) is reported as ``snippet not found``/``snippet ambiguous``. Either fails the run, so a
promise cannot silently lose its test.

Usage::

    python scripts/mutation.py                      # every mutant (make mutation)
    python scripts/mutation.py --only a,b           # a subset (make mutation MUTANTS=a,b)
    python scripts/mutation.py --list               # names, files and promises

Tests run with ``CI=true`` (missing shared data fails rather than skips: a skipped test cannot kill a mutant) and
with ``FASHIONLENS_TEST_CACHE`` set to one scratch feature cache shared by all runs, so real-data tests extract
features once per mutation run. A mutant of the feature extraction itself would need a cache of its own.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MUTANTS_FILE = ROOT / "scripts" / "mutants.toml"

#: pytest exit statuses: 0 all passed, 1 some failed; anything else (interrupted, internal error, usage error,
#: no tests collected) means the mutant or its test list is broken, not that a test caught it.
PASSED, FAILED = 0, 1


@dataclasses.dataclass(frozen=True)
class Mutant:
    """One single-line break of a promise and the tests that must catch it."""

    name: str
    promise: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]


@dataclasses.dataclass
class Outcome:
    """What happened to one mutant: ``killed`` is the only passing status."""

    mutant: Mutant
    status: str
    seconds: float = 0.0
    detail: str = ""


def load_mutants(path: Path = MUTANTS_FILE) -> list[Mutant]:
    """Read the mutant list; every entry needs all fields, names must be unique and the replacement must differ."""
    with path.open("rb") as handle:
        entries = tomllib.load(handle).get("mutant", [])
    mutants, seen = [], set()
    for number, entry in enumerate(entries, start=1):
        missing = [key for key in ("name", "promise", "file", "original", "replacement", "tests") if key not in entry]
        if missing:
            raise SystemExit(f"error: {path}: mutant #{number} lacks {', '.join(missing)}")
        if entry["name"] in seen:
            raise SystemExit(f"error: {path}: mutant name '{entry['name']}' is used twice")
        if entry["original"] == entry["replacement"] or not entry["tests"]:
            raise SystemExit(f"error: {path}: mutant '{entry['name']}' changes nothing or names no tests")
        seen.add(entry["name"])
        mutants.append(Mutant(entry["name"], entry["promise"], entry["file"], entry["original"],
                              entry["replacement"], tuple(entry["tests"])))
    return mutants


def select(mutants: list[Mutant], only: str | None) -> list[Mutant]:
    """The mutants named in ``only`` (comma-separated), in file order; all when ``only`` is empty."""
    if not only:
        return mutants
    wanted = [name.strip() for name in only.split(",") if name.strip()]
    known = {m.name for m in mutants}
    unknown = [name for name in wanted if name not in known]
    if unknown:
        raise SystemExit(f"error: unknown mutant(s) {unknown}; known: {', '.join(sorted(known))}")
    return [m for m in mutants if m.name in wanted]


def copy_project(target: Path) -> None:
    """Copy the working tree's tracked and untracked-but-not-ignored files (what ``git status`` sees) to ``target``."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            check=True, capture_output=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():  # deleted-but-tracked files are listed too
            destination = target / name
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination)


def run_tests(tree: Path, tests: tuple[str, ...], env: dict[str, str], timeout: float) -> tuple[int | None, str]:
    """``pytest -x`` on ``tests`` inside ``tree``; returns the exit status (``None`` on timeout) and the output."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", "--no-header", *tests]
    try:
        done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout:.0f} s"
    return done.returncode, done.stdout + done.stderr


def check_mutant(tree: Path, mutant: Mutant, env: dict[str, str], timeout: float) -> Outcome:
    """Apply ``mutant`` to ``tree``, run its tests, and restore the file."""
    path = tree / mutant.file
    if not path.is_file():
        return Outcome(mutant, "file not found", detail=mutant.file)
    source = path.read_text(encoding="utf-8")
    count = source.count(mutant.original)
    if count != 1:
        status = "snippet not found" if count == 0 else "snippet ambiguous"
        return Outcome(mutant, status, detail=f"{mutant.file}: {mutant.original.strip()!r} occurs {count} times")
    path.write_text(source.replace(mutant.original, mutant.replacement), encoding="utf-8")
    start = time.perf_counter()
    try:
        status_code, output = run_tests(tree, mutant.tests, env, timeout)
    finally:
        path.write_text(source, encoding="utf-8")
    seconds = time.perf_counter() - start
    if status_code is None:  # a mutant that hangs the tests is caught, if expensively
        return Outcome(mutant, "killed", seconds, output)
    if status_code == FAILED:
        failed = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
        return Outcome(mutant, "killed", seconds, failed[-1] if failed else "")
    if status_code == PASSED:
        return Outcome(mutant, "SURVIVED", seconds, "its tests still pass")
    return Outcome(mutant, "error", seconds, f"pytest exit status {status_code}:\n{output[-3000:]}")


def test_environment(tree: Path, cache: Path) -> dict[str, str]:
    """The copy's sources first on the path, CI semantics for missing data, and one shared scratch feature cache."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tree / "src"), *filter(None, [env.get("PYTHONPATH", "")])])
    env["CI"] = "true"
    env["FASHIONLENS_TEST_CACHE"] = str(cache)
    env.setdefault("FASHIONLENS_DATA", str((ROOT / ".." / "shared" / "data").resolve()))
    return env


def main(argv: list[str] | None = None) -> int:
    """Run the selected mutants; exit status 1 unless every one was killed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default=os.environ.get("MUTANTS") or None,
                        help="comma-separated mutant names (default: all; also $MUTANTS)")
    parser.add_argument("--file", type=Path, default=MUTANTS_FILE, help="mutant list (default: %(default)s)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per test run")
    parser.add_argument("--no-baseline", action="store_true",
                        help="skip checking that the tests pass without mutation")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy (its path is printed)")
    args = parser.parse_args(argv)
    mutants = select(load_mutants(args.file), args.only)
    if args.list:
        for mutant in mutants:
            print(f"{mutant.name:32s} {mutant.file:40s} {mutant.promise}")
        return 0

    scratch = Path(tempfile.mkdtemp(prefix="fashionlens-mutation-"))
    try:
        tree = scratch / "tree"
        copy_project(tree)
        env = test_environment(tree, scratch / "cache")
        where = subprocess.run([sys.executable, "-c", "import fashionlens; print(fashionlens.__file__)"], cwd=tree,
                               env=env, capture_output=True, text=True, check=True).stdout.strip()
        if not Path(where).resolve().is_relative_to(tree.resolve()):
            print(f"error: the tests would import fashionlens from {where}, not from the mutated copy")
            return 1
        drifted = [m.name for m in mutants if not (tree / m.file).is_file()
                   or (tree / m.file).read_text(encoding="utf-8").count(m.original) != 1]
        if drifted:  # reported again below; said first so a long baseline does not hide it
            print(f"snippet not found (or not unique) for: {', '.join(drifted)}")
        if not args.no_baseline:
            every_test = tuple(dict.fromkeys(test for mutant in mutants for test in mutant.tests))
            print(f"baseline: {len(every_test)} test target(s) on the unmutated copy ...", flush=True)
            status_code, output = run_tests(tree, every_test, env, args.timeout * 2)
            if status_code != PASSED:
                print(output[-5000:])
                print("error: the mutants' tests fail (or time out) without any mutation; fix them first")
                return 1
        outcomes = []
        for mutant in mutants:
            print(f"{mutant.name} ...", end=" ", flush=True)
            outcome = check_mutant(tree, mutant, env, args.timeout)
            print(f"{outcome.status} ({outcome.seconds:.0f} s)", flush=True)
            if outcome.status != "killed":
                print(f"    {outcome.detail}")
            outcomes.append(outcome)
    finally:
        if args.keep:
            print(f"scratch copy kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)

    print("\nmutant                           result")
    for outcome in outcomes:
        print(f"{outcome.mutant.name:32s} {outcome.status}  {outcome.detail.splitlines()[0] if outcome.detail else ''}")
    bad = [o for o in outcomes if o.status != "killed"]
    print(f"\n{len(outcomes) - len(bad)} of {len(outcomes)} mutant(s) killed")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
