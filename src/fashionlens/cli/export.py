"""``fashionlens export``: turn a saved tagger or embedder into a self-describing ONNX file for onnxruntime.

Verification is on by default: after writing the graph to a temporary file, the command runs a few real images
through onnxruntime and through the PyTorch model, and replaces ``--out`` only when they agree within ``--atol``.
The images come from ``--image`` (repeatable) or, failing that, the first rows of ``--manifest``; a model directory
does not record the images it was trained on, so without either the command asks for them (or ``--no-verify``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from fashionlens.cli.common import console, load_manifest

app = typer.Typer(help="Export models for serving without PyTorch.", no_args_is_help=True)


@app.command("onnx")
def onnx(
    model: Path = typer.Option(..., "--model", help="Tagger or embedder directory."),
    out: Path = typer.Option(..., "--out", "-o", help="ONNX file to write (replaced only after a good export)."),
    verify: bool = typer.Option(True, "--verify/--no-verify",
                                help="Compare onnxruntime with PyTorch on real images before writing."),
    images: int = typer.Option(4, "--images", min=1, help="How many images to verify on."),
    image: list[Path] | None = typer.Option(None, "--image", help="Image file to verify on (repeatable)."),
    manifest_path: Path | None = typer.Option(None, "--manifest", "-m",
                                              help="Verify on the first --images rows of this manifest instead."),
    atol: float = typer.Option(1e-4, help="Largest accepted absolute difference from PyTorch."),
) -> None:
    """Export a tagger (images → tag and class probabilities) or an embedder (images → embeddings) to ONNX."""
    from fashionlens.errors import ConfigError
    from fashionlens.export import export_onnx, model_kind

    model_kind(model)  # a wrong directory is reported before any image is looked at
    chosen: list[Path] = []
    if verify:
        if image:
            chosen = list(image)[:images]
        elif manifest_path is not None:
            chosen = [Path(p) for p in load_manifest(manifest_path).frame["path"].tolist()[:images]]
        if not chosen:
            raise ConfigError("verifying the export needs real images: pass --image PATH (repeatable) or "
                              "--manifest FILE, or --no-verify")
    result = export_onnx(model, out, verify_images=chosen, atol=atol)
    console.print(f"wrote {result.kind} to {result.path} (outputs: {', '.join(result.outputs)})")
    if result.max_abs_diff is not None:
        console.print(f"verified on {result.images_verified} image(s): max |onnxruntime - PyTorch| = "
                      f"{result.max_abs_diff:.3g} (atol {atol:g})")
    else:
        console.print("not verified (--no-verify)")
