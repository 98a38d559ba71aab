"""Tests for the catalogue index: exact search vs numpy, filters, add/remove, persistence -- over both backends.

Tests taking the ``build`` fixture run once per backend: ``faiss`` and ``milvus`` (Milvus Lite, one database file
shared by the module, a fresh collection per build). Milvus-only behaviour is in ``test_milvus_backend.py``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
import pytest

from fashionlens.errors import CatalogueIndexError
from fashionlens.index import INDEX_KINDS, CatalogueIndex
from fashionlens.index import catalogue as catalogue_module
from fashionlens.index import store as store_module
from fashionlens.index.store import IDS_FILE, INDEX_FILE, ITEMS_FILE, MANIFEST_FILE, VECTORS_FILE

N, DIM = 600, 16
KINDS = list(INDEX_KINDS)
# Approximate kinds that become exact when told to scan everything (ivfpq scores compressed vectors).
SCANNABLE = [name for name in KINDS if name not in ("flat", "ivfpq")]
# Knob values that make each approximate kind scan everything, so its results must equal brute force.
EXHAUSTIVE = {"ivf": {"nprobe": 10_000}, "ivfpq": {"nprobe": 10_000}, "hnsw": {"ef": 10_000}, "flat": {}}


@pytest.fixture(scope="module")
def milvus_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One Milvus Lite database for the module (each build makes its own collection in it)."""
    pytest.importorskip("pymilvus")
    return str(tmp_path_factory.mktemp("milvus") / "catalogue.db")


