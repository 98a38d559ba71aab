"""``fashionlens audit``: find mislabelled products, near-duplicates and broken or odd photos in a catalogue."""

from __future__ import annotations

from pathlib import Path

import typer

from fashionlens.cli.common import (
    BatchJob,
    batch_job_options,
    console,
    load_embedder,
    load_manifest,
)


@batch_job_options
def audit(
    manifest: Path = typer.Option(..., "--manifest", "-m", help="Catalogue manifest (from `fashionlens data build`)."),
    out: Path = typer.Option(..., "--out", "-o", help="Audit directory to write (replaced as a whole)."),
    field: list[str] = typer.Option(None, "--field", "-f",
                                    help="Class field to check for label issues (repeatable; default: every one)."),
    levels: str = typer.Option("", help="Class fields forming a hierarchy, root first, comma-separated "
                                        "(e.g. masterCategory,subCategory,articleType): each is checked and "
                                        "paths that break the catalogue's taxonomy are flagged."),
    embedder: Path = typer.Option(None, "--embedder", help="Embedder directory for duplicates and outliers "
                                                           "(default: untrained ImageNet features)."),
    backbone: str = typer.Option("efficientnet_lite0", help="Backbone of the untrained baseline."),
    folds: int = typer.Option(5, help="Folds of the out-of-fold label heads."),
    rank_by: str = typer.Option("self_confidence", help="Label-quality score: self_confidence | normalized_margin."),
    pca_dims: int = typer.Option(None, help="Fit the label heads on this many principal components (faster on "
                                            "big catalogues, slightly less precise)."),
    duplicate_threshold: float = typer.Option(0.97, help="Cosine similarity at or above which photos are duplicates."),
    max_items: int = typer.Option(None, help="Audit a seeded random sample of this many items."),
    seed: int = typer.Option(0, help="Fold and sample seed."),
    progress: bool = typer.Option(True, help="Draw progress bars."),
    *,
    job: BatchJob,
) -> None:
    """Audit a catalogue: label issues (cleanlab confident learning on out-of-fold heads), near-duplicates
    (FAISS self-join) and broken or odd photos; writes CSVs, report.md and report.html."""
    from fashionlens.audit import AuditConfig, audit_catalogue, write_audit

    config = AuditConfig(fields=list(field or []), levels=[v.strip() for v in levels.split(",") if v.strip()],
                         folds=folds, rank_by=rank_by,  # type: ignore[arg-type]  # validated by AuditConfig
                         duplicate_threshold=duplicate_threshold, max_items=max_items, seed=seed,
                         pca_dims=pca_dims)
    catalogue = load_manifest(manifest)
    model = load_embedder(embedder, backbone, job.runtime)
    vectors = None
    if job.sharded:  # embed on the local or Ray batch engine into resumable shards, then audit their vectors
        import numpy as np

        from fashionlens.inference import ModelSpec, read_arrays

        spec = ModelSpec("embed", str(embedder) if embedder is not None else None, backbone)
        arrays = read_arrays(job.run(catalogue, spec, out))
        vectors = np.where(arrays.ok[:, None], arrays.columns["embedding"], np.nan)
    result = audit_catalogue(catalogue, config, embedder=model, vectors=vectors, show_progress=progress)
    write_audit(result, out)
    summary = result.summary
    for name, counts in summary["fields"].items():
        console.print(f"label issues  {name}: {counts['issues']} of {counts['labelled']}")
    if config.levels:
        console.print(f"taxonomy breaks: {summary['taxonomy_breaks']}")
    console.print(f"near-duplicates: {summary['duplicate_pairs']} pairs in {summary['duplicate_clusters']} clusters "
                  f"({summary['exact_duplicate_pairs']} exact)")
    console.print("photos: " + (", ".join(f"{k} {v}" for k, v in summary["photos"].items()) or "no problems"))
    console.print(f"report: {out / 'report.md'} and {out / 'report.html'}")
