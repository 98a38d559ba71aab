"""The HTTP service: tagging, category paths and visual search over a FastAPI app, plus a one-page web UI at ``/``.

Models load once, in :func:`create_app`; uploads are decoded on a few decode threads and inference runs on the
micro-batching worker threads (both :class:`~fashionlens.service.batching.MicroBatcher`), so the event loop stays free
and one slow request never holds up the rest. Answers are plain JSON built by :mod:`fashionlens.service.pipeline` and
sent as they are, without a response-model validation pass.

Memory and overload are bounded: an upload is at most ``max_upload_bytes``, its decode at most the pixel cap of
:mod:`fashionlens.data.images` (about 7 bytes per pixel at peak), only ``decoders`` decodes run at once, and at most
``max_queue`` requests wait for a decoder and as many for inference; beyond that a request gets a quick 503 with
``Retry-After`` instead of an ever longer wait. With an API key, every ``/v1/`` route wants it
(``Authorization: Bearer <key>`` or ``X-API-Key: <key>``); ``/``, ``/static`` and ``/healthz`` stay open.

Bad input is never a 500: every refusal is a 4xx with ``{"detail": "<one line>"}``:

* 400 corrupt, truncated or empty image; malformed multipart body; a ``crop`` box outside the image;
* 401 API key missing, 403 API key wrong (only when the service has one);
* 404 unknown item or route, or an endpoint whose model the service was started without (the message says which
  option);
* 405 wrong HTTP method;
* 413 upload over ``max_upload_bytes`` (checked on ``Content-Length`` and while reading), image over the pixel cap or
  a decompression bomb;
* 415 not an image, or an image format outside the accepted ones (JPEG, PNG, WebP, GIF by default);
* 422 bad ``k``, ``size``, ``attributes``, ``filter`` (including internal fields such as ``path``) or ``crop``
  (malformed or an empty box), missing ``image`` field;
* 503 (with ``Retry-After``) too many requests already waiting: the service is overloaded, not broken.
"""

from __future__ import annotations

import hmac
import io
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from fashionlens import __version__
from fashionlens.catalogue import parse_filters
from fashionlens.data.crops import CROP_HELP, CropSpec
from fashionlens.data.images import DecodeLimits, load_image
from fashionlens.errors import CatalogueIndexError, ConfigError, DataError, FashionlensError, ImageError
from fashionlens.service.audit import MAX_AUDIT_ROWS, TABLES, AuditView
from fashionlens.service.batching import (
    DEFAULT_DECODERS,
    DEFAULT_MAX_QUEUE,
    RETRY_AFTER_S,
    MicroBatcher,
    QueueFullError,
)
from fashionlens.service.jobs import ComponentMissingError, Job, UnknownItemError, search_tasks
from fashionlens.service.pipeline import Pipeline

DEFAULT_MAX_UPLOAD_BYTES = 10 * 1024 * 1024
MAX_K = 100
MULTIPART_OVERHEAD = 64 * 1024
"""Body bytes allowed beyond ``max_upload_bytes`` for the multipart boundary and part headers."""
STATIC = Path(__file__).parent / "static"

_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"description": text, "content": {"application/json": {"example": {"detail": "one-line reason"}}}}
    for code, text in {400: "Corrupt or empty image, malformed multipart body, or crop box outside the image",
                       401: "API key missing (only when the service has one)", 403: "API key wrong",
                       404: "Model not loaded, or unknown item", 413: "Upload or image too large",
                       415: "Not an image, or an image format that is not accepted",
                       422: "Bad parameter (k, size, attributes, filter, crop) or missing image field",
                       503: "Too many requests waiting: retry after the Retry-After seconds"}.items()}


