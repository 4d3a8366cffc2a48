"""The web app: the draw-a-digit page (a letter or an item for other data sets) and the JSON API, over
bin/predict's own preprocessing and report.

    GET  /                 the page (page/index.html, page.js, page.css: no other files are served)
    GET  /api/info         the run, its config, classes, test accuracy and the server's limits
    POST /api/predict      an image, as the raw body (with its image content type) or a multipart form
                           field -> the fields of `bin/predict --json`; ?number=1 reads a row of digits,
                           ?preprocessed=1 adds the 28x28 images the model saw, ?top_k=K (1-10, default 3),
                           ?min_confidence=P (0-1) marks less certain digits uncertain

Every error is a JSON object {"error": "one line"} with a 4xx status (503 when the queue is full).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import logging
import os
from importlib import resources
from typing import Any

import anyio.to_thread
import numpy as np
from PIL import Image
from starlette.applications import Starlette
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from mnist_jax.data import catalog
from mnist_jax.errors import (
    ImageError,
    ImageTooLarge,
    NoInk,
    NotAnImage,
    PayloadTooLarge,
    RequestError,
    UnsupportedMediaType,
)
from mnist_jax.inference import report
from mnist_jax.inference.files import MAX_PIXELS
from mnist_jax.inference.inputs import framing_of, read_inputs
from mnist_jax.inference.ranking import top_k
from mnist_jax.serving.batching import PredictQueue

MAX_BYTES = 10 * 2**20  # a request body larger than this is refused (413)
# The raw-body content types accepted: those of the formats bin/predict reads.
IMAGE_TYPES = frozenset({"image/png", "image/jpeg", "image/jpg", "image/pjpeg", "image/bmp", "image/x-ms-bmp",
                         "image/gif", "image/tiff", "image/webp"})
IMAGE_STATUS = {NotAnImage: 400, ImageTooLarge: 413, NoInk: 422}
PAGE_FILES = {"/": ("index.html", "text/html; charset=utf-8"), "/page.js": ("page.js", "text/javascript"),
              "/page.css": ("page.css", "text/css")}
log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Limits:
    max_bytes: int = MAX_BYTES  # per request body
    max_pixels: int = MAX_PIXELS  # per decoded image


@dataclasses.dataclass(frozen=True)
class Options:
    """A predict request's query parameters."""

    number: bool = False
    preprocessed: bool = False
    top_k: int = 3
    min_confidence: float = 0.0


def parse_options(query: dict[str, str]) -> Options:
    """Returns the Options in a request's query; raises RequestError naming a bad or unknown parameter."""
    known = {field.name for field in dataclasses.fields(Options)}
    if unknown := sorted(set(query) - known):
        raise RequestError(f"unknown query parameter {unknown[0]!r}; known: {', '.join(sorted(known))}")

    def flag(name: str) -> bool:
        value = query.get(name, "0").lower()
        if value not in ("0", "1", "true", "false"):
            raise RequestError(f"{name}={value!r} must be 1 or 0")
        return value in ("1", "true")

    def number(name: str, kind: type, low: float, high: float, default: float) -> Any:
        try:
            value = kind(query.get(name, default))
        except ValueError:
            value = None
        if value is None or not low <= value <= high:
            kind_name = "an integer" if kind is int else "a number"
            raise RequestError(f"{name}={query[name]!r} must be {kind_name} from {low} to {high}")
        return value

    return Options(number=flag("number"), preprocessed=flag("preprocessed"),
                   top_k=number("top_k", int, 1, 10, 3), min_confidence=number("min_confidence", float, 0, 1, 0.0))


async def read_body(request: Request, max_bytes: int) -> bytes:
    """Returns the request body; raises PayloadTooLarge as soon as it exceeds `max_bytes`."""
    too_large = PayloadTooLarge(f"the request body is larger than the {max_bytes:,}-byte limit")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise too_large
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_bytes:
            raise too_large
    return bytes(body)


