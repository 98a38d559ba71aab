"""The HTTP API on real photos: answers agree with the models called directly, and bad input is never a 500."""

from __future__ import annotations

import asyncio
import io
import itertools
import struct
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import faiss
import httpx
import numpy as np
import pandas as pd
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

import fashionlens
from fashionlens.cli import app as cli_app
from fashionlens.cli.serve import API_KEY_ENV
from fashionlens.errors import CatalogueIndexError, FashionlensError
from fashionlens.index import CatalogueIndex
from fashionlens.service.app import MULTIPART_OVERHEAD, build_app, create_app
from fashionlens.service.jobs import Job
from fashionlens.service.pipeline import Pipeline
from fashionlens.tasks.hierarchy import HierarchyClassifier
from fashionlens.tasks.tagging import Tagger

from .conftest import CATALOGUE_SIZE, ServiceModels


@pytest.fixture(scope="module")
def client(full_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(full_app) as test_client:
        yield test_client


def upload(path: Path) -> dict[str, tuple[str, bytes, str]]:
    return {"image": (path.name, path.read_bytes(), "image/jpeg")}


def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels (400 M) in a few hundred bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
            + chunk(b"IEND", b""))


def assert_one_line_error(response: object, status: int, *fragments: str) -> None:
    assert response.status_code == status, response.text  # type: ignore[attr-defined]
    detail = response.json()["detail"]  # type: ignore[attr-defined]
    assert isinstance(detail, str) and "\n" not in detail and detail
    for fragment in fragments:
        assert fragment in detail, detail


# ----------------------------------------------------------------------------------------------- answers
def test_health_and_info_describe_the_loaded_models(client: TestClient, service_models: ServiceModels) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "available": {
        "tag": True, "tagger": True, "hierarchy": True, "search": True, "similar": True}}
    info = client.get("/v1/info").json()
    tagger = Tagger.load(service_models.tagger)
    assert info["tagger"]["tags"] == tagger.labels.tags
    assert info["hierarchy"]["levels"] == ["masterCategory", "subCategory", "articleType"]
    assert info["index"]["count"] == CATALOGUE_SIZE
    assert info["embedder"]["source"].startswith("untrained baseline")
    assert info["versions"]["torch"] and info["limits"]["max_k"] >= 10
    openapi = client.get("/openapi.json").json()
    assert "/v1/tag" in openapi["paths"]
    assert info["versions"]["fashionlens"] == openapi["info"]["version"] == fashionlens.__version__  # one version


@pytest.mark.parametrize("which", ["street photo", "1800x2400 product photo"])
def test_tag_matches_the_models_called_on_the_file(client: TestClient, service_models: ServiceModels,
                                                   which: str) -> None:
    photo = service_models.street_photos[0] if which == "street photo" else service_models.hires_photo
    answer = client.post("/v1/tag", files=upload(photo)).json()
    tagger = Tagger.load(service_models.tagger)
    expected = tagger.predict_paths([photo])
    by_label = {s["label"]: s for s in answer["tags"]}
    assert list(by_label) == sorted(by_label, key=lambda label: -by_label[label]["probability"])
    for j, label in enumerate(tagger.tag_names):  # display names (e.g. gender=female), decided with the F1 set
        assert by_label[label]["probability"] == pytest.approx(float(expected.tags[0, j]), abs=2e-4)
        assert by_label[label]["decision"] == bool(expected.tags[0, j] >= tagger.thresholds[j])
    assert answer["labels"] == [s["label"] for s in answer["tags"] if s["decision"]]
    for head, classes in tagger.labels.heads.items():
        assert answer["heads"][head]["class"] == classes[int(expected.heads[head][0].argmax())]

    hierarchy = HierarchyClassifier.load(service_models.hierarchy).predict_paths([photo])
    category = answer["category"]
    assert category["path"] == hierarchy.taxonomy.path_names(hierarchy.paths[0])
    assert [level["probability"] for level in category["levels"]] == pytest.approx(
        hierarchy.path_probabilities()[0].tolist(), abs=2e-4)
    assert answer["image"] == dict(zip(("width", "height"), Image.open(photo).size, strict=True))


