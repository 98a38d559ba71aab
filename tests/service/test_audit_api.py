"""``/v1/audit``: a saved catalogue audit served read-only, and nothing else from its folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from fashionlens.audit import CatalogueAudit, write_audit
from fashionlens.service.app import build_app
from fashionlens.service.audit import AuditView
from fashionlens.service.pipeline import Pipeline


@pytest.fixture(scope="module")
def audit_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("audit")
    photos = []
    for i, colour in enumerate(("red", "blue", "green")):
        Image.new("RGB", (64, 80), colour).save(folder / f"{i}.jpg")
        photos.append(str(folder / f"{i}.jpg"))
    issues = pd.DataFrame({"row": [0, 1], "item_id": ["a", "b"], "path": photos[:2], "field": "articleType",
                           "given": ["Tshirts", "Watches"], "suggested": ["Watches", "Tshirts"],
                           "quality": [0.01, 0.02], "given_probability": [0.01, 0.02],
                           "suggested_probability": [0.9, 0.8]})
    outliers = pd.DataFrame({"row": [2, 0, 1], "item_id": ["c", "a", "b"], "path": [photos[2], *photos[:2]],
                             "distance": [0.5, 0.1, 0.1], "z": [6.0, 0.0, 0.0]})
    empty = pd.DataFrame()
    summary = {"manifest": "toy", "items": 3, "embedder": "toy", "taxonomy_breaks": 0, "duplicate_pairs": 0,
               "duplicate_clusters": 0, "exact_duplicate_pairs": 0, "photos": {},
               "fields": {"articleType": {"labelled": 3, "issues": 2}}}
    audit = CatalogueAudit(issues, empty, empty, empty, outliers, summary)
    return write_audit(audit, folder / "audit")


@pytest.fixture(scope="module")
def client(audit_dir: Path) -> TestClient:
    with TestClient(build_app(Pipeline.load(), audit=AuditView(audit_dir))) as test_client:
        yield test_client


def test_findings_as_json(client: TestClient) -> None:
    body = client.get("/v1/audit", params={"limit": 1}).json()
    assert body["summary"]["fields"]["articleType"]["issues"] == 2
    assert body["label_issues"]["total"] == 2
    assert [r["item_id"] for r in body["label_issues"]["rows"]] == ["a"]
    only = client.get("/v1/audit", params={"table": "outliers"}).json()
    assert set(only) == {"summary", "outliers"} and only["outliers"]["rows"][0]["item_id"] == "c"


def test_report_and_its_thumbnails(client: TestClient) -> None:
    page = client.get("/v1/audit/report")
    assert page.status_code == 200 and "given: Tshirts" in page.text
    thumb = page.text.split('src="thumbs/')[1].split('"')[0]
    image = client.get(f"/v1/audit/thumbs/{thumb}")
    assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg"


@pytest.mark.parametrize("name", ["..%2Fsummary.json", "summary.json", "0123456789abcdef.png", "x" * 300])
def test_nothing_else_is_served(client: TestClient, name: str) -> None:
    assert client.get(f"/v1/audit/thumbs/{name}").status_code == 404


def test_bad_parameters_are_422(client: TestClient) -> None:
    for params in ({"table": "nope"}, {"limit": 0}, {"limit": "many"}):
        response = client.get("/v1/audit", params=params)
        assert response.status_code == 422 and "\n" not in response.json()["detail"]


def test_no_audit_loaded_is_404() -> None:
    with TestClient(build_app(Pipeline.load())) as plain:
        response = plain.get("/v1/audit")
    assert response.status_code == 404 and "--audit" in response.json()["detail"]