async def uploaded_image(request: Request, max_bytes: int) -> tuple[bytes, str | None]:
    """Returns (the image's bytes, its file name or None) from a raw image body or a multipart form."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type not in IMAGE_TYPES and media_type != "multipart/form-data":
        raise UnsupportedMediaType(
            f"content type {media_type or 'none'!r} is not an image: send the file with its image type "
            "(such as image/png) or as a multipart/form-data field")
    body = await read_body(request, max_bytes)
    if media_type != "multipart/form-data":
        return body, None

    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        async with Request(request.scope, replay).form(max_fields=16, max_files=1) as form:
            upload = next((value for value in form.values() if isinstance(value, UploadFile)), None)
            if upload is None:
                raise RequestError("the form has no file field: send the image as a file (curl -F image=@FILE)")
            return await upload.read(), upload.filename or None
    except HTTPException as error:  # the multipart parser's own complaint (malformed, too many parts)
        raise RequestError(f"cannot read the form: {error.detail}") from None


def png_data_url(image: np.ndarray) -> str:
    """A uint8 (28, 28, 1) image as a data:image/png;base64 URL."""
    buffer = io.BytesIO()
    Image.fromarray(image[:, :, 0]).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def answer(digits: list[np.ndarray], probabilities: np.ndarray, name: str | None, options: Options,
           classes: tuple[str, ...]) -> dict:
    """The JSON fields of one prediction (see `report.json_fields`), with the images the model saw if asked."""
    result = report.Result(name, top_k(probabilities, options.top_k), classes)
    fields = report.json_fields(result, options.number, options.min_confidence)
    if options.preprocessed:
        urls = [png_data_url(image) for image in digits]
        if options.number:
            for digit, url in zip(fields["digits"], urls, strict=True):
                digit["preprocessed"] = url
        else:
            fields["preprocessed"] = urls[0]
    return fields


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(queue: PredictQueue, info: dict[str, Any], limits: Limits = Limits()) -> Starlette:
    """Returns the ASGI app answering through `queue` (started by the caller); `info` is /api/info's body
    (the server's limits are added to it), with the model's "data" set and its "classes"."""
    classes, framing = tuple(info["classes"]), framing_of(info["data"])
    info = {**info, "noun": catalog.get(info["data"]).noun}
    page = resources.files("mnist_jax.serving") / "page"
    files = {path: (page.joinpath(name).read_bytes(), media_type) for path, (name, media_type) in PAGE_FILES.items()}
    # Preprocessing is CPU-bound Python and SciPy under one GIL, beside the event loop and the model: on 2
    # cores, 8 clients got 156 answers/s from 1 preprocessing thread, 113-125 from 2, 94 from 40.
    preprocessing = anyio.CapacityLimiter(max(1, (os.cpu_count() or 2) // 2))
    info = {**info, "limits": {"max_bytes": limits.max_bytes, "max_pixels": limits.max_pixels,
                               "queue_capacity": queue.capacity, "batch_sizes": list(queue.batch_sizes)}}

    async def page_file(request: Request) -> Response:
        content, media_type = files[request.url.path]
        return Response(content, media_type=media_type, headers={"Cache-Control": "no-cache"})

    async def api_info(request: Request) -> JSONResponse:
        return JSONResponse(info)

    async def api_predict(request: Request) -> JSONResponse:
        try:
            options = parse_options(dict(request.query_params))
            with queue.admit():
                data, name = await uploaded_image(request, limits.max_bytes)
                digits = await anyio.to_thread.run_sync(read_inputs, data, options.number, limits.max_pixels, name,
                                                        framing, limiter=preprocessing)
                probabilities = await queue.predict(np.stack(digits))
                return JSONResponse(answer(digits, probabilities, name, options, classes))
        except RequestError as error:
            return error_response(error.status, str(error))
        except ImageError as error:
            return error_response(IMAGE_STATUS.get(type(error), 400), str(error))

    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        if error.status_code == 404:
            return error_response(404, f"no such path: {request.url.path}")
        if error.status_code == 405:
            return error_response(405, f"{request.method} is not allowed on {request.url.path}")
        return error_response(error.status_code, str(error.detail))

    async def server_error(request: Request, error: Exception) -> JSONResponse:
        log.exception("error answering %s %s", request.method, request.url.path)
        return error_response(500, f"internal error ({type(error).__name__}); the server log has the details")

    routes = [Route(path, page_file, methods=["GET"]) for path in files]
    routes += [Route("/api/info", api_info, methods=["GET"]), Route("/api/predict", api_predict, methods=["POST"])]
    return Starlette(routes=routes, exception_handlers={HTTPException: http_error, Exception: server_error})
