"""``fashionlens serve``: the HTTP service and its web page (see :mod:`fashionlens.service.app`)."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import typer

from fashionlens.cli.common import err_console, shipped_or_given
from fashionlens.service.batching import DEFAULT_DECODERS, DEFAULT_MAX_QUEUE

API_KEY_ENV = "FASHIONLENS_API_KEY"


def serve(
    tagger: Path | None = typer.Option(None, "--tagger", help="Tagger or tagger-ensemble directory, or a shipped "
                                                              "model's name (its category and colours also steer "
                                                              "photo search)."),
    hierarchy: Path | None = typer.Option(None, "--hierarchy", help="Hierarchy classifier directory, or a shipped "
                                                                    "model's name."),
    index: Path | None = typer.Option(None, "--index", help="Catalogue index directory."),
    embedder: Path | None = typer.Option(None, "--embedder", help="Embedder that built the index (not needed "
                                                                   "when the index records it, or for an index of "
                                                                   "the untrained baseline)."),
    audit: Path | None = typer.Option(None, "--audit", help="A saved catalogue audit (fashionlens audit -o DIR), "
                                                            "served read-only at /v1/audit."),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on (0.0.0.0 for every interface)."),
    port: int = typer.Option(8000, help="TCP port."),
    max_upload_mb: float = typer.Option(10.0, help="Largest accepted image upload, in MiB."),
    max_batch: int = typer.Option(4, help="Most concurrent requests answered by one forward pass."),
    workers: int | None = typer.Option(None, help="Inference threads (default: one per core for --runtime torch, "
                                                  "one running every core for onnxruntime)."),
    threads: int | None = typer.Option(None, help="Runtime threads per inference thread (default: cores / workers)."),
    runtime: str = typer.Option("auto", help="Where the backbones run: auto (onnxruntime on CPU, PyTorch on CUDA), "
                                             "torch or onnx."),
    max_queue: int = typer.Option(DEFAULT_MAX_QUEUE, help="Most requests waiting for decoding, and for "
                                                          "inference; more get 503 with Retry-After."),
    decoders: int = typer.Option(DEFAULT_DECODERS, help="Uploads decoded at once (each may take ~7 bytes per "
                                                        "pixel of --max-image-mp at its peak)."),
    max_image_mp: float | None = typer.Option(None, help="Largest decoded image in megapixels (default: 40, or "
                                                         "FASHIONLENS_MAX_IMAGE_PIXELS)."),
    api_key: str | None = typer.Option(None, "--api-key", envvar=API_KEY_ENV, show_envvar=True,
                                       help="Require this key on every /v1/ route (Authorization: Bearer <key> or "
                                            "X-API-Key); default: open."),
    log_level: str = typer.Option("info", help="uvicorn log level (warning, info, debug...)."),
) -> None:
    """Serve tagging, category paths and visual search over HTTP, with a web page at / and API docs at /docs.

    Any of --tagger, --hierarchy, --index and --audit may be left out; the endpoints that need it then answer 404.
    With none of them, the shipped tagger and hierarchy classifier are served (see ``fashionlens models list``).
    """
    import dataclasses

    import torch
    import uvicorn

    from fashionlens.data.images import DecodeLimits
    from fashionlens.errors import ConfigError
    from fashionlens.pretrained import resolve_model
    from fashionlens.runtime import check_runtime
    from fashionlens.service.app import create_app
    from fashionlens.service.batching import plan_threads

    if tagger is None and hierarchy is None and index is None and audit is None:
        tagger, hierarchy = resolve_model(None, "tagger"), resolve_model(None, "hierarchy")
        err_console.print(f"serving the shipped models {tagger.name} and {hierarchy.name} (give --tagger, --hierarchy, "
                          f"--index or --audit to serve your own)")
    else:
        tagger, hierarchy = shipped_or_given(tagger, "tagger"), shipped_or_given(hierarchy, "hierarchy")
    if max_upload_mb <= 0 or min(max_batch, workers or 1, threads or 1, max_queue, decoders) < 1:
        raise ConfigError(f"--max-upload-mb must be > 0 and --max-batch, --workers, --threads, --max-queue, "
                          f"--decoders >= 1; got {max_upload_mb}, {max_batch}, {workers}, {threads}, {max_queue}, "
                          f"{decoders}")
    limits = DecodeLimits.from_env()
    if max_image_mp is not None:
        if not max_image_mp > 0:
            raise ConfigError(f"--max-image-mp must be > 0, got {max_image_mp}")
        limits = dataclasses.replace(limits, max_pixels=max(1, int(max_image_mp * 1_000_000)))
    check_runtime(runtime)
    workers, threads = plan_threads(workers, threads, runtime=runtime)
    torch.set_num_threads(threads)  # FAISS runs on one thread in each serving thread (see service.pipeline)
    if not api_key and not _is_loopback(host):
        err_console.print(f"warning: serving on {host} without --api-key (or {API_KEY_ENV}): anyone who can reach "
                          f"port {port} can use the API", highlight=False, soft_wrap=True)
    err_console.print(f"loading models… ({workers} inference thread(s) x {threads} {runtime} thread(s), {decoders} "
                      f"decoder(s), queue {max_queue})")
    app = create_app(tagger, hierarchy, index, embedder, max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                     max_batch=max_batch, workers=workers, max_queue=max_queue, decoders=decoders,
                     api_key=api_key or None, decode_limits=limits, audit_dir=audit, runtime=runtime,
                     threads=threads)
    err_console.print(f"fashionlens service on http://{host}:{port}/ (API docs: /docs)")
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def _is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything
