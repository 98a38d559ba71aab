"""The catalogue audit on real product photos with planted problems: flipped labels, a re-uploaded photo, a
corrupt file, a blank and a tiny image; a clean catalogue; bad input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

import fashionlens
from fashionlens.audit import (
    AuditConfig,
    CatalogueAudit,
    audit_catalogue,
    load_audit,
    out_of_fold_probabilities,
    similar_pairs,
    taxonomy_breaks,
    write_audit,
)
from fashionlens.cli import app
from fashionlens.data.readers import read_fashion_product_images
from fashionlens.data.records import Manifest
from fashionlens.errors import DataError

TYPES = ("Watches", "Sunglasses", "Tshirts")
PER_TYPE = 20
FLIPPED = (0, 1)  # the first two watches are filed as Tshirts


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Features are cached for this module only, never in the user's home."""
    root = tmp_path_factory.mktemp("audit-cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FASHIONLENS_CACHE", str(root))
        yield root


@pytest.fixture(scope="module")
def clean(shared_data: Path, cache: Path) -> Manifest:
    """Twenty products of each of three unmistakable article types."""
    products = read_fashion_product_images(shared_data / "fashion-product-images")
    types = products.class_column("articleType")
    chosen = np.concatenate([np.flatnonzero(types == t)[:PER_TYPE] for t in TYPES])
    return products.subset(np.isin(np.arange(len(products)), chosen))


@pytest.fixture(scope="module")
def planted(clean: Manifest, tmp_path_factory: pytest.TempPathFactory) -> tuple[Manifest, dict[str, str]]:
    """The clean catalogue plus known problems; returns it and the item id of each planted problem."""
    folder = tmp_path_factory.mktemp("planted")
    frame = clean.frame.copy().reset_index(drop=True)
    watches = np.flatnonzero(frame["class:articleType"] == "Watches")
    for row in FLIPPED:
        frame.loc[watches[row], "class:articleType"] = "Tshirts"
    sunglasses = frame.iloc[int(np.flatnonzero(frame["class:articleType"] == "Sunglasses")[0])]
    copy = folder / "reupload.jpg"
    shutil.copy(sunglasses["path"], copy)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    Image.new("RGB", (224, 224), "white").save(folder / "blank.jpg")
    Image.new("RGB", (12, 12), "red").save(folder / "tiny.png")
    extra = []
    planted_files = ((copy, "reupload", "Sunglasses"), (folder / "broken.jpg", "broken", "Watches"),
                     (folder / "blank.jpg", "blank", "Watches"), (folder / "tiny.png", "tiny", "Tshirts"))
    for name, item_id, article in planted_files:
        row = sunglasses.copy()
        row["path"], row["item_id"], row["class:articleType"] = str(name), item_id, article
        extra.append(row)
    frame = pd.concat([frame, pd.DataFrame(extra)], ignore_index=True)
    ids = {"flipped": ",".join(frame.loc[watches[list(FLIPPED)], "item_id"]), "original": str(sunglasses["item_id"])}
    return Manifest(frame, name="planted"), ids


@pytest.fixture(scope="module")
def planted_audit(planted: tuple[Manifest, dict[str, str]]) -> CatalogueAudit:
    manifest, _ = planted
    return audit_catalogue(manifest, AuditConfig(fields=["articleType"]), show_progress=False)


def test_flipped_labels_are_found_and_the_true_label_suggested(planted_audit: CatalogueAudit,
                                                                planted: tuple[Manifest, dict[str, str]]) -> None:
    issues = planted_audit.label_issues.set_index("item_id")
    for item_id in planted[1]["flipped"].split(","):
        assert item_id in issues.index, planted_audit.label_issues
        assert issues.loc[item_id, "given"] == "Tshirts"
        assert issues.loc[item_id, "suggested"] == "Watches"
    # the flips rank above everything else flagged
    top = planted_audit.label_issues["item_id"].head(len(FLIPPED))
    assert set(top) <= set(planted[1]["flipped"].split(",")) | {"blank", "tiny"}