def create_app(tagger_dir: str | Path | None = None, hierarchy_dir: str | Path | None = None,
               index_dir: str | Path | None = None, embedder_dir: str | Path | None = None,
               max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_batch: int = 4, workers: int = 1,
               max_queue: int = DEFAULT_MAX_QUEUE, decoders: int = DEFAULT_DECODERS, api_key: str | None = None,
               decode_limits: DecodeLimits | None = None, audit_dir: str | Path | None = None,
               runtime: str = "auto", threads: int | None = None) -> FastAPI:
    """Load the given models and build the app (any model may be omitted; its endpoints then answer 404).

    Args:
        tagger_dir: Tagger or tagger-ensemble directory (``POST /v1/tag`` labels).
        hierarchy_dir: Hierarchy classifier directory (``POST /v1/tag`` category path).
        index_dir: Catalogue index directory (``/v1/items/...``, and with an embedder ``POST /v1/search``).
        embedder_dir: Embedder that built the index; not needed when the index was built with the untrained
            baseline embedder.
        max_upload_bytes: Largest accepted image upload.
        max_batch: Most requests answered by one forward pass.
        workers: Inference threads; torch's own thread count is the caller's to set (``fashionlens serve`` uses
            :func:`~fashionlens.service.batching.plan_threads`).
        max_queue: Most requests waiting for a decoder, and most waiting for inference; more get 503.
        decoders: Uploads decoded at once (bounds the memory of decoding).
        api_key: When given, every ``/v1/`` route wants it; ``None``: open.
        decode_limits: Pixel cap and accepted image formats (default: the environment's, see
            :meth:`~fashionlens.data.images.DecodeLimits.from_env`).
        audit_dir: A saved catalogue audit (``fashionlens audit``) served read-only at ``/v1/audit``.
        runtime: ``auto`` (onnxruntime on CPU), ``torch`` or ``onnx``: where the backbones run.
        threads: Intra-op threads per inference thread (``None``: the runtime's default).

    Raises:
        ModelError: A model directory is missing or broken.
        CatalogueIndexError: The index is missing, broken, or from another embedder than ``embedder_dir``.
        ConfigError: Malformed decode limits in the environment.
        DataError: ``audit_dir`` is not a saved audit.
    """
    audit = AuditView(Path(audit_dir)) if audit_dir is not None else None
    pipeline = Pipeline.load(tagger_dir, hierarchy_dir, index_dir, embedder_dir, decode_limits, runtime, threads)
    pipeline.warm_up()
    return build_app(pipeline, max_upload_bytes, max_batch, workers, max_queue, decoders, api_key, audit)


