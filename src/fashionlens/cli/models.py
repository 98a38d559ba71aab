"""``fashionlens models``: the models shipped inside the package (``list``) and their model cards (``show``)."""

from __future__ import annotations

import typer

from fashionlens.cli.common import console

app = typer.Typer(help="Ready-to-use models shipped inside the package.", no_args_is_help=True)


@app.command("list")
def list_models() -> None:
    """Each shipped model: name, kind, the fashionlens version that built it, weights size and its test figures."""
    import pandas as pd

    from fashionlens import __version__
    from fashionlens.pretrained import list_pretrained

    rows = []
    for entry in list_pretrained():
        figures = entry.test_figures()
        version = entry.version or "-"
        if entry.built and version != __version__:
            version += " (stale: run `make models`)"
        rows.append({"name": entry.name, "kind": entry.kind,
                     "version": version if entry.built else "not built (run `make models`)",
                     "weights": f"{entry.weights_bytes() / 1e6:.1f} MB" if entry.built else "-",
                     "test figures": ", ".join(f"{key} {figures[key]:.3f}" for key in entry.headline
                                               if key in figures) or "-"})
    # plain text, one model a line (a rich table wraps its cells in a narrow terminal)
    console.print(pd.DataFrame(rows).to_string(index=False), markup=False, highlight=False, soft_wrap=True)
    console.print(f"fashionlens {__version__}; `fashionlens models show NAME` prints a model's card", highlight=False)


@app.command("show")
def show(name: str = typer.Argument(..., help="A shipped model's name (see `fashionlens models list`).")) -> None:
    """Print a shipped model's card: training data and licence, intended use, test figures, known weaknesses.

    Raises:
        ModelError: Unknown name, or the model is not built.
    """
    from fashionlens.errors import ModelError
    from fashionlens.pretrained.registry import CARD_FILE, get_pretrained

    card = get_pretrained(name).directory / CARD_FILE
    if not card.is_file():
        raise ModelError(f"shipped model {name!r} has no {CARD_FILE} (not built): run `make models`")
    console.print(card.read_text(encoding="utf-8"), markup=False, highlight=False, soft_wrap=True)
