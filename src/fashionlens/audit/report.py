"""An audit on disk: CSVs of every finding, ``summary.json``, thumbnails, grid PNGs, ``report.md`` and ``report.html``.

The directory is written as a whole and swapped into place, so a killed audit never leaves a half report. It is
read back by :func:`load_audit` (the service's read-only audit page uses it).
"""

from __future__ import annotations

import hashlib
import html
import json
from pathlib import Path
from typing import Any

import pandas as pd

from fashionlens.audit.run import CatalogueAudit
from fashionlens.errors import DataError
from fashionlens.io import atomic_dir, write_json, write_text
from fashionlens.reports import markdown
from fashionlens.reports.image_grid import save_captioned_grid, thumbnail

#: Finding tables and their CSV files.
TABLES = ("label_issues", "taxonomy_breaks", "duplicates", "photos", "outliers")
#: Items shown per grid (the CSVs hold everything).
GRID_ITEMS = 24
_THUMB_SIDE = 128


def _top_items(issues: pd.DataFrame) -> pd.DataFrame:
    """The first :data:`GRID_ITEMS` distinct items, each at its most suspicious field, with its other flagged fields."""
    others = issues.groupby("item_id", sort=False)["field"].agg(lambda fields: ", ".join(fields.iloc[1:]))
    top = issues.drop_duplicates("item_id").head(GRID_ITEMS).copy()
    top["also"] = top["item_id"].map(others).fillna("")
    return top


def _label_captions(table: pd.DataFrame) -> list[str]:
    return [f"{row.item_id} ({row.field})\ngiven: {row.given}\nsuggested: {row.suggested}\nquality {row.quality:.3f}"
            + (f"\nalso flagged: {row.also!s}" if row.also else "") for row in table.itertuples()]


def _thumb(directory: Path, path: str) -> str:
    """Save a small JPEG of ``path`` under ``thumbs/`` (once) and return its relative name."""
    from PIL import Image

    name = f"thumbs/{hashlib.sha1(path.encode()).hexdigest()[:16]}.jpg"
    target = directory / name
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(thumbnail(path, _THUMB_SIDE)).save(target, quality=85)
    return name


def _html_cards(directory: Path, items: list[tuple[str, str]]) -> str:
    """A flex row of thumbnail cards: ``(image path, caption)``."""
    cards = [f'<figure><img src="{html.escape(_thumb(directory, path))}" alt="" loading="lazy">'
             f"<figcaption>{html.escape(caption).replace(chr(10), '<br>')}</figcaption></figure>"
             for path, caption in items]
    return '<div class="grid">' + "".join(cards) + "</div>"


def _markdown(audit: CatalogueAudit, grids: dict[str, str]) -> str:
    summary = audit.summary
    lines = [f"# Catalogue audit: {summary['manifest']}", "",
             f"{summary['items']} items, embedder `{summary['embedder']}`. Every finding is in the CSVs beside this "
             f"file; the grids show the first {GRID_ITEMS}.", "", "## Counts", ""]
    counts = [{"check": f"label issues: {name}", "flagged": v["issues"], "of": v["labelled"]}
              for name, v in summary["fields"].items()]
    counts += [{"check": "taxonomy breaks", "flagged": summary["taxonomy_breaks"], "of": summary["items"]},
               {"check": "near-duplicate pairs", "flagged": summary["duplicate_pairs"],
                "of": f"{summary['duplicate_clusters']} clusters, {summary['exact_duplicate_pairs']} exact pairs"}]
    counts += [{"check": f"photos: {k}", "flagged": v, "of": summary["items"]} for k, v in summary["photos"].items()]
    lines += [markdown.records_table(counts), ""]
    if len(audit.label_issues):
        lines += ["## Label issues (confident learning on out-of-fold probabilities)", "",
                  f"![label issues]({grids['label_issues']})", "",
                  markdown.table(audit.label_issues.head(GRID_ITEMS)[
                      ["item_id", "field", "given", "suggested", "quality", "suggested_probability"]]), ""]
    if len(audit.taxonomy_breaks):
        lines += ["## Taxonomy breaks", "", markdown.table(audit.taxonomy_breaks.head(GRID_ITEMS)[
            ["item_id", "field", "child", "given", "suggested", "support"]]), ""]
    if len(audit.duplicates):
        lines += ["## Near-duplicates", "", f"![duplicates]({grids['duplicates']})", "",
                  markdown.table(audit.duplicates.head(GRID_ITEMS)[
                      ["cluster", "a_item_id", "b_item_id", "similarity", "kind", "differs"]]), ""]
    if len(audit.photos):
        lines += ["## Broken or odd photos", "", markdown.table(audit.photos.head(GRID_ITEMS)[
            ["item_id", "problem", "detail", "width", "height"]]), ""]
    lines += ["## Most outlying photos", "", f"![outliers]({grids['outliers']})", "",
              markdown.table(audit.outliers.head(10)[["item_id", "distance", "z"]]), ""]
    return "\n".join(lines)


