"""Milvus-only behaviour of the catalogue index: filter expressions that no value can break out of, the embedded
database saved inside the index directory, and bad input (unreachable server, another embedder's collection,
reused collection names, failed builds) giving one-line errors and leaving nothing behind.

The operations both backends share are tested, over both, in ``test_catalogue.py``.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fashionlens.errors import CatalogueIndexError
from fashionlens.index import CatalogueIndex, MilvusCatalogueIndex
from fashionlens.index import _milvus_client as client_module
from fashionlens.index import catalogue as catalogue_module
from fashionlens.index import milvus_backend as milvus_module
from fashionlens.index._milvus_expr import expression, literal
from fashionlens.index.store import ITEMS_FILE, MANIFEST_FILE, MILVUS_LITE_DB

pymilvus = pytest.importorskip("pymilvus")

DIM = 8
# Values that would end, extend or rewrite an expression if pasted into it unescaped.
HOSTILE = ['" or 1==1', "' or 1==1 or '", "||", "&&", "\\", '\\"', 'x" || meta["category"] == "dress',
           "a\nb", "a\r\nb", "é😀", "\t", "a\x00b", '"', "'", "not", "]", "$meta", 'meta["category"]']


def make_items(values: list[str]) -> pd.DataFrame:
    return pd.DataFrame({
        "item_id": [f"id-{value}" for value in values],
        "category": ["dress" if i % 2 else "shirt" for i in range(len(values))],
        "label": values,
    })


def ids(hits: list[list]) -> list[list[str]]:
    return [[hit.item_id for hit in row] for row in hits]


def make_vectors(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)


@pytest.fixture(autouse=True, scope="module")
def filters_go_to_milvus() -> Iterator[None]:
    """Small filtered subsets are scored from their vectors without a Milvus search (``EXACT_SUBSET_MAX``); these
    tests are about the expressions Milvus evaluates, so every filter goes to Milvus here."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(catalogue_module, "EXACT_SUBSET_MAX", 0)
        yield


@pytest.fixture(scope="module")
def uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("milvus") / "catalogue.db")


@pytest.fixture(scope="module")
def hostile(uri: str) -> CatalogueIndex:
    """An index whose labels and item ids are the hostile values plus some plain ones; ``late`` (the same values)
    is a column added after the build, so it is filtered through the JSON ``meta`` field, ``label`` through its
    VARCHAR field."""
    values = [*HOSTILE, "plain", "dress"]
    catalogue = CatalogueIndex.build(make_vectors(len(values)), make_items(values), model_id="m",
                                     backend="milvus", storage={"uri": uri})
    catalogue.add(make_vectors(1, seed=7), make_items(["late"]).assign(late="x"))
    catalogue.remove(["id-late"])
    catalogue.add(make_vectors(len(values), seed=8), make_items([f"{v}@late" for v in values]).assign(late=values))
    return catalogue


def test_literal_escapes_backslash_quote_and_line_breaks():
    assert literal('a"b\\c\nd\re') == '"a\\"b\\\\c\\nd\\re"'
    assert literal("' or 1==1 ||") == "\"' or 1==1 ||\""  # only a double quote can end the literal


def test_expression_ands_fields_ors_values_and_excludes_ids():
    assert expression({"gender": ["Men"], "colour": ["Red", "Blue", "Red"]}, ["42"], {"gender": "f0"}) == (
        'f0 in ["Men"] and (meta["colour"] == "Red" or meta["colour"] == "Blue") and item_id not in ["42"]'
    )
    assert expression({'we"ird': ["x"]}, []) == '(meta["we\\"ird"] == "x")'  # a column name is a literal too
    assert expression({"item_id": ["a", 'b"']}, []) == 'item_id in ["a", "b\\""]'
    assert expression({}, []) == ""


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_filter_value_matches_exactly_its_item(hostile, value):
    hits = hostile.search(make_vectors(1, seed=1), k=50, filters={"label": value})[0]
    assert [hit.item_id for hit in hits] == [f"id-{value}"]
    hits = hostile.search(make_vectors(1, seed=1), k=50, filters={"label": [value, "plain"]})[0]
    assert sorted(hit.item_id for hit in hits) == sorted([f"id-{value}", "id-plain"])
    hits = hostile.search(make_vectors(1, seed=1), k=50, filters={"late": [value, "plain"]})[0]  # JSON path
    assert sorted(hit.item_id for hit in hits) == sorted([f"id-{value}@late", "id-plain@late"])