def build_app(pipeline: Pipeline, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_BYTES, max_batch: int = 4,
              workers: int = 1, max_queue: int = DEFAULT_MAX_QUEUE, decoders: int = DEFAULT_DECODERS,
              api_key: str | None = None, audit: AuditView | None = None) -> FastAPI:
    """The app around an already loaded :class:`Pipeline` (arguments as for :func:`create_app`)."""
    batcher: MicroBatcher[Job, dict[str, Any]] = MicroBatcher(pipeline.run, max_batch, workers, max_queue)
    decoder: MicroBatcher[Callable[[], Any], Any] = MicroBatcher(_call_one, 1, decoders, max_queue,
                                                                 name="fashionlens-decode")

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        batcher.start()
        decoder.start()
        yield
        batcher.stop()
        decoder.stop()

    app = FastAPI(title="fashionlens", version=__version__, lifespan=lifespan,
                  description="Tag fashion photos, place them in the category hierarchy, and find similar "
                              "catalogue items. Errors are `{\"detail\": \"one-line reason\"}`.")
    app.add_middleware(BodyLimit, limit=max_upload_bytes + MULTIPART_OVERHEAD)
    if api_key:
        app.add_middleware(ApiKey, key=api_key)  # added last: runs first, before any body is read
    app.exception_handler(FashionlensError)(_fashionlens_error)
    app.exception_handler(RequestValidationError)(_validation_error)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    async def read_upload(image: UploadFile) -> tuple[bytes, str]:
        data = await image.read(max_upload_bytes + 1)
        if len(data) > max_upload_bytes:
            raise HTTPException(413, f"image upload is larger than the {max_upload_bytes}-byte limit")
        return data, Path(image.filename or "upload").name[:120] or "upload"

    async def answer(image: UploadFile, tasks: Sequence[str], k: int = 10, filters: Any = None,
                     crop: CropSpec | None = None) -> dict[str, Any]:
        for stage in (decoder, batcher):  # refuse before reading the upload when it would be refused afterwards
            stage.check_room()
        data, name = await read_upload(image)
        job = await decoder.submit(partial(pipeline.prepare, data, name, tasks, k, filters, crop=crop or "auto"))
        del data  # the upload's bytes are not needed while the job waits for inference
        return await batcher.submit(job)

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/healthz", tags=["service"])
    async def healthz() -> dict[str, Any]:
        """Liveness: models are loaded once at start-up, so a running service is a ready one."""
        return {"status": "ok", "available": pipeline.available}

    @app.get("/v1/info", tags=["service"])
    async def info() -> dict[str, Any]:
        """Loaded models (labels, backbones, validation metrics), index size and fields, versions and limits."""
        limits = pipeline.decode_limits
        return {**pipeline.info(), "limits": {"max_upload_bytes": max_upload_bytes, "max_k": MAX_K,
                                              "max_batch": max_batch, "workers": workers, "max_queue": max_queue,
                                              "decoders": decoders, "max_image_pixels": limits.max_pixels,
                                              "image_formats": sorted(limits.formats)},
                "batching": {"batches": batcher.batches, "requests": batcher.items, "waiting": batcher.waiting,
                             "refused": batcher.refused + decoder.refused}}

    @app.post("/v1/tag", tags=["models"], responses=_ERRORS)
    async def tag(image: UploadFile = File(..., description="A photo (JPEG, PNG, WebP, GIF).")) -> JSONResponse:
        """Attribute labels with probabilities, per-label thresholds and decisions, head classes, and the category
        path with per-level probabilities (``tags``/``category`` are absent when that model is not loaded)."""
        pipeline.require("tag")
        return JSONResponse(await answer(image, ("tags", "hierarchy")))

    @app.post("/v1/search", tags=["catalogue"], responses=_ERRORS)
    async def search(image: UploadFile = File(..., description="A photo to find similar catalogue items for."),
                     k: int = Query(10, ge=1, le=MAX_K, description="Number of results."),
                     filter: list[str] = Query([], description="field=value or field=value1,value2 (repeatable), "
                                                                "e.g. gender=Men"),
                     attributes: str = Query("auto", pattern="^(auto|off)$", description=(
                         "auto: the photo's category and colours (attribute tagger, mapped to catalogue values) "
                         "re-rank the hits; off: plain similarity.")),
                     crop: str = Query("auto", description=f"What of the photo to search with: {CROP_HELP}.")
                     ) -> JSONResponse:
        """The ``k`` catalogue items most similar to the photo, best first, with scores and metadata; with
        ``steered_by`` (the attributes that re-ranked them) or a ``note`` saying why none did; ``crop`` says which
        box of the photo was searched (pixels of the upright image) and whether ``auto`` found no garment and fell
        back to the whole photo (``fallback``, with the ``reason``)."""
        pipeline.require("search")
        filters = parse_filters(filter, pipeline.index)
        try:
            spec = CropSpec.parse(crop)
        except ConfigError as error:
            raise HTTPException(422, f"query parameter 'crop': {error}") from error
        result = await answer(image, search_tasks(attributes), k, filters, spec)
        if attributes == "auto" and "steered_by" not in result and pipeline.steering_note:
            result["note"] = pipeline.steering_note
        return JSONResponse(_with_image_urls(result))

    @app.get("/v1/items/{item_id:path}/similar", tags=["catalogue"], responses=_ERRORS)
    async def similar(item_id: str, k: int = Query(10, ge=1, le=MAX_K, description="Number of results."),
                      filter: list[str] = Query([], description="field=value[,value], as for /v1/search")
                      ) -> JSONResponse:
        """The ``k`` catalogue items most similar to catalogue item ``item_id`` (never itself)."""
        pipeline.require("similar")
        filters = parse_filters(filter, pipeline.index)
        return JSONResponse(_with_image_urls(await run_in_threadpool(pipeline.similar, item_id, k, filters)))

    @app.get("/v1/items/{item_id:path}/image", tags=["catalogue"], responses=_ERRORS,
             response_class=FileResponse)
    async def item_image(item_id: str, size: int | None = Query(None, ge=16, le=2048, description=(
            "Shrink so the long side is at most this many pixels (JPEG); default: the original file."))) -> Response:
        """The catalogue item's photo."""
        path = pipeline.item_image(item_id)
        headers = {"Cache-Control": "public, max-age=3600"}
        if size is None:
            return FileResponse(path, headers=headers)
        return Response(await decoder.submit(partial(_thumbnail, path, size)), media_type="image/jpeg",
                        headers=headers)

    def loaded_audit() -> AuditView:
        if audit is None:
            raise HTTPException(404, "no catalogue audit loaded (start the service with --audit DIR)")
        return audit

    @app.get("/v1/audit", tags=["audit"], responses=_ERRORS)
    async def audit_findings(table: str | None = Query(None, description=f"Only this table: {', '.join(TABLES)}"),
                             limit: int = Query(100, ge=1, le=MAX_AUDIT_ROWS, description="Rows per table.")
                             ) -> dict[str, Any]:
        """A saved catalogue audit (read-only): its summary and the first ``limit`` rows of each finding table."""
        return loaded_audit().findings(table, limit)

    @app.get("/v1/audit/report", tags=["audit"], responses=_ERRORS, response_class=FileResponse)
    async def audit_report() -> FileResponse:
        """The audit's HTML report with thumbnail grids (given vs suggested labels, duplicates, odd photos)."""
        return FileResponse(loaded_audit().file("report.html"), media_type="text/html")

    @app.get("/v1/audit/thumbs/{name}", tags=["audit"], responses=_ERRORS, response_class=FileResponse,
             include_in_schema=False)
    async def audit_thumbnail(name: str) -> FileResponse:
        return FileResponse(loaded_audit().thumbnail(name), media_type="image/jpeg")

    return app