def test_reuploaded_photo_is_an_exact_duplicate(planted_audit: CatalogueAudit,
                                                planted: tuple[Manifest, dict[str, str]]) -> None:
    pairs = planted_audit.duplicates
    match = pairs[((pairs["a_item_id"] == "reupload") & (pairs["b_item_id"] == planted[1]["original"]))
                  | ((pairs["b_item_id"] == "reupload") & (pairs["a_item_id"] == planted[1]["original"]))]
    assert len(match) == 1
    assert match["kind"].iloc[0] == "exact"
    assert match["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-4)


def test_broken_blank_and_tiny_photos_are_named(planted_audit: CatalogueAudit) -> None:
    problems = dict(zip(planted_audit.photos["item_id"], planted_audit.photos["problem"], strict=True))
    assert problems.get("broken") == "unreadable"
    assert problems.get("blank") == "near-blank"
    assert problems.get("tiny") == "tiny"
    assert planted_audit.summary["items"] == 3 * PER_TYPE + 4


def test_a_clean_catalogue_reports_no_issues(clean: Manifest) -> None:
    audit = audit_catalogue(clean, AuditConfig(fields=["articleType"], levels=[]), show_progress=False)
    assert audit.label_issues.empty, audit.label_issues
    assert audit.photos.empty, audit.photos
    assert (audit.duplicates["kind"] != "exact").all()


def test_report_is_written_and_read_back(planted_audit: CatalogueAudit, tmp_path: Path) -> None:
    out = write_audit(planted_audit, tmp_path / "audit")
    for name in ("report.md", "report.html", "summary.json", "label_issues.csv", "duplicates.csv", "photos.csv",
                 "label_issues.png"):
        assert (out / name).is_file(), name
    saved = load_audit(out)
    assert saved["summary"]["fields"]["articleType"]["issues"] == len(planted_audit.label_issues)
    assert {r["item_id"] for r in saved["photos"]} >= {"broken", "blank", "tiny"}
    assert "given: Tshirts" in (out / "report.html").read_text()
    with pytest.raises(DataError, match="not an audit"):
        load_audit(tmp_path)


def test_out_of_fold_heads_never_see_the_row_they_score() -> None:
    rng = np.random.default_rng(0)
    features = rng.normal(size=(200, 8))
    labels = (features[:, 0] > 0).astype(np.int64)
    labels[:10] = 1 - labels[:10]  # flipped: a head that saw them would echo the flip
    probabilities = out_of_fold_probabilities(features, labels, 2, folds=5)
    assert probabilities.shape == (200, 2)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert (probabilities[np.arange(10), labels[:10]] < 0.5).mean() >= 0.8
    # Pure noise, more dimensions than rows: a head scoring its own training rows would memorise their labels; a
    # held-out head can only guess.
    noise = rng.normal(size=(60, 200))
    random_labels = rng.integers(0, 2, size=60)
    held_out = out_of_fold_probabilities(noise, random_labels, 2, folds=5)[np.arange(60), random_labels]
    assert held_out.mean() < 0.65


def test_taxonomy_breaks_name_the_majority_parent() -> None:
    frame = pd.DataFrame({"sub": ["Topwear"] * 9 + ["Eyewear", "Eyewear"],
                          "article": ["Tshirts"] * 9 + ["Tshirts", "Sunglasses"]})
    breaks = taxonomy_breaks(frame, ["sub", "article"])
    assert breaks["row"].tolist() == [9]
    assert breaks.iloc[0]["given"] == "Eyewear" and breaks.iloc[0]["suggested"] == "Topwear"
    assert breaks.iloc[0]["support"] == pytest.approx(0.9)


def test_similar_pairs_threshold() -> None:
    vectors = np.array([[1.0, 0.0], [0.999, 0.04], [0.0, 1.0]], dtype=np.float32)
    pairs = similar_pairs(vectors, 0.99)
    assert pairs[["a", "b"]].values.tolist() == [[0, 1]]
    with pytest.raises(DataError):
        similar_pairs(vectors, 1.5)


@pytest.mark.parametrize(("frame", "options", "message"), [
    (pd.DataFrame({"path": ["a.jpg", "b.jpg"], "class:articleType": ["Tops", "Tops"]}), ["--field", "nope"],
     "no class field 'nope'"),
    (pd.DataFrame({"path": [f"{i}.jpg" for i in range(9)], "class:articleType": ["Tops"] * 9}), [],
     "field 'articleType' has 1 class"),
    (pd.DataFrame({"path": pd.Series([], dtype=str), "class:articleType": pd.Series([], dtype=str)}), [],
     "is empty"),
])
def test_bad_input_is_one_line(frame: pd.DataFrame, options: list[str], message: str, tmp_path: Path) -> None:
    manifest = Manifest(frame, name="bad").save(tmp_path / "bad.parquet")
    with pytest.raises(DataError, match=message):
        audit_catalogue(Manifest.load(manifest), AuditConfig(fields=options[1:2]), show_progress=False)
    result = CliRunner().invoke(app, ["audit", "-m", str(manifest), "-o", str(tmp_path / "out"), *options])
    assert isinstance(result.exception, DataError)  # main() turns it into one line and exit status 2
    assert not (tmp_path / "out").exists()


def test_cli_error_is_one_line_with_exit_status_2(tmp_path: Path) -> None:
    manifest = Manifest(pd.DataFrame({"path": ["a.jpg"], "class:articleType": ["Tops"]}), name="bad")
    saved = manifest.save(tmp_path / "bad.parquet")
    done = subprocess.run([sys.executable, "-m", "fashionlens", "audit", "-m", str(saved), "-o", str(tmp_path / "o"),
                           "--field", "colour"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(fashionlens.__file__).parents[1])})
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "'colour'" in lines[0]


def test_cli_audits_through_the_sharded_batch_engine(planted: tuple[Manifest, dict[str, str]], tmp_path: Path) -> None:
    """``--shards`` embeds on the local batch engine into resumable shards; the findings match the in-process run."""
    manifest, ids = planted
    saved = manifest.save(tmp_path / "planted.parquet")
    result = CliRunner().invoke(app, ["audit", "-m", str(saved), "-o", str(tmp_path / "audit"), "--field",
                                      "articleType", "--shards", str(tmp_path / "shards"), "--no-progress"])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "label issues  articleType" in result.output
    saved_audit = load_audit(tmp_path / "audit")
    flagged = {r["item_id"] for r in saved_audit["label_issues"]}
    assert set(ids["flipped"].split(",")) <= flagged
    assert {r["item_id"] for r in saved_audit["photos"] if r["problem"] == "unreadable"} == {"broken"}
    assert any(r["kind"] == "exact" for r in saved_audit["duplicates"])