@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_item_ids_in_exclude_and_search_by_id(hostile, value):
    everything = len(hostile)
    hits = hostile.search(make_vectors(1, seed=1), k=everything, exclude=[f"id-{value}", "nope\" or 1==1"])[0]
    assert len(hits) == everything - 1 and f"id-{value}" not in [hit.item_id for hit in hits]
    similar = hostile.search_by_id(f"id-{value}", k=everything)
    assert len(similar) == everything - 1 and f"id-{value}" not in [hit.item_id for hit in similar]
    assert [hit.item_id for hit in hostile.search(make_vectors(1), k=5, filters={"item_id": f"id-{value}"})[0]] == [
        f"id-{value}"
    ]


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=20))
@settings(max_examples=60, deadline=None)
def test_any_filter_value_is_one_literal(hostile, value):
    # Whatever the text, the filter keeps exactly the items labelled with it (usually none): no error, no more.
    known = value in [*HOSTILE, "plain", "dress"]
    hits = hostile.search(make_vectors(1, seed=2), k=50, filters={"label": value, "category": ["dress", "shirt"]})[0]
    assert [hit.item_id for hit in hits] == ([f"id-{value}"] if known else [])
    hits = hostile.search(make_vectors(1, seed=2), k=50, filters={"late": value})[0]
    assert [hit.item_id for hit in hits] == ([f"id-{value}@late"] if known else [])


def test_filter_runs_inside_the_milvus_search(uri, monkeypatch):
    catalogue = CatalogueIndex.build(make_vectors(40), make_items([str(i) for i in range(40)]), model_id="m",
                                     backend="milvus", storage={"uri": uri})
    calls = []
    original = pymilvus.MilvusClient.search

    def spy(client, collection, *args, **kwargs):
        calls.append((kwargs["limit"], kwargs["filter"], kwargs["consistency_level"]))
        return original(client, collection, *args, **kwargs)

    monkeypatch.setattr(pymilvus.MilvusClient, "search", spy)
    hits = catalogue.search(make_vectors(2, seed=3), k=5, filters={"category": "dress"}, exclude=["id-1"])
    # One search per query batch for exactly k hits, the filter and the exclusion inside it, Strong consistency.
    assert calls == [(5, 'f0 in ["dress"] and item_id not in ["id-1"]', "Strong")]
    assert all(len(row) == 5 and {hit.metadata["category"] for hit in row} == {"dress"} for row in hits)
    monkeypatch.setattr(catalogue_module, "EXACT_SUBSET_MAX", 2048)
    exact = catalogue.search(make_vectors(2, seed=3), k=5, filters={"category": "dress"}, exclude=["id-1"])
    assert [[hit.item_id for hit in row] for row in exact] == [[hit.item_id for hit in row] for row in hits]
    assert len(calls) == 1  # 19 matching items: scored from their vectors, Milvus is not searched


def test_embedded_database_lives_in_the_index_directory(tmp_path):
    vectors, items = make_vectors(30), make_items([str(i) for i in range(30)])
    catalogue = CatalogueIndex.build(vectors, items, model_id="m", backend="milvus")
    query = make_vectors(2, seed=4)
    before = ids(catalogue.search(query, k=5))
    directory = catalogue.save(tmp_path / "index")
    assert sorted(path.name for path in directory.iterdir()) == [MANIFEST_FILE, ITEMS_FILE, MILVUS_LITE_DB]
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    assert manifest["backend"] == "milvus" and manifest["storage"]["uri"] == MILVUS_LITE_DB
    assert isinstance(catalogue, MilvusCatalogueIndex) and ids(catalogue.search(query, k=5)) == before

    catalogue.add(make_vectors(1, seed=5), make_items(["new"]))  # the index now uses the saved copy
    catalogue.save(directory)  # saving over itself
    moved = shutil.move(directory, tmp_path / "moved")  # the directory is self-contained
    loaded = CatalogueIndex.load(moved, expected_model_id="m", expected_dim=DIM)
    assert len(loaded) == 31 and ids(loaded.search(query, k=5)) == before
    assert loaded.info()["backend"] == "milvus"


