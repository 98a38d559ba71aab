"""The ``fashionlens`` command line: one group per task, plus ``demo``; ``tag PHOTO`` and ``classify PHOTO`` run the
shipped models (``models list``).

Every :class:`~fashionlens.errors.FashionlensError` is printed as one line on stderr with exit status 2.
"""

from __future__ import annotations

import sys

import typer

from fashionlens import __version__, distributed
from fashionlens.cli import embed, export, hierarchy, index, models, search, similar
from fashionlens.cli.audit import audit
from fashionlens.cli.common import PREDICT_EPILOG, console, err_console
from fashionlens.cli.data import app as data_app
from fashionlens.cli.serve import serve
from fashionlens.cli.tag import app as tag_app
from fashionlens.errors import FashionlensError

app = typer.Typer(help="fashionlens: tag fashion photos, classify them into a category hierarchy, and find "
                       "matching catalogue items.", no_args_is_help=True, pretty_exceptions_enable=False)
app.add_typer(data_app, name="data")
app.add_typer(tag_app, name="tag")
app.add_typer(hierarchy.app, name="hierarchy")
app.command("classify", epilog=PREDICT_EPILOG)(hierarchy.predict)  # `hierarchy predict`, the shipped model by default
app.add_typer(models.app, name="models")
app.add_typer(export.app, name="export")
app.command("serve")(serve)
app.add_typer(embed.app, name="embed")
app.add_typer(index.app, name="index")
app.command("search")(search.search)
app.command("similar")(similar.similar)
app.command("audit")(audit)


def _print_version(value: bool) -> None:
    if value:
        console.print(f"fashionlens {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                 help="Print the fashionlens version and exit."),
) -> None:
    """fashionlens: tag fashion photos, classify them into a category hierarchy, and find matching catalogue items."""


@app.command("demo")
def demo(
    data: str = typer.Option("../shared/data", help="Folder holding the shared datasets."),
    out: str = typer.Option("demo-output", help="Where manifests, models and reports go."),
) -> None:
    """Run the main job end to end on the real data and print the figures."""
    from pathlib import Path

    from fashionlens.demo import run_demo

    run_demo(Path(data), Path(out))


def main() -> None:
    """Console-script entry point with one-line errors for bad input.

    Under ``torchrun`` the process joins the process group first, and only rank 0 prints.
    """
    try:
        if distributed.init_distributed() and not distributed.is_main_process():
            console.quiet = err_console.quiet = True
        app()
    except FashionlensError as error:
        err_console.print(f"[red]error:[/red] {error}", highlight=False, soft_wrap=True)
        sys.exit(2)