def test_the_torch_runtime_answers_as_the_default_one(client: TestClient, service_models: ServiceModels) -> None:
    info = client.get("/v1/info").json()["runtime"]
    assert info["asked"] == "auto" and set(info["backbones"].values()) == {"onnx"}  # onnxruntime on this CPU
    with TestClient(create_app(service_models.tagger, service_models.hierarchy, service_models.index,
                               runtime="torch")) as torch_client:
        assert set(torch_client.get("/v1/info").json()["runtime"]["backbones"].values()) == {"torch"}
        for photo in [service_models.hires_photo, *service_models.street_photos[:1]]:
            answers = [c.post("/v1/tag", files=upload(photo)).json() for c in (client, torch_client)]
            auto, torch_probs = ({t["label"]: t["probability"] for t in answer["tags"]} for answer in answers)
            assert auto == pytest.approx(torch_probs, abs=2e-4)
            assert answers[0]["category"]["path"] == answers[1]["category"]["path"]
            hits = [[h["item_id"] for h in c.post("/v1/search", params={"k": 5}, files=upload(photo)).json()[
                "results"]] for c in (client, torch_client)]
            assert hits[0] == hits[1]


def test_search_finds_a_catalogue_item_from_its_own_photo(client: TestClient, service_models: ServiceModels) -> None:
    row = 17
    item_id = str(service_models.catalogue.frame["item_id"].iloc[row])
    photo = Path(service_models.catalogue.frame["path"].iloc[row])
    answer = client.post("/v1/search", params={"k": 5, "crop": "none"}, files=upload(photo)).json()
    results = answer["results"]
    assert len(results) == 5 and [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    assert results[0]["item_id"] == item_id and results[0]["score"] == pytest.approx(1.0, abs=1e-3)
    # the default searches with the garment found in the photo: the item is still first, though not identical
    assert client.post("/v1/search", params={"k": 1}, files=upload(photo)).json()["results"][0]["item_id"] == item_id
    assert all(a["score"] >= b["score"] for a, b in itertools.pairwise(results))
    assert "path" not in results[0]["metadata"] and results[0]["metadata"]["articleType"]
    image = client.get(results[0]["image_url"])
    assert image.status_code == 200 and image.content == photo.read_bytes()


def test_search_says_which_box_it_used(client: TestClient, service_models: ServiceModels, tmp_path: Path) -> None:
    street = service_models.street_photos[0]
    width, height = Image.open(street).size
    found = client.post("/v1/search", params={"k": 3}, files=upload(street)).json()  # crop=auto by default
    x0, y0, x1, y1 = found["crop"]["box"]
    assert found["crop"]["mode"] == "auto" and found["crop"]["fallback"] is False and len(found["results"]) == 3
    assert 0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height and (x1 - x0) * (y1 - y0) < width * height
    whole = client.post("/v1/search", params={"crop": "none"}, files=upload(street)).json()["crop"]
    assert whole == {"box": [0, 0, width, height], "box_text": f"0,0,{width},{height}", "mode": "none",
                     "fallback": False, "reason": None}
    given = client.post("/v1/search", params={"crop": "10,20,110,220", "k": 3}, files=upload(street)).json()
    assert given["crop"]["box"] == [10, 20, 110, 220] and given["crop"]["mode"] == "box"
    blank = io.BytesIO()
    Image.new("RGB", (200, 300), (255, 255, 255)).save(blank, format="PNG")
    fallback = client.post("/v1/search", files={"image": ("blank.png", blank.getvalue(), "image/png")}).json()
    assert fallback["crop"]["fallback"] is True and fallback["crop"]["box"] == [0, 0, 200, 300]
    assert fallback["crop"]["reason"].startswith("no garment found") and fallback["results"]


@pytest.mark.parametrize(("crop", "status", "fragment"), [("abc", 422, "is malformed"), ("4,4,4,8", 422, "is empty"),
                                                          ("0,0,9999,10", 400, "lies outside the")])
def test_bad_crops_are_4xx(client: TestClient, service_models: ServiceModels, crop: str, status: int,
                           fragment: str) -> None:
    response = client.post("/v1/search", params={"crop": crop}, files=upload(service_models.street_photos[0]))
    assert_one_line_error(response, status, fragment)


def test_search_filters_restrict_every_result(client: TestClient, service_models: ServiceModels) -> None:
    genders = service_models.catalogue.frame["class:gender"]
    wanted = "Women" if (genders == "Women").sum() >= 3 else str(genders.mode().iloc[0])
    answer = client.post("/v1/search", params={"k": 50, "filter": f"gender={wanted}"},
                         files=upload(service_models.queries[0])).json()
    assert len(answer["results"]) == min(50, int((genders == wanted).sum()))
    assert {r["metadata"]["gender"] for r in answer["results"]} == {wanted}


def test_similar_items_never_include_the_item(client: TestClient, service_models: ServiceModels) -> None:
    item_id = str(service_models.catalogue.frame["item_id"].iloc[3])
    answer = client.get(f"/v1/items/{item_id}/similar", params={"k": 7}).json()
    assert answer["item_id"] == item_id and len(answer["results"]) == 7
    assert item_id not in {r["item_id"] for r in answer["results"]}


def test_item_image_thumbnail(client: TestClient, service_models: ServiceModels) -> None:
    item_id = str(service_models.catalogue.frame["item_id"].iloc[0])
    response = client.get(f"/v1/items/{item_id}/image", params={"size": 64})
    assert response.status_code == 200 and response.headers["content-type"] == "image/jpeg"
    assert max(Image.open(io.BytesIO(response.content)).size) == 64


def test_page_and_its_assets_are_served(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and 'id="file"' in page.text and "/static/app.js" in page.text
    for asset in ("app.js", "style.css"):
        assert client.get(f"/static/{asset}").status_code == 200


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(("name", "make", "status", "fragment"), [
    ("notes.txt", lambda photo: b"just some text, not a photo", 415, "not an image"),
    ("half.jpg", lambda photo: photo.read_bytes()[:3000], 400, "truncated"),
    ("empty.jpg", lambda photo: b"", 400, "empty"),
    ("bomb.png", lambda photo: bomb_png(), 413, "decompression bomb"),
])
@pytest.mark.parametrize("endpoint", ["/v1/tag", "/v1/search"])
def test_bad_uploads_get_a_one_line_4xx(client: TestClient, service_models: ServiceModels, endpoint: str, name: str,
                                        make: object, status: int, fragment: str) -> None:
    data = make(service_models.street_photos[0])  # type: ignore[operator]
    response = client.post(endpoint, files={"image": (name, data, "application/octet-stream")})
    assert_one_line_error(response, status, fragment, name)


@pytest.mark.parametrize(("params", "fragment"), [
    ({"k": 0}, "'k'"), ({"k": 101}, "'k'"), ({"k": "ten"}, "'k'"),
    ({"filter": "gender"}, "field=value"), ({"filter": "colour=Red"}, "unknown filter field 'colour'"),
])
def test_bad_k_or_filter_is_422(client: TestClient, service_models: ServiceModels, params: dict[str, object],
                                fragment: str) -> None:
    item_id = str(service_models.catalogue.frame["item_id"].iloc[0])
    assert_one_line_error(client.post("/v1/search", params=params, files=upload(service_models.queries[0])), 422,
                          fragment)
    assert_one_line_error(client.get(f"/v1/items/{item_id}/similar", params=params), 422, fragment)


def test_missing_image_field_and_unknown_item(client: TestClient) -> None:
    assert_one_line_error(client.post("/v1/tag", data={"photo": "x"}), 422, "image")
    assert_one_line_error(client.get("/v1/items/no-such-item/similar"), 404, "no-such-item")
    assert_one_line_error(client.get("/v1/items/no-such-item/image"), 404, "no-such-item")


def test_uploads_over_the_limit_are_413(service_models: ServiceModels) -> None:
    photo = service_models.hires_photo
    limit = photo.stat().st_size // 2
    with TestClient(create_app(service_models.tagger, max_upload_bytes=limit)) as small:
        assert_one_line_error(small.post("/v1/tag", files=upload(photo)), 413, "limit")
        # just over the file limit, but within the multipart allowance: caught when the file is read
        assert_one_line_error(small.post("/v1/tag", files={"image": ("x.jpg", b"\xff" * (limit + 1), "image/jpeg")}),
                              413, f"{limit}-byte limit")
        boundary = "fashionlensboundary"
        head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"big.jpg\"\r\n"
                f"Content-Type: image/jpeg\r\n\r\n").encode()

        def chunked() -> Iterator[bytes]:  # no Content-Length: the limit is enforced while the body streams in
            yield head
            for _ in range((limit + MULTIPART_OVERHEAD) // 65536 + 2):
                yield b"\xff" * 65536

        response = small.post("/v1/tag", content=chunked(),
                              headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        assert_one_line_error(response, 413, "limit")
        assert small.post("/v1/tag", files=upload(service_models.street_photos[1])).status_code == 200


# ----------------------------------------------------------------------------------------------- optional parts
def test_each_component_is_optional(service_models: ServiceModels) -> None:
    with TestClient(create_app(tagger_dir=service_models.tagger)) as tag_only:
        answer = tag_only.post("/v1/tag", files=upload(service_models.street_photos[0])).json()
        assert "tags" in answer and "category" not in answer
        assert_one_line_error(tag_only.post("/v1/search", files=upload(service_models.queries[0])), 404, "--index")
        assert_one_line_error(tag_only.get("/v1/items/1/similar"), 404, "--index")
        assert tag_only.get("/v1/info").json()["index"] is None
    with TestClient(create_app(index_dir=service_models.index, embedder_dir=service_models.embedder)) as search_only:
        assert_one_line_error(search_only.post("/v1/tag", files=upload(service_models.queries[0])), 404,
                              "--tagger", "--hierarchy")
        assert search_only.post("/v1/search", files=upload(service_models.queries[0])).status_code == 200
        assert search_only.get("/v1/info").json()["embedder"]["source"] == str(service_models.embedder)


def test_index_of_another_embedder(service_models: ServiceModels, tmp_path: Path) -> None:
    """Without its embedder the index still answers by id (odd ids included); with a wrong one start-up fails."""
    photo = Path(service_models.catalogue.frame["path"].iloc[0])
    metadata = pd.DataFrame({"item_id": ["shirt/1#a", "b", "c"], "path": [str(photo)] * 3})
    vectors = np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32)
    CatalogueIndex.build(vectors, metadata, model_id="someone-else|v1|head-x|l2norm").save(tmp_path / "index")
    with TestClient(create_app(index_dir=tmp_path / "index")) as other:
        assert_one_line_error(other.post("/v1/search", files=upload(photo)), 404, "--embedder", "someone-else")
        assert other.get("/v1/items/shirt%2F1%23a/image").content == photo.read_bytes()
        hits = other.get("/v1/items/shirt%2F1%23a/similar", params={"k": 10}).json()["results"]
        assert {h["item_id"] for h in hits} == {"b", "c"}  # k beyond the catalogue: all there is
        assert hits[0]["image_url"] in {"/v1/items/b/image", "/v1/items/c/image"}
    with pytest.raises(CatalogueIndexError, match="someone-else"):
        create_app(index_dir=tmp_path / "index", embedder_dir=service_models.embedder)


def test_serve_with_no_model_arguments_serves_the_shipped_models(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn

    from fashionlens.pretrained import pretrained_path
    from fashionlens.service import app as service_app

    given: dict[str, Any] = {}
    monkeypatch.setattr(service_app, "create_app", lambda *args, **kwargs: given.update(args=args) or "app")
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: given.update(app=app))
    result = CliRunner().invoke(cli_app, ["serve"])
    assert result.exit_code == 0, result.output
    assert given["app"] == "app" and given["args"][:3] == (pretrained_path("clothing-tagger"),
                                                          pretrained_path("product-hierarchy"), None)
    assert "serving the shipped models clothing-tagger and product-hierarchy" in result.output
    CliRunner().invoke(cli_app, ["serve", "--tagger", "clothing-tagger"])  # a shipped model by name
    assert given["args"][:2] == (pretrained_path("clothing-tagger"), None)


def test_serve_command_names_a_missing_model(tmp_path: Path, run_cli: Callable[..., Any]) -> None:
    missing = run_cli("serve", "--tagger", tmp_path / "nope")
    assert missing.exit_code == 2 and "model directory not found" in missing.stderr
    assert [line for line in missing.stderr.splitlines() if line.startswith("error:")] == [
        f"error: model directory not found: {tmp_path / 'nope'}"] and "Traceback" not in missing.stderr


# ----------------------------------------------------------------------------------------------- hardening
class _HeldPipeline(Pipeline):
    """No models: answers every upload with its size, after a gate opens (decode is instant, inference held)."""

    def __init__(self) -> None:
        super().__init__()
        self.entered, self.gate = threading.Event(), threading.Event()

    def require(self, what: str) -> None:
        return None

    def prepare(self, data: bytes, source: str, tasks: Sequence[str], k: int = 10, filters: Any = None,
                crop: Any = "auto") -> Job:
        return Job(frozenset(tasks), {}, k, filters, (len(data), 1))

    def run(self, jobs: Sequence[Job]) -> list[dict[str, Any] | FashionlensError]:
        self.entered.set()
        assert self.gate.wait(10)
        return [{"size": job.size[0]} for job in jobs]


def test_a_full_inference_queue_answers_503_with_retry_after() -> None:
    pipeline = _HeldPipeline()
    app = build_app(pipeline, max_batch=1, workers=1, max_queue=1)

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            def post(size: int) -> Any:
                return client.post("/v1/tag", files={"image": ("x.jpg", b"x" * size, "image/jpeg")})

            first = asyncio.create_task(post(1))
            assert await asyncio.to_thread(pipeline.entered.wait, 10)  # the worker holds request 1
            second = asyncio.create_task(post(2))
            for _ in range(1000):  # until request 2 waits in the queue (polled: no timing assumption)
                if (await client.get("/v1/info")).json()["batching"]["waiting"] == 1:
                    break
                await asyncio.sleep(0.01)  # lets request 2's decode thread answer
            refused = await post(3)
            pipeline.gate.set()
            return [await first, await second, refused, await post(4)]

    first, second, refused, later = asyncio.run(main())
    assert (first.json(), second.json(), later.json()) == ({"size": 1}, {"size": 2}, {"size": 4})
    assert_one_line_error(refused, 503, "server busy", "retry")
    assert refused.headers["Retry-After"] == "1"


def test_api_key_guards_every_v1_route_only() -> None:
    app = build_app(_HeldPipeline(), api_key="s3cret-key")
    with TestClient(app) as client:
        assert client.get("/healthz").status_code == 200 and client.get("/").status_code == 200
        for url in ("/v1/info", "/v1/items/x/similar", "/v1/no-such-route"):
            missing = client.get(url)
            assert_one_line_error(missing, 401, "API key required")
            assert missing.headers["WWW-Authenticate"] == "Bearer"
            assert_one_line_error(client.get(url, headers={"X-API-Key": "s3cret-kez"}), 403, "API key is wrong")
            assert_one_line_error(client.get(url, headers={"Authorization": "Bearer s3cret"}), 403, "wrong")
        assert_one_line_error(client.post("/v1/tag", files={"image": ("x.jpg", b"x", "image/jpeg")}), 401, "key")
        assert client.get("/v1/info", headers={"Authorization": "Bearer s3cret-key"}).status_code == 200
        assert client.get("/v1/info", headers={"X-API-Key": "s3cret-key"}).status_code == 200
    with TestClient(build_app(_HeldPipeline())) as open_client:  # no key: open, a stray header is ignored
        assert open_client.get("/v1/info", headers={"X-API-Key": "anything"}).status_code == 200


def test_openapi_documents_the_new_statuses(client: TestClient) -> None:
    responses = client.get("/openapi.json").json()["paths"]["/v1/search"]["post"]["responses"]
    assert {"401", "403", "413", "415", "422", "503"} <= set(responses)
    assert responses["503"]["content"]["application/json"]["example"] == {"detail": "one-line reason"}


def test_info_hides_internal_fields_and_reports_limits(client: TestClient) -> None:
    info = client.get("/v1/info").json()
    assert "path" not in info["index"]["fields"] and "gender" in info["index"]["fields"]
    assert info["limits"]["max_image_pixels"] == 40_000_000
    assert info["limits"]["image_formats"] == ["GIF", "JPEG", "PNG", "WEBP"]
    assert info["limits"]["max_queue"] >= 1 and info["limits"]["decoders"] >= 1


def test_searches_run_faiss_on_one_thread_in_each_serving_thread(service_models: ServiceModels) -> None:
    pipeline = Pipeline.load(index_dir=service_models.index)
    item_id = str(service_models.catalogue.frame["item_id"].iloc[0])
    seen: list[int] = []

    def serve_one() -> None:
        seen.append(faiss.omp_get_max_threads())
        pipeline.similar(item_id, k=3)
        seen.append(faiss.omp_get_max_threads())

    thread = threading.Thread(target=serve_one)
    thread.start()
    thread.join(30)
    assert seen[1] == 1 and seen[0] >= seen[1]  # before: FAISS's default (one per core); after: one


def test_serve_warns_when_open_on_a_public_interface(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    public = runner.invoke(cli_app, ["serve", "--host", "0.0.0.0", "--tagger", str(tmp_path / "nope")])
    assert "warning: serving on 0.0.0.0 without --api-key" in public.output
    for quiet in (["--host", "127.0.0.1"], ["--host", "::1"], ["--host", "0.0.0.0", "--api-key", "k"]):
        result = runner.invoke(cli_app, ["serve", *quiet, "--tagger", str(tmp_path / "nope")])
        assert "warning" not in result.output and "model directory not found" in str(result.exception)
    monkeypatch.setenv(API_KEY_ENV, "from-env")
    assert "warning" not in runner.invoke(cli_app, ["serve", "--host", "0.0.0.0", "--tagger", "nope"]).output
    bad = runner.invoke(cli_app, ["serve", "--tagger", "x", "--max-queue", "0"])
    assert "--max-queue" in str(bad.exception)


# ----------------------------------------------------------------------------------------------- attribute steering
def test_search_is_steered_by_the_photos_attributes(mapped_index: Path, service_models: ServiceModels) -> None:
    photo = service_models.street_photos[0]
    with TestClient(create_app(index_dir=mapped_index)) as steered:  # the tagger the index records
        attributes = steered.get("/v1/info").json()["attributes"]
        assert attributes["steering"] and attributes["source"] == str(service_models.tagger)
        answer = steered.post("/v1/search", params={"k": 5}, files=upload(photo)).json()
        category = answer["steered_by"]["category"]
        assert answer["results"][0]["metadata"]["articleType"] in category["catalogue"]
        assert [hit["rank"] for hit in answer["results"]] == [1, 2, 3, 4, 5]
        plain = steered.post("/v1/search", params={"k": 5, "attributes": "off"}, files=upload(photo)).json()
        assert "steered_by" not in plain and "note" not in plain
        scores = [hit["score"] for hit in plain["results"]]
        assert scores == sorted(scores, reverse=True)  # off: by similarity alone
        assert_one_line_error(steered.post("/v1/search", params={"attributes": "maybe"}, files=upload(photo)), 422,
                              "'attributes'")


def test_search_without_a_usable_tagger_notes_why_it_is_not_steered(client: TestClient,
                                                                   service_models: ServiceModels) -> None:
    answer = client.post("/v1/search", params={"k": 3}, files=upload(service_models.queries[0])).json()
    # the test catalogue (200 products) lacks articleTypes the shipped mapping names
    assert "steered_by" not in answer and answer["note"].startswith("attribute steering off: domain mapping")
    assert client.get("/v1/info").json()["attributes"]["steering"] is False


def test_an_index_recording_its_embedder_is_searched_with_it(service_models: ServiceModels, tmp_path: Path) -> None:
    index = CatalogueIndex.load(service_models.index)
    index.record_model("embedder", service_models.embedder)
    index.save(tmp_path / "index")
    with TestClient(create_app(index_dir=tmp_path / "index")) as recorded:
        assert recorded.get("/v1/info").json()["embedder"]["source"] == str(service_models.embedder)
        assert recorded.post("/v1/search", files=upload(service_models.queries[0])).status_code == 200
    index.record_model("embedder", tmp_path / "gone")
    index.save(tmp_path / "index")
    with pytest.raises(FashionlensError, match=r"records its embedder at .*gone.*--embedder DIR"):
        create_app(index_dir=tmp_path / "index")