def _html(directory: Path, audit: CatalogueAudit) -> str:
    summary = audit.summary
    parts = [f"<h1>Catalogue audit: {html.escape(str(summary['manifest']))}</h1>",
             f"<p>{summary['items']} items. Every finding is in the CSV files beside this page.</p>",
             "<pre>" + html.escape(json.dumps({k: summary[k] for k in ("fields", "taxonomy_breaks", "duplicate_pairs",
                                                                    "duplicate_clusters", "photos")}, indent=1))
             + "</pre>"]
    issues = _top_items(audit.label_issues) if len(audit.label_issues) else audit.label_issues
    if len(issues):
        parts += ["<h2>Label issues: given vs suggested</h2>", _html_cards(
            directory, list(zip(issues["path"].astype(str), _label_captions(issues), strict=True)))]
    pairs = audit.duplicates.head(GRID_ITEMS // 2)
    if len(pairs):
        cards: list[tuple[str, str]] = []
        for row in pairs.itertuples():
            cards += [(str(row.a_path), f"{row.a_item_id} · cluster {row.cluster}\n{row.kind} {row.similarity:.3f}"),
                      (str(row.b_path), f"{row.b_item_id}\ndiffers: {row.differs!s}")]
        parts += ["<h2>Near-duplicates</h2>", _html_cards(directory, cards)]
    if len(audit.photos):
        parts += ["<h2>Broken or odd photos</h2>", _html_cards(directory, [
            (str(row.path), f"{row.item_id}\n{row.problem}: {row.detail}") for row in audit.photos.head(GRID_ITEMS)
            .itertuples()])]
    parts += ["<h2>Most outlying photos</h2>", _html_cards(directory, [
        (str(row.path), f"{row.item_id}\nz {row.z:.1f}") for row in audit.outliers.head(12).itertuples()])]
    style = ("body{font-family:sans-serif;margin:2em;max-width:1200px}.grid{display:flex;flex-wrap:wrap;gap:8px}"
             "figure{margin:0;width:150px;font-size:11px}img{width:128px;height:128px;border:1px solid #ccc}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>Catalogue audit</title><style>{style}</style>"
            f"</head><body>{''.join(parts)}</body></html>\n")


def write_audit(audit: CatalogueAudit, out_dir: str | Path) -> Path:
    """Write ``audit`` to ``out_dir`` (replaced as a whole): CSVs, ``summary.json``, grids and both reports."""
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        for name in TABLES:
            getattr(audit, name).to_csv(tmp / f"{name}.csv", index=False)
        write_json(tmp / "summary.json", audit.summary)
        grids = {"label_issues": "label_issues.png", "duplicates": "duplicates.png", "outliers": "outliers.png"}
        issues = _top_items(audit.label_issues) if len(audit.label_issues) else audit.label_issues
        if len(issues):
            save_captioned_grid(issues["path"].tolist(), _label_captions(issues), tmp / grids["label_issues"],
                                title="label issues: given vs suggested")
        pairs = audit.duplicates.head(GRID_ITEMS // 2)
        if len(pairs):
            paths = [p for a, b in zip(pairs["a_path"], pairs["b_path"], strict=True) for p in (a, b)]
            captions = [c for row in pairs.itertuples() for c in (
                f"{row.a_item_id}\ncluster {row.cluster}, {row.kind}\nsim {row.similarity:.3f}",
                f"{row.b_item_id}\ndiffers: {row.differs!s}")]
            save_captioned_grid(paths, captions, tmp / grids["duplicates"], title="near-duplicate pairs")
        top = audit.outliers.head(12)
        if len(top):
            save_captioned_grid(top["path"].tolist(), [f"{i}\nz {z:.1f}" for i, z in zip(top["item_id"], top["z"],
                                                                                          strict=True)],
                                tmp / grids["outliers"], title="most outlying photos")
        write_text(tmp / "report.md", _markdown(audit, grids))
        write_text(tmp / "report.html", _html(tmp, audit))
    return out_dir


def _records(file: Path) -> list[dict[str, Any]]:
    """The rows of one finding CSV (none when the file is absent or the table had no columns)."""
    if not file.is_file():
        return []
    try:
        table = pd.read_csv(file, dtype={"item_id": str, "a_item_id": str, "b_item_id": str})
    except pd.errors.EmptyDataError:
        return []
    return [{str(k): v for k, v in row.items()} for row in table.astype(object).where(table.notna(), "")
            .to_dict("records")]


def load_audit(directory: str | Path) -> dict[str, Any]:
    """A saved audit: its summary and every finding table as records.

    Raises:
        DataError: ``directory`` is not an audit written by :func:`write_audit`.
    """
    directory = Path(directory)
    summary_file = directory / "summary.json"
    if not summary_file.is_file():
        raise DataError(f"not an audit directory (no summary.json): {directory}")
    try:
        audit: dict[str, Any] = {"summary": json.loads(summary_file.read_text(encoding="utf-8"))}
        for name in TABLES:
            audit[name] = _records(directory / f"{name}.csv")
    except (json.JSONDecodeError, pd.errors.ParserError, UnicodeDecodeError) as error:
        raise DataError(f"cannot read audit {directory}: {str(error).splitlines()[0]}") from error
    return audit
