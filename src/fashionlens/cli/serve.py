"""``fashionlens serve``: the HTTP service and its web page (see :mod:`fashionlens.service.app`)."""

from __future__ import annotations

from pathlib import Path

import typer

from fashionlens.cli.common import err_console


def serve(
    tagger: Path | None = typer.Option(None, "--tagger", help="Tagger or tagger-ensemble directory."),
    hierarchy: Path | None = typer.Option(None, "--hierarchy", help="Hierarchy classifier directory."),
    index: Path | None = typer.Option(None, "--index", help="Catalogue index directory."),
    embedder: Path | None = typer.Option(None, "--embedder", help="Embedder that built the index (not needed "
                                                                   "for an index of the untrained baseline)."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, help="TCP port."),
    max_upload_mb: float = typer.Option(10.0, help="Largest accepted image upload, in MiB."),
    max_batch: int = typer.Option(4, help="Most concurrent requests answered by one forward pass."),
    workers: int | None = typer.Option(None, help="Inference threads (default: one per core)."),
    threads: int | None = typer.Option(None, help="torch threads per inference thread (default: cores / workers)."),
    log_level: str = typer.Option("info", help="uvicorn log level (warning, info, debug...)."),
) -> None:
    """Serve tagging, category paths and visual search over HTTP, with a web page at / and API docs at /docs.

    Any of --tagger, --hierarchy and --index may be left out; the endpoints that need it then answer 404.
    """
    import torch
    import uvicorn

    from fashionlens.errors import ConfigError
    from fashionlens.service.app import create_app
    from fashionlens.service.batching import plan_threads

    if tagger is None and hierarchy is None and index is None:
        raise ConfigError("nothing to serve: give at least one of --tagger, --hierarchy, --index")
    if max_upload_mb <= 0 or min(max_batch, workers or 1, threads or 1) < 1:
        raise ConfigError(f"--max-upload-mb must be > 0 and --max-batch, --workers, --threads >= 1; got "
                          f"{max_upload_mb}, {max_batch}, {workers}, {threads}")
    workers, threads = plan_threads(workers, threads)
    torch.set_num_threads(threads)
    err_console.print(f"loading models… ({workers} inference thread(s) x {threads} torch thread(s))")
    app = create_app(tagger, hierarchy, index, embedder, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                     max_batch=max_batch, workers=workers)
    err_console.print(f"fashionlens service on http://{host}:{port}/ (API docs: /docs)")
    uvicorn.run(app, host=host, port=port, log_level=log_level)