def test_unreachable_server_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(client_module, "CONNECT_TIMEOUT_S", 1.0)
    with pytest.raises(CatalogueIndexError, match=r"^milvus connect at http://127\.0\.0\.1:9 failed: [^\n]*$"):
        CatalogueIndex.build(make_vectors(3), make_items(list("abc")), model_id="m", backend="milvus",
                             storage={"uri": "http://user:secret@127.0.0.1:9"})
    directory = CatalogueIndex.build(make_vectors(3), make_items(list("abc")), model_id="m").save(tmp_path / "i")
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    manifest.update(backend="milvus", storage={"uri": "http://127.0.0.1:9", "collection": "c"})
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(CatalogueIndexError, match=r"^milvus connect at http://127\.0\.0\.1:9 failed"):
        CatalogueIndex.load(directory)


def test_collection_of_another_embedder_is_refused(uri, tmp_path):
    vectors, items = make_vectors(10), make_items([str(i) for i in range(10)])
    theirs = CatalogueIndex.build(vectors, items, model_id="vit@v1", backend="milvus", storage={"uri": uri})
    mine = CatalogueIndex.build(vectors, items, model_id="vit@v2", backend="milvus", storage={"uri": uri})
    directory = mine.save(tmp_path / "index")
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    manifest["storage"]["collection"] = theirs._storage(directory)["collection"]  # pointed at the other one
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(CatalogueIndexError, match=r"built with embedding model 'vit@v1'.*says 'vit@v2'"):
        CatalogueIndex.load(directory)
    manifest["storage"]["collection"] = "nowhere"
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(CatalogueIndexError, match=r"collection 'nowhere' .* not found"):
        CatalogueIndex.load(directory)


def test_existing_collection_is_never_overwritten(uri):
    vectors, items = make_vectors(10), make_items([str(i) for i in range(10)])
    CatalogueIndex.build(vectors, items, model_id="m", backend="milvus", storage={"uri": uri, "collection": "taken"})
    with pytest.raises(CatalogueIndexError, match="collection 'taken' already exists"):
        CatalogueIndex.build(vectors[:2], items.head(2), model_id="other", backend="milvus",
                             storage={"uri": uri, "collection": "taken"})
    client = pymilvus.MilvusClient(uri)
    assert client.query("taken", filter="", output_fields=["count(*)"])[0]["count(*)"] == 10


def test_failed_build_drops_its_half_collection(uri, monkeypatch):
    monkeypatch.setattr(milvus_module, "BATCH_BYTES", 4 * DIM * 7)  # 7 rows per insert
    inserts = []
    original = pymilvus.MilvusClient.insert

    def fail_third(client, collection, rows, *args, **kwargs):
        inserts.append(len(rows))
        if len(inserts) == 3:
            raise pymilvus.exceptions.MilvusException(message="disk quota exceeded")
        return original(client, collection, rows, *args, **kwargs)

    monkeypatch.setattr(pymilvus.MilvusClient, "insert", fail_third)
    with pytest.raises(CatalogueIndexError, match=r"^milvus insert at .* failed: disk quota exceeded$"):
        CatalogueIndex.build(make_vectors(30), make_items([str(i) for i in range(30)]), model_id="m",
                             backend="milvus", storage={"uri": uri, "collection": "half"})
    assert inserts == [7, 7, 7]  # streamed in batches; the third failed
    assert not pymilvus.MilvusClient(uri).has_collection("half")