@pytest.fixture(params=["faiss", "milvus"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def _builder(backend: str, request: pytest.FixtureRequest):
    """``CatalogueIndex.build`` on ``backend`` (Milvus Lite in the module's database; its missing IVF_PQ skips)."""
    storage = {"uri": request.getfixturevalue("milvus_uri")} if backend == "milvus" else None

    def build_index(vectors: np.ndarray, metadata: pd.DataFrame, **kwargs) -> CatalogueIndex:
        if backend == "milvus" and kwargs.get("kind") == "ivfpq":
            pytest.skip("Milvus Lite has no IVF_PQ index (test_milvus_backend.py checks the error)")
        return CatalogueIndex.build(vectors, metadata, backend=backend, storage=storage, **kwargs)

    return build_index


@pytest.fixture
def build(backend: str, request: pytest.FixtureRequest):
    """``CatalogueIndex.build`` for the test's backend."""
    return _builder(backend, request)


@pytest.fixture(autouse=True, scope="module")
def one_faiss_thread() -> Iterator[None]:
    """Tiny searches gain nothing from OpenMP, and its barriers crawl on a shared 2-core machine."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(previous)


def make_items(n: int, start: int = 0) -> pd.DataFrame:
    rows = range(start, start + n)
    return pd.DataFrame({
        "item_id": [f"item{i:05d}" for i in rows],
        "category": [("dress", "shirt", "shoe", "bag")[i % 4] for i in rows],
        "colour": [("red", "blue", None)[i % 3] for i in rows],
        "year": [2010 + i % 5 for i in rows],
    })


def make_vectors(n: int, dim: int = DIM, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)


@pytest.fixture(scope="module")
def vectors() -> np.ndarray:
    return make_vectors(N)


@pytest.fixture(scope="module")
def items() -> pd.DataFrame:
    return make_items(N)


@pytest.fixture(scope="module")
def queries() -> np.ndarray:
    return make_vectors(5, seed=1)


# Filtered searches take one of three paths: faiss scoring a small subset directly, faiss searching its index with
# an ID selector (forced here by lowering the cut-off), or Milvus evaluating the filter expression.
PATHS = ["faiss-small-subset", "faiss-selector", "milvus"]


def path_build(path: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    if path == "faiss-selector":  # small filtered subsets are scored directly unless told not to
        monkeypatch.setattr(catalogue_module, "EXACT_SUBSET_MAX", 0)
    return _builder("milvus" if path == "milvus" else "faiss", request)


def brute_force(
    vectors: np.ndarray, ids: list[str], queries: np.ndarray, k: int, metric: str
) -> tuple[list[list[str]], np.ndarray]:
    """Exact top-k item ids and scores with numpy: cosine for ``ip``, squared distance for ``l2``."""
    if metric == "ip":
        unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
        scores = (queries / np.linalg.norm(queries, axis=1, keepdims=True)) @ unit.T
        order = np.argsort(-scores, axis=1)[:, :k]
    else:
        scores = ((queries[:, None, :] - vectors[None, :, :]) ** 2).sum(-1)
        order = np.argsort(scores, axis=1)[:, :k]
    return [[ids[j] for j in row] for row in order], np.take_along_axis(scores, order, axis=1)


def hit_ids(hits: list[list]) -> list[list[str]]:
    return [[hit.item_id for hit in query_hits] for query_hits in hits]


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_flat_search_equals_brute_force(build, vectors, items, queries, metric):
    catalogue = build(vectors, items, model_id="m", metric=metric)
    hits = catalogue.search(queries, k=10)
    expected_ids, expected_scores = brute_force(vectors, list(items.item_id), queries, 10, metric)
    assert hit_ids(hits) == expected_ids
    np.testing.assert_allclose([[hit.score for hit in row] for row in hits], expected_scores, rtol=1e-4, atol=1e-4)
    assert [hit.rank for hit in hits[0]] == list(range(1, 11))
    assert hits[0][0].metadata.keys() == {"category", "colour", "year"}


@pytest.mark.parametrize("kind", SCANNABLE)
def test_approximate_kinds_scanning_everything_equal_brute_force(build, vectors, items, queries, kind):
    catalogue = build(vectors, items, model_id="m", kind=kind)
    expected_ids, _ = brute_force(vectors, list(items.item_id), queries, 10, "ip")
    assert hit_ids(catalogue.search(queries, k=10, **EXHAUSTIVE[kind])) == expected_ids


def test_index_parameters_reach_the_index(build, vectors, items, queries):
    # One IVF cell holds everything, so probing one cell is exact -- unless nlist were ignored.
    catalogue = build(vectors, items, model_id="m", kind="ivf", nlist=1)
    expected_ids, _ = brute_force(vectors, list(items.item_id), queries, 10, "ip")
    assert hit_ids(catalogue.search(queries, k=10, nprobe=1)) == expected_ids


def test_ivfpq_reranks_its_shortlist_with_the_stored_vectors(build, backend, vectors, items, queries):
    expected_ids, expected_scores = brute_force(vectors, list(items.item_id), queries, 10, "ip")
    everything = build(vectors, items, model_id="m", kind="ivfpq", k_factor=N)  # shortlist = all
    hits = everything.search(queries, k=10, nprobe=10_000)
    assert hit_ids(hits) == expected_ids
    np.testing.assert_allclose([[hit.score for hit in row] for row in hits], expected_scores, rtol=1e-4, atol=1e-4)
    if backend == "faiss":  # Milvus Lite scores a collection this small exactly, codes or not
        codes_only = build(vectors, items, model_id="m", kind="ivfpq", k_factor=1)
        assert hit_ids(codes_only.search(queries, k=10, nprobe=10_000)) != expected_ids  # why re-ranking exists


def test_ip_scores_are_cosine_for_unnormalised_vectors(build, vectors, items, queries):
    catalogue = build(vectors * 7.5, items, model_id="m")
    top = catalogue.search(queries[:1] * 0.1, k=1)[0][0]
    row = list(items.item_id).index(top.item_id)
    cosine = vectors[row] @ queries[0] / np.linalg.norm(vectors[row]) / np.linalg.norm(queries[0])
    assert top.score == pytest.approx(cosine, abs=1e-5)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", KINDS)
def test_filtered_search_equals_brute_force_on_the_subset(vectors, items, queries, kind, path, request, monkeypatch):
    build = path_build(path, request, monkeypatch)
    catalogue = build(vectors, items, model_id="m", kind=kind)
    filters = {"category": ["dress", "bag"], "colour": "red"}
    subset = (items.category.isin(["dress", "bag"]) & (items.colour == "red")).to_numpy()
    knobs = EXHAUSTIVE[kind] if path != "faiss-small-subset" else {}
    hits = catalogue.search(queries, k=10, filters=filters, **knobs)
    for row in hits:
        assert len(row) == 10
        assert all(hit.metadata["category"] in ("dress", "bag") and hit.metadata["colour"] == "red" for hit in row)
    if kind != "ivfpq" or path != "faiss-selector":
        expected, _ = brute_force(vectors[subset], list(items.item_id[subset]), queries, 10, "ip")
        assert hit_ids(hits) == expected


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", KINDS)
def test_selective_filter_returns_exactly_the_matches(kind, path, request, monkeypatch):
    build = path_build(path, request, monkeypatch)
    n = 10_000
    vectors = make_vectors(n, dim=8, seed=2)
    items = make_items(n).assign(collection="main")
    chosen = ["item00017", "item04242", "item09998"]
    items.loc[items.item_id.isin(chosen), "collection"] = "capsule"
    catalogue = build(vectors, items, model_id="m", kind=kind)
    knobs = EXHAUSTIVE[kind] if path == "faiss-selector" else {}
    hits = catalogue.search(make_vectors(2, dim=8, seed=3), k=10, filters={"collection": "capsule"}, **knobs)
    for row in hits:
        assert sorted(hit.item_id for hit in row) == chosen
        assert [hit.score for hit in row] == sorted((hit.score for hit in row), reverse=True)


def test_filter_runs_inside_faiss_search_with_a_selector(vectors, items, queries, monkeypatch):
    catalogue = CatalogueIndex.build(vectors, items, model_id="m")
    calls = []
    original = faiss.IndexIDMap2.search

    def spy(index, x, k, *, params=None, **kwargs):
        selector = params.sel if params is not None else None  # only valid while the search runs
        calls.append((k, selector and {i for i in range(N) if selector.is_member(i)}))
        return original(index, x, k, params=params, **kwargs)

    monkeypatch.setattr(faiss.IndexIDMap2, "search", spy)
    catalogue.search(queries, k=10, filters={"year": "2012"})
    assert calls == []  # 120 matching items: scored directly, the index is not searched
    monkeypatch.setattr(catalogue_module, "EXACT_SUBSET_MAX", 100)
    catalogue.search(queries, k=10, filters={"year": "2012"})
    # One FAISS search for exactly k hits, restricted by a selector accepting exactly the matching ids.
    assert calls == [(10, {int(i) for i in np.flatnonzero(items.year == 2012)})]


def test_filter_value_matching_nothing_gives_empty_results(build, vectors, items, queries):
    catalogue = build(vectors, items, model_id="m")
    assert catalogue.search(queries, k=5, filters={"category": "hat"}) == [[] for _ in queries]
    assert catalogue.search(queries, k=5, filters={"category": []}) == [[] for _ in queries]


def test_unknown_filter_field_is_named_with_known_fields(build, vectors, items, queries):
    catalogue = build(vectors, items, model_id="m")
    with pytest.raises(CatalogueIndexError, match=r"'categroy'.*known fields: item_id, category, colour, year"):
        catalogue.search(queries, filters={"categroy": "dress"})


@pytest.mark.parametrize("kind", KINDS)
def test_search_by_id_excludes_the_item_itself(build, vectors, items, kind):
    catalogue = build(vectors, items, model_id="m", kind=kind)
    hits = catalogue.search_by_id("item00042", k=5, **EXHAUSTIVE[kind])
    assert len(hits) == 5 and "item00042" not in [hit.item_id for hit in hits]
    if kind != "ivfpq":
        others = np.delete(np.arange(N), 42)
        expected, _ = brute_force(vectors[others], list(items.item_id[others]), vectors[42:43], 5, "ip")
        assert [hit.item_id for hit in hits] == expected[0]


def test_exclude_removes_items_from_results(build, vectors, items, queries):
    catalogue = build(vectors, items, model_id="m")
    first = hit_ids(catalogue.search(queries[:1], k=3))[0]
    again = hit_ids(catalogue.search(queries[:1], k=3, exclude=[first[0], "no-such-item"]))[0]
    assert again == [*first[1:], again[2]] and first[0] not in again


def test_k_larger_than_catalogue_returns_everything(build, items):
    small = build(make_vectors(7), items.head(7), model_id="m")
    assert len(small.search(make_vectors(1, seed=4), k=50)[0]) == 7
    assert len(small.search(make_vectors(1, seed=4), k=50, filters={"category": "dress"})[0]) == 2
    assert len(small.search_by_id("item00000", k=50)) == 6


@pytest.mark.parametrize("k", [0, -3, 2.5])
def test_invalid_k_is_rejected(build, vectors, items, queries, k):
    catalogue = build(vectors, items, model_id="m")
    with pytest.raises(CatalogueIndexError, match="k must be a positive integer"):
        catalogue.search(queries, k=k)


def test_query_dimension_mismatch_is_rejected(build, vectors, items):
    catalogue = build(vectors, items, model_id="m")
    with pytest.raises(CatalogueIndexError, match=r"queries must have shape \(n, 16\).*\(2, 8\)"):
        catalogue.search(make_vectors(2, dim=8))


def test_unknown_item_id_is_named(build, vectors, items):
    catalogue = build(vectors, items, model_id="m")
    with pytest.raises(CatalogueIndexError, match="'nope' is not in the catalogue index"):
        catalogue.search_by_id("nope")
    with pytest.raises(CatalogueIndexError, match="'nope' is not in the catalogue index"):
        catalogue.remove(["item00001", "nope"])
    assert len(catalogue) == N  # nothing removed


@pytest.mark.parametrize("kind", KINDS)
def test_add_then_remove(build, vectors, items, kind):
    catalogue = build(vectors, items, model_id="m", kind=kind)
    extra = make_vectors(3, seed=5)
    catalogue.add(extra, make_items(3, start=N).assign(season="summer"))
    assert len(catalogue) == N + 3
    top = catalogue.search(extra, k=1, **EXHAUSTIVE[kind])
    assert [row[0].item_id for row in top] == [f"item{N + i:05d}" for i in range(3)]
    assert top[0][0].metadata["season"] == "summer"

    with pytest.raises(CatalogueIndexError, match="'item00005' is already in the catalogue index"):
        catalogue.add(extra[:1], make_items(1, start=5))

    gone = ["item00010", f"item{N + 1:05d}"]
    catalogue.remove(gone)
    assert len(catalogue) == N + 1
    found = hit_ids(catalogue.search(np.stack([vectors[10], extra[1]]), k=20, **EXHAUSTIVE[kind]))
    assert not set(gone) & {item for row in found for item in row}
    with pytest.raises(CatalogueIndexError, match="'item00010' is not in the catalogue index"):
        catalogue.search_by_id("item00010")


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(build, vectors, items, queries, kind, tmp_path):
    catalogue = build(vectors, items, model_id="resnet50/in1k@abc123", kind=kind)
    catalogue.add(make_vectors(2, seed=6), make_items(2, start=N))
    catalogue.remove(["item00003"])
    before = catalogue.search(queries, k=10, filters={"colour": "blue"})
    catalogue.save(tmp_path / "index")

    loaded = CatalogueIndex.load(tmp_path / "index", expected_model_id="resnet50/in1k@abc123", expected_dim=DIM)
    assert loaded.info() == catalogue.info()
    assert loaded.search(queries, k=10, filters={"colour": "blue"}) == before
    assert loaded.search_by_id("item00004", k=3) == catalogue.search_by_id("item00004", k=3)
    loaded.add(make_vectors(1, seed=7), make_items(1, start=N + 2))  # a loaded index stays mutable
    loaded.remove(["item00005"])
    assert len(loaded) == len(catalogue)


def test_load_detects_model_and_dimension_mismatch(build, vectors, items, tmp_path):
    build(vectors, items, model_id="vit-b16@v1").save(tmp_path / "index")
    with pytest.raises(CatalogueIndexError, match="built with embedding model 'vit-b16@v1', not 'vit-b16@v2'"):
        CatalogueIndex.load(tmp_path / "index", expected_model_id="vit-b16@v2")
    with pytest.raises(CatalogueIndexError, match="holds 16-dimensional vectors, but 512 were expected"):
        CatalogueIndex.load(tmp_path / "index", expected_dim=512)


def test_recorded_models_travel_with_the_folder_and_name_the_fix(build, vectors, items, tmp_path):
    models = tmp_path / "demo" / "models"
    catalogue = build(vectors, items, model_id="vit-b16@v1")
    catalogue.record_model("embedder", models / "embedder")
    catalogue.record_model("tagger", models / "tagger")
    catalogue.save(models / "index")
    written = json.loads((models / "index" / MANIFEST_FILE).read_text())["models"]
    assert written == {"embedder": "../embedder", "tagger": "../tagger"}  # relative: the folder may move
    moved = tmp_path / "elsewhere"
    (tmp_path / "demo").rename(moved)
    loaded = CatalogueIndex.load(moved / "models" / "index")
    assert loaded.models == {"embedder": moved / "models" / "embedder", "tagger": moved / "models" / "tagger"}
    assert loaded.info()["models"]["embedder"] == str(moved / "models" / "embedder")
    with pytest.raises(CatalogueIndexError, match=r"not 'vit-b16@v2'; search it with the embedder it records, "
                                                  r".*elsewhere/models/embedder \(omit --model"):
        CatalogueIndex.load(moved / "models" / "index", expected_model_id="vit-b16@v2")
    loaded.record_model("tagger", None)
    loaded.save(tmp_path / "far" / "away" / "copy")  # far from its models: recorded absolute, so it may move alone
    written = json.loads((tmp_path / "far" / "away" / "copy" / MANIFEST_FILE).read_text())["models"]
    assert written == {"embedder": str(moved / "models" / "embedder")}
    (tmp_path / "far" / "away" / "copy").rename(tmp_path / "copy")
    assert CatalogueIndex.load(tmp_path / "copy").models == {"embedder": moved / "models" / "embedder"}


def test_an_index_without_recorded_models_loads_and_names_the_model_option(vectors, items, tmp_path):
    directory = CatalogueIndex.build(vectors, items, model_id="m1").save(tmp_path / "index")
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    del manifest["models"]  # as written before the record existed
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert CatalogueIndex.load(directory).models == {}
    with pytest.raises(CatalogueIndexError, match=r"pass the embedder directory that built it \(--model DIR\)"):
        CatalogueIndex.load(directory, expected_model_id="m2")
    manifest["models"] = {"embedder": 3}
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(CatalogueIndexError, match="'models' must map roles to paths"):
        CatalogueIndex.load(directory)


def test_fields_and_their_values(build, vectors, items):
    catalogue = build(vectors, items, model_id="m")
    assert catalogue.fields == ["category", "colour", "year"]
    assert catalogue.values("colour") == ["blue", "red"]  # missing values are left out
    with pytest.raises(CatalogueIndexError, match="no field 'size'"):
        catalogue.values("size")


def test_failed_save_leaves_previous_index_intact(build, vectors, items, queries, tmp_path, monkeypatch):
    build(vectors, items, model_id="old").save(tmp_path / "index")
    newer = build(vectors[:10], items.head(10), model_id="new")

    def disk_full(*args):
        raise OSError("No space left on device")

    monkeypatch.setattr(store_module, "write_json", disk_full)
    with pytest.raises(CatalogueIndexError, match=r"could not save catalogue index.*No space left"):
        newer.save(tmp_path / "index")
    monkeypatch.undo()
    kept = CatalogueIndex.load(tmp_path / "index")
    assert (kept.model_id, len(kept)) == ("old", N)
    assert [path.name for path in tmp_path.iterdir()] == ["index"]  # no half-written temporary left behind
    assert len(newer.search(queries, k=3)[0]) == 3  # the index whose save failed still works


@pytest.mark.parametrize("name", [MANIFEST_FILE, INDEX_FILE, IDS_FILE, ITEMS_FILE, VECTORS_FILE])
@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_missing_or_corrupt_file_is_named(vectors, items, tmp_path, name, damage):
    directory = CatalogueIndex.build(vectors, items, model_id="m").save(tmp_path / "index")
    if damage == "missing":
        (directory / name).unlink()
    else:
        (directory / name).write_bytes(b"\x00garbage")
    with pytest.raises(CatalogueIndexError, match=f"{damage} catalogue index file.*{name}"):
        CatalogueIndex.load(directory)


def test_inconsistent_files_are_named(vectors, items, tmp_path):
    directory = CatalogueIndex.build(vectors, items, model_id="m").save(tmp_path / "index")
    np.save(directory / VECTORS_FILE, vectors[:5])
    with pytest.raises(CatalogueIndexError, match=f"{VECTORS_FILE}.*says 600 ip vectors of dimension 16"):
        CatalogueIndex.load(directory)


def test_load_of_missing_directory(tmp_path: Path):
    with pytest.raises(CatalogueIndexError, match="directory not found"):
        CatalogueIndex.load(tmp_path / "nothing")


def test_info_reports_fields_with_distinct_counts(build, vectors, items):
    info = build(vectors, items, model_id="m", kind="ivf", nlist=8).info()
    assert info["fields"] == {"category": 4, "colour": 2, "year": 5}
    assert {key: info[key] for key in ("count", "dim", "kind", "metric", "model_id")} == {
        "count": N, "dim": DIM, "kind": "ivf", "metric": "ip", "model_id": "m",
    }  # fmt: skip
    assert info["params"]["nlist"] == 8


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "annoy"}, "unknown index kind 'annoy'; known: flat, ivf, ivfpq, hnsw"),
        ({"metric": "cosine"}, "unknown metric 'cosine'; known: ip, l2"),
        ({"kind": "ivf", "nlists": 8}, "unknown parameter 'nlists' for index kind 'ivf'; known: nlist, nprobe"),
        ({"kind": "hnsw", "M": 0}, "M must be a positive integer"),
        ({"kind": "ivfpq", "m": 5}, "m=5 must divide the dimension 16"),
        ({"kind": "ivf", "nlist": 5000}, "needs at least 5000 vectors to train, got 600"),
        ({"model_id": ""}, "model_id must be a non-empty string"),
    ],
)
def test_invalid_build_arguments(build, vectors, items, kwargs, message):
    with pytest.raises(CatalogueIndexError, match=message):
        build(vectors, items, **{"model_id": "m", **kwargs})


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        (make_items(N).drop(columns="item_id"), "no 'item_id' column"),
        (make_items(N - 1), "has 599 rows but there are 600 vectors"),
        (make_items(N).assign(item_id=lambda f: f.item_id.where(f.index != 7, "item00001")), "'item00001' occurs"),
        (make_items(N).assign(item_id=lambda f: f.item_id.where(f.index != 9, None)), "row 9 has an empty"),
    ],
)
def test_invalid_metadata(vectors, metadata, message):
    with pytest.raises(CatalogueIndexError, match=message):
        CatalogueIndex.build(vectors, metadata, model_id="m")


def test_invalid_vectors(items):
    bad = make_vectors(N)
    bad[3] = 0.0
    with pytest.raises(CatalogueIndexError, match="row 3 is zero or non-finite"):
        CatalogueIndex.build(bad, items, model_id="m")
    bad[3] = np.nan
    with pytest.raises(CatalogueIndexError, match="row 3 is non-finite"):
        CatalogueIndex.build(bad, items, model_id="m", metric="l2")


@pytest.mark.parametrize(("kind", "option"), [("flat", "nprobe"), ("flat", "ef"), ("ivf", "ef"), ("hnsw", "nprobe")])
def test_search_knob_of_another_kind_is_rejected(build, vectors, items, queries, kind, option):
    catalogue = build(vectors, items, model_id="m", kind=kind)
    with pytest.raises(CatalogueIndexError, match=f"'{option}' does not apply to a '{kind}' index"):
        catalogue.search(queries, **{option: 4})


def test_item_returns_one_items_metadata_and_refuses_unknown_ids(build, vectors, items):
    catalogue = build(vectors, items, model_id="m")
    # metadata is stored as text, a missing value as None
    expected = {key: None if value is None else str(value) for key, value in items.iloc[42].items() if key != "item_id"}
    assert catalogue.item("item00042") == expected
    with pytest.raises(CatalogueIndexError, match="'no-such-item' is not in the catalogue index"):
        catalogue.item("no-such-item")