class BodyLimit:
    """ASGI middleware refusing request bodies over ``limit`` bytes with 413, before they are read or spooled.

    A declared ``Content-Length`` over the limit is refused at once; a chunked body is counted while it streams
    in, so no upload can make the server buffer more than ``limit`` bytes.
    """

    def __init__(self, app: ASGIApp, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = f"request body is larger than the {self.limit}-byte limit"
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            await JSONResponse({"detail": detail}, status_code=413, headers={"Connection": "close"})(
                scope, receive, send)
            return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise HTTPException(413, detail)
            return message

        await self.app(scope, counted, send)


class ApiKey:
    """ASGI middleware: every ``/v1/`` request must carry ``key`` (``Authorization: Bearer`` or ``X-API-Key``).

    A missing key is 401, a wrong one 403. Keys are compared in constant time, so response times do not reveal how
    much of a guess was right.
    """

    def __init__(self, app: ASGIApp, key: str):
        self.app = app
        self.key = key.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith("/v1/"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        bearer = headers.get(b"authorization", b"")
        given = bearer[7:].strip() if bearer[:7].lower() == b"bearer " else headers.get(b"x-api-key", b"").strip()
        if given and hmac.compare_digest(given, self.key):
            await self.app(scope, receive, send)
            return
        status, detail = (403, "API key is wrong") if given else (
            401, "API key required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        await JSONResponse({"detail": detail}, status_code=status,
                           headers={"WWW-Authenticate": "Bearer"} if status == 401 else None)(scope, receive, send)


def _call_one(calls: list[Callable[[], Any]]) -> list[Any]:
    """A decode thread's work: the one call of its batch (the decoder's ``max_batch`` is 1)."""
    return [call() for call in calls]


def _status(error: FashionlensError) -> int:
    if isinstance(error, ImageError):
        # ImageError has no subtypes; its messages (fashionlens.data.images) say which problem it is.
        text = str(error)
        if "decompression bomb" in text or text.startswith("image too large"):
            return 413
        return 415 if text.startswith(("not an image", "image format")) else 400
    if isinstance(error, QueueFullError):
        return 503
    if isinstance(error, (ComponentMissingError, UnknownItemError)):
        return 404
    if isinstance(error, CatalogueIndexError):
        return 422
    return 400 if isinstance(error, DataError) else 500


async def _fashionlens_error(_: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, FashionlensError)
    status = _status(error)
    return JSONResponse({"detail": str(error)}, status_code=status,
                        headers={"Retry-After": str(RETRY_AFTER_S)} if status == 503 else None)


async def _validation_error(_: Request, error: Exception) -> JSONResponse:
    """FastAPI's validation errors as one line: ``query parameter 'k': Input should be ...``."""
    assert isinstance(error, RequestValidationError)
    parts = []
    for problem in error.errors():
        location = [str(p) for p in problem.get("loc", ())]
        where = f"{location[0]} parameter '{'.'.join(location[1:])}'" if len(location) > 1 else ".".join(location)
        parts.append(f"{where}: {problem.get('msg', 'invalid')}")
    return JSONResponse({"detail": "; ".join(parts) or "invalid request"}, status_code=422)


def _with_image_urls(result: dict[str, Any]) -> dict[str, Any]:
    for hit in result.get("results", []):
        hit["image_url"] = f"/v1/items/{quote(hit['item_id'], safe='')}/image"
    return result


def _thumbnail(path: Path, size: int) -> bytes:
    buffer = io.BytesIO()
    load_image(path, max_side=size).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()