def test_failed_add_takes_back_its_batches(uri, monkeypatch):
    catalogue = CatalogueIndex.build(make_vectors(10), make_items([str(i) for i in range(10)]), model_id="m",
                                     backend="milvus", storage={"uri": uri})
    monkeypatch.setattr(milvus_module, "BATCH_BYTES", 4 * DIM * 2)
    calls = []
    original = pymilvus.MilvusClient.insert

    def fail_second(client, collection, rows, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise pymilvus.exceptions.MilvusException(message="server went away")
        return original(client, collection, rows, *args, **kwargs)

    monkeypatch.setattr(pymilvus.MilvusClient, "insert", fail_second)
    with pytest.raises(CatalogueIndexError, match="server went away"):
        catalogue.add(make_vectors(4, seed=9), make_items(["x1", "x2", "x3", "x4"]))
    monkeypatch.undo()
    assert len(catalogue) == 10
    hits = catalogue.search(make_vectors(4, seed=9), k=10)
    assert not {hit.item_id for row in hits for hit in row} & {"id-x1", "id-x2"}  # the first batch was taken back


def test_collection_changed_behind_the_directory_is_detected(uri, tmp_path):
    catalogue = CatalogueIndex.build(make_vectors(10), make_items([str(i) for i in range(10)]), model_id="m",
                                     backend="milvus", storage={"uri": uri})
    directory = catalogue.save(tmp_path / "index")
    catalogue.remove(["id-3"])  # the collection changes at once; the directory only on save
    with pytest.raises(CatalogueIndexError, match=r"holds 9 vectors, but index.json says 10"):
        CatalogueIndex.load(directory)
    catalogue.save(directory)
    assert len(CatalogueIndex.load(directory)) == 9


@pytest.mark.parametrize(
    ("storage", "message"),
    [
        ({"uri": "catalogue"}, "must be a Milvus Lite path ending in .db or a server URL"),
        ({"uri": "ftp://host/x.db"}, "must be a Milvus Lite path ending in .db or a server URL"),
        ({"collection": "1 or 1"}, "collection name '1 or 1' must be a letter"),
        ({"url": "x.db"}, "unknown milvus storage option"),
    ],
)
def test_invalid_storage_is_named(storage, message):
    with pytest.raises(CatalogueIndexError, match=message):
        CatalogueIndex.build(make_vectors(3), make_items(list("abc")), model_id="m", backend="milvus",
                             storage=storage)


def test_milvus_lite_refuses_ivfpq_up_front(tmp_path):
    with pytest.raises(CatalogueIndexError, match="Milvus Lite has no IVF_PQ index; use kind flat, ivf, hnsw"):
        CatalogueIndex.build(make_vectors(300), make_items([str(i) for i in range(300)]), model_id="m",
                             backend="milvus", kind="ivfpq", nlist=2, nbits=4, m=2)


def test_missing_embedded_database_is_named(tmp_path):
    directory = CatalogueIndex.build(make_vectors(3), make_items(list("abc")), model_id="m",
                                     backend="milvus").save(tmp_path / "index")
    shutil.rmtree(directory / MILVUS_LITE_DB)
    with pytest.raises(CatalogueIndexError, match=f"missing catalogue index file .*{MILVUS_LITE_DB}"):
        CatalogueIndex.load(directory)


def test_unknown_backend_is_named(tmp_path):
    with pytest.raises(CatalogueIndexError, match="unknown catalogue index backend 'annoy'; known: faiss, milvus"):
        CatalogueIndex.build(make_vectors(3), make_items(list("abc")), model_id="m", backend="annoy")
    directory = CatalogueIndex.build(make_vectors(3), make_items(list("abc")), model_id="m").save(tmp_path / "i")
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    (directory / MANIFEST_FILE).write_text(json.dumps({**manifest, "backend": "annoy"}))
    with pytest.raises(CatalogueIndexError, match=r"corrupt catalogue index file .*unknown backend 'annoy'"):
        CatalogueIndex.load(directory)
    assert CatalogueIndex.build(make_vectors(3), make_items(list("abc")), model_id="m").info()["backend"] == "faiss"


def test_faiss_takes_no_storage():
    with pytest.raises(CatalogueIndexError, match="faiss backend takes no storage options, got uri"):
        CatalogueIndex.build(make_vectors(3), make_items(list("abc")), model_id="m", storage={"uri": "x.db"})


def test_directory_written_before_backends_existed_loads_as_faiss(tmp_path):
    directory = CatalogueIndex.build(make_vectors(3), make_items(list("abc")), model_id="m").save(tmp_path / "i")
    manifest = json.loads((directory / MANIFEST_FILE).read_text())
    del manifest["backend"], manifest["storage"]
    (directory / MANIFEST_FILE).write_text(json.dumps(manifest))
    assert CatalogueIndex.load(directory).info()["backend"] == "faiss"


def test_k_beyond_milvus_limit_is_named(hostile, monkeypatch):
    monkeypatch.setattr(milvus_module, "MAX_TOPK", 5)
    with pytest.raises(CatalogueIndexError, match="k=7 is more than the 5 hits Milvus returns per query"):
        hostile.search(make_vectors(1), k=7)
