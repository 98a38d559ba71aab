"""Property-based tests: whatever a manifest or annotation file holds (random CSV, JSON lines, parquet, JSON, text,
random paths), readers either return a manifest or raise the project's one-line :class:`FashionlensError` -- never a
bare ``KeyError``, ``TypeError`` or pandas/pyarrow error."""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fashionlens.data.readers.download import MAX_ID_LENGTH, safe_id
from fashionlens.data.readers.generic import read_generic
from fashionlens.data.readers.imaterialist import read_imaterialist
from fashionlens.data.readers.jd_style import read_jd_style
from fashionlens.data.records import Manifest
from fashionlens.errors import FashionlensError

#: Bounded and without a database file in the repository: fast enough for every ``make test``.
PROPERTY = settings(max_examples=60, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

#: Column names a user's table may carry: the recognised ones, label-like ones, and noise.
COLUMNS = st.sampled_from(["path", "image", "split", "domain", "item_id", "bbox", "bbox_x0", "bbox_y0", "bbox_x1",
                           "bbox_y1", "colour", "style", "labels", "tag:x", "class:y", "meta:z", "", " ", "path "])
#: Cell values: text with separators, quotes and unicode, numbers, paths that climb out or are absolute.
CELLS = st.one_of(st.text(max_size=12), st.sampled_from(["1", "0", "yes", "true", "", "train", "validation", "shop",
                                                         "user", "1,2,3,4", "[1, 2]", "[\"a\", \"b\"]", "nan",
                                                         "../../etc/passwd", "/abs/img.jpg", "~/x.jpg", "a\x00b",
                                                         "x" * 300]),
                  st.floats(allow_nan=True).map(str), st.integers().map(str))


def _one_line_or_manifest(read: Callable[[], Any]) -> None:
    try:
        result = read()
    except FashionlensError as error:
        assert "\n" not in str(error) and str(error)
        return
    assert isinstance(result, Manifest)
    assert result.frame["path"].map(lambda path: isinstance(path, str)).all()


@contextmanager
def _work() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fashionlens-property-") as folder:
        yield Path(folder)


@PROPERTY
@given(header=st.lists(COLUMNS, min_size=1, max_size=6), rows=st.lists(st.lists(CELLS, max_size=7), max_size=6),
       tags=st.lists(COLUMNS, max_size=2), classes=st.lists(COLUMNS, max_size=2), meta=st.lists(COLUMNS, max_size=1),
       labels=st.none() | COLUMNS, delimiter=st.none() | st.sampled_from([",", ";", "|", " "]),
       suffix=st.sampled_from([".csv", ".tsv"]), skip_missing=st.booleans())
def test_generic_reader_on_random_tables(header: list[str], rows: list[list[str]], tags: list[str],
                                         classes: list[str], meta: list[str], labels: str | None,
                                         delimiter: str | None, suffix: str, skip_missing: bool) -> None:
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t" if suffix == ".tsv" else ",")
    writer.writerow(header)
    writer.writerows(rows)
    with _work() as work:
        (work / "img.jpg").write_bytes(b"\xff\xd8\xff")  # one listed path that exists
        path = work / f"manifest{suffix}"
        path.write_text(text.getvalue().replace("\x00", ""), encoding="utf-8")
        _one_line_or_manifest(lambda: read_generic(path, tags=tags, classes=classes, labels=labels,
                                                   delimiter=delimiter, meta=meta, skip_missing=skip_missing))


JSON = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=8),
                    lambda children: st.lists(children, max_size=3) | st.dictionaries(COLUMNS, children, max_size=4),
                    max_leaves=10)


@PROPERTY
@given(lines=st.lists(st.one_of(st.dictionaries(COLUMNS, JSON, max_size=6).map(json.dumps), JSON.map(json.dumps),
                                st.text(max_size=20)), max_size=6),
       tags=st.lists(COLUMNS, max_size=2), labels=st.none() | COLUMNS)
def test_generic_reader_on_random_json_lines(lines: list[str], tags: list[str], labels: str | None) -> None:
    with _work() as work:
        path = work / "manifest.jsonl"
        path.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
        _one_line_or_manifest(lambda: read_generic(path, tags=tags, labels=labels))


@PROPERTY
@given(content=st.binary(max_size=200), suffix=st.sampled_from([".csv", ".jsonl", ".parquet", ".txt"]))
def test_readers_on_random_bytes(content: bytes, suffix: str) -> None:
    with _work() as work:
        path = work / f"train{suffix}"
        path.write_bytes(content)
        if suffix in (".csv", ".jsonl"):
            _one_line_or_manifest(lambda: read_generic(path))
        if suffix in (".csv", ".parquet"):
            _one_line_or_manifest(lambda: Manifest.load(path))
        _one_line_or_manifest(lambda: read_jd_style(path))
        _one_line_or_manifest(lambda: read_imaterialist(path))


MIXED = st.one_of(st.text(max_size=8), st.floats(allow_nan=True), st.integers(-5, 5), st.booleans(), st.none())


@PROPERTY
@given(columns=st.lists(COLUMNS, min_size=1, max_size=6, unique=True),
       values=st.lists(st.lists(MIXED, min_size=6, max_size=6), min_size=0, max_size=5),
       suffix=st.sampled_from([".csv", ".parquet"]))
def test_manifest_load_on_random_tables(columns: list[str], values: list[list[Any]], suffix: str) -> None:
    frame = pd.DataFrame({column: pd.Series([row[i] for row in values], dtype=object)
                          for i, column in enumerate(columns)})
    with _work() as work:
        path = work / f"manifest{suffix}"
        if suffix == ".csv":
            frame.to_csv(path, index=False)
        else:
            frame.astype(str).to_parquet(path, index=False)  # mixed object columns cannot be parquet as they are
        _one_line_or_manifest(lambda: Manifest.load(path))


@PROPERTY
@given(document=st.one_of(JSON, st.fixed_dictionaries({
    "images": st.lists(st.one_of(JSON, st.fixed_dictionaries({"imageId": JSON, "url": JSON})), max_size=4),
    "annotations": st.lists(st.one_of(JSON, st.fixed_dictionaries({"imageId": JSON, "labelId": JSON})), max_size=4),
})))
def test_imaterialist_reader_on_random_json(document: Any) -> None:
    with _work() as work:
        path = work / "train.json"
        path.write_text(json.dumps(document), encoding="utf-8", errors="surrogatepass")
        _one_line_or_manifest(lambda: read_imaterialist(path))


@PROPERTY
@given(lines=st.lists(st.lists(CELLS, max_size=16).map(",".join), max_size=5))
def test_jd_style_reader_on_random_tables(lines: list[str]) -> None:
    with _work() as work:
        path = work / "train.txt"
        path.write_text("\n".join(lines).replace("\x00", ""), encoding="utf-8", errors="surrogatepass")
        _one_line_or_manifest(lambda: read_jd_style(path))


@PROPERTY
@given(ids=st.lists(st.text(min_size=1, max_size=400).filter(str.strip), min_size=2, max_size=2, unique=True))
def test_safe_id_names_one_file_inside_the_folder(ids: list[str]) -> None:
    names = [safe_id(image_id) for image_id in ids]
    with _work() as root:
        for name in names:
            assert 0 < len(name) <= MAX_ID_LENGTH and not name.startswith(".")
            assert (root / f"{name}.jpg").resolve().parent == root.resolve()
    assert names[0] != names[1] or ids[0].strip() == ids[1].strip()  # distinct ids, distinct files
