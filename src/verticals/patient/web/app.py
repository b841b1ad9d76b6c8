"""`verticals patient serve`: the assistant as one web page and a small JSON API (FastAPI).

The server keeps nothing: the page sends the report with each question, and nothing a person
types is written to disk or to the logs (a log line has a request id, the route, the status, the
theme and timings). Every request is bounded before any work (body size and arrival time, at most
`max_open` at once, field lengths), every error has one JSON shape (`{"error": {"message", ...}}`,
shared with `verticals llm serve`), and the model drafts one answer at a time: an answer that
waits longer than `model_wait` seconds for it gets the template answer instead of an error.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from verticals.llm import APIError, ErrorResponse, RequestLimits, install_error_handlers
from verticals.patient.answer import Answer, answer_stream, check_question
from verticals.patient.compose import Notice
from verticals.patient.config import PatientError
from verticals.patient.examples import examples
from verticals.patient.imaging import WINDOWS, Study, read_upload
from verticals.patient.report import read_report
from verticals.patient.themes import themes
from verticals.patient.web.schemas import (
    ExampleList,
    ExampleOut,
    ExampleSummary,
    ImageInfo,
    QuestionIn,
    ReportIn,
    ReportView,
    ServerSettings,
    ThemeList,
    ThemeOut,
)
from verticals.patient.web.upload import PDF_SECONDS, upload_text
from verticals.patient.web.view import report_view

log = logging.getLogger("verticals.patient.web")
STATIC = resources.files("verticals.patient.web") / "static"
#: what the page may load and run: only its own files; no inline script, no framing, no plugins
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; connect-src 'self' blob:; "
       "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'")
#: suggested questions shown per theme
SUGGESTIONS = 3


@dataclass(frozen=True)
class WebSettings:
    """What one server allows.

    Args:
        max_upload_bytes (`int`): largest request body, an uploaded report file included; larger gets a 413.
        model_wait (`float`): seconds an answer waits for the model before it gets the template answer.
        model_slots (`int`): drafts generated at once (1 for a local model; more for a server model).
        max_open (`int`): requests with a body open at once; one more gets a 429.
        body_timeout (`float`): seconds a client has to send its request body; then a 408.
        sees_images (`bool`): the model accepts images (an OpenAI-compatible multimodal server): a question
            about where a finding is, or about the picture on screen, sends that picture with the report.
    """

    max_upload_bytes: int = 2 * 1024 * 1024
    model_wait: float = 10.0
    model_slots: int = 1
    max_open: int = 64
    body_timeout: float = 30.0
    sees_images: bool = False

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "model_slots", "max_open"):
            if getattr(self, name) < 1:
                raise PatientError(f"{name} (--{name.replace('_', '-')}) must be at least 1, got "
                                   f"{getattr(self, name)}")
        for name in ("model_wait", "body_timeout"):
            if not getattr(self, name) > 0:
                raise PatientError(f"{name} (--{name.replace('_', '-')}) must be above 0 s, got "
                                   f"{getattr(self, name)}")


class ModelBusy(Exception):
    """The model was busy for longer than the answer may wait."""


class Drafter:
    """The model behind a lock: at most `slots` generations at once, each caller waiting at most `wait` s."""

    def __init__(self, model: Any, slots: int, wait: float) -> None:
        self.model, self.wait = model, wait
        self._slots = threading.BoundedSemaphore(slots)

    def chat(self, *args: Any, **kwargs: Any) -> Any:
        if not self._slots.acquire(timeout=self.wait):
            raise ModelBusy(f"the model stayed busy for {self.wait:g} s")
        try:
            return self.model.chat(*args, **kwargs)
        finally:
            self._slots.release()


@dataclass
class Assistant:
    """What every request shares: the model (or None: templates only) and the theme classifier."""

    drafter: Drafter | None
    classifier: Any
    sees_images: bool = False


def get_assistant(request: Request) -> Assistant:
    return request.app.state.assistant


AssistantDep = Annotated[Assistant, Depends(get_assistant)]
ERRORS: dict[int | str, dict[str, Any]] = {400: {"model": ErrorResponse}, 413: {"model": ErrorResponse},
                                           429: {"model": ErrorResponse}}
router = APIRouter(prefix="/api", responses=ERRORS)


@router.get("/examples", response_model=ExampleList)
def list_examples() -> ExampleList:
    return ExampleList(examples=[ExampleSummary(id=e.id, title=e.title) for e in examples().values()])


@router.get("/examples/{example_id}", response_model=ExampleOut, responses={404: {"model": ErrorResponse}})
def get_example(example_id: str) -> ExampleOut:
    example = examples().get(example_id)
    if example is None:
        raise APIError(404, f"There is no example report '{example_id:.40}'.", code="not_found")
    return ExampleOut(id=example.id, title=example.title, text=example.text)


@router.get("/themes", response_model=ThemeList)
def list_themes() -> ThemeList:
    shown = [t for t in themes().values() if t.id not in ("urgent", "off_topic")]
    return ThemeList(themes=[ThemeOut(id=t.id, name=t.name, description=t.description, verified=t.verified,
                                      suggestions=list(t.examples[:SUGGESTIONS])) for t in shown])


@router.post("/report", response_model=ReportView)
def read(body: ReportIn) -> dict[str, Any]:
    """The report as the page shows it: sentences with their findings and glossary terms marked."""
    return report_view(_read(body.text))


#: the longest side of the picture a model is shown (a CT slice is 512; a portal export may be far larger)
LOOK_SIZE = 1024
_BINARY = {"requestBody": {"required": True, "content": {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary"}}}}}


@router.post("/upload", response_model=ReportView, openapi_extra=_BINARY)
async def upload(request: Request) -> dict[str, Any]:
    """A `.txt` or `.pdf` file's bytes as the body; read in memory, never written anywhere. A PDF is
    read in a child process with a deadline, one at a time (`upload.py`)."""
    data = await request.body()
    if data[:5] == b"%PDF-":
        turn: asyncio.Semaphore = request.app.state.pdf_turn
        try:
            await asyncio.wait_for(turn.acquire(), timeout=PDF_SECONDS)
        except TimeoutError as err:
            raise APIError(429, "Other PDF files are being read; please try again in a moment.",
                           code="busy", headers={"Retry-After": "5"}) from err
        try:
            text = await run_in_threadpool(_upload_text, data)
        finally:
            turn.release()
    else:
        text = _upload_text(data)
    return await run_in_threadpool(lambda: report_view(_read(text, param="file")))


@router.post("/image/info", response_model=ImageInfo, openapi_extra=_BINARY)
async def image_info(request: Request) -> dict[str, Any]:
    """One image file's bytes (a DICOM slice, or a PNG or JPEG): what the viewer needs to order and label
    it. Names, IDs and dates in DICOM tags are never read; nothing is kept."""
    study = await _image(request)
    one = study.slices[0]
    height, width = one.pixels.shape
    return {"kind": "picture" if study.modality == "picture" else "dicom", "modality": study.modality,
            "series": one.series, "image": one.image, "position": one.position, "width": width, "height": height,
            "windows": list(WINDOWS) if study.hounsfield else []}


@router.post("/image/render", response_class=Response, openapi_extra=_BINARY,
             responses={200: {"content": {"image/png": {}}, "description": "the slice as a PNG"}})
async def image_render(request: Request, window: Literal["lung", "mediastinum", "bone"] = "mediastinum") -> Response:
    """One image file's bytes, drawn as a PNG: CT through the `window` asked for."""
    study = await _image(request)
    png = await run_in_threadpool(study.png, 0, window if study.hounsfield else None)
    return Response(png, media_type="image/png")


async def _image(request: Request) -> Study:
    data = await request.body()
    if not data:
        raise APIError(400, "The request has no file in it.", param="file", code="invalid_image")

    def read() -> Study:
        try:
            return read_upload(data)
        except PatientError as err:
            raise APIError(400, _sentence(str(err)), param="file", code="invalid_image") from err
        except Exception as err:  # noqa: BLE001 - a malformed file, whatever the parser trips on: the client's
            log.info("request=%s image unreadable: %s", request.state.request_id, type(err).__name__)
            raise APIError(400, "The file cannot be read as a DICOM slice or a picture.", param="file",
                           code="invalid_image") from err

    return await run_in_threadpool(read)


@router.post("/answer", responses={200: {"content": {"application/x-ndjson": {}},
                                         "description": "one JSON object per line: urgent notices first, then "
                                                        "the answer's text in pieces, then the whole answer"}})
def ask(body: QuestionIn, assistant: AssistantDep, request: Request) -> StreamingResponse:
    """Answer a question about the report, streamed as JSON lines (`notice`, `piece`, `answer`)."""
    report = _read(body.report)
    try:
        question = check_question(body.question)
    except PatientError as err:
        raise APIError(400, _sentence(str(err)), param="question", code="invalid_question") from err
    image = _picture(body.image) if body.image is not None and assistant.sees_images else None
    stream = answer_stream(report, question, model=assistant.drafter, classifier=assistant.classifier, image=image)
    return StreamingResponse(_lines(stream, request.state.request_id), media_type="application/x-ndjson")


@router.get("/settings", response_model=ServerSettings)
def server_settings(assistant: AssistantDep) -> ServerSettings:
    """What this server's model can do: the page says whether the assistant sees the picture on screen."""
    return ServerSettings(sees_images=assistant.sees_images, drafts=assistant.drafter is not None)


def _picture(url: str) -> bytes:
    """The PNG of a `data:image/png;base64,...` URL, checked to be a picture of bounded size."""
    prefix = "data:image/png;base64,"
    if not url.startswith(prefix):
        raise APIError(400, "The image must be a PNG given as a data URL (data:image/png;base64,...).", param="image",
                       code="invalid_image")
    try:
        data = base64.b64decode(url[len(prefix):], validate=True)
        study = read_upload(data, "the image")
    except (binascii.Error, ValueError, PatientError) as err:
        raise APIError(400, "The image is not a PNG picture that can be read.", param="image",
                       code="invalid_image") from err
    return study.png(0, size=LOOK_SIZE)  # re-drawn here, at most LOOK_SIZE a side: pixels this server made


def _lines(stream: Iterator[Notice | str | Answer], request_id: str) -> Iterator[str]:
    started, first, theme, source = time.monotonic(), None, "-", "-"
    try:
        for item in stream:
            if isinstance(item, Notice):
                yield _line({"type": "notice", "kind": item.kind, "text": item.text})
            elif isinstance(item, str):
                first = first if first is not None else time.monotonic() - started
                yield _line({"type": "piece", "text": item})
            else:
                theme, source = item.theme, item.source
                data = item.to_dict()
                data.pop("question")
                data["checks"] = [check["check"] for check in data["checks"]]  # names only: drafts stay here
                yield _line({"type": "answer", **data})
    except Exception as err:  # noqa: BLE001 - the status line is sent: the error goes in the stream
        log.warning("request=%s answer failed: %s", request_id, type(err).__name__)
        yield _line({"type": "error", "message": "The assistant could not finish this answer. Please try again."})
    finally:
        log.info("request=%s theme=%s source=%s first_piece=%s total=%.2fs", request_id, theme, source,
                 "-" if first is None else f"{first:.2f}s", time.monotonic() - started)


def _line(data: dict[str, Any]) -> str:
    return json.dumps(data, ensure_ascii=False) + "\n"


def _read(text: str, param: str = "report") -> Any:
    try:
        return read_report(text)
    except PatientError as err:
        raise APIError(400, _sentence(str(err)), param=param, code="invalid_report") from err


def _upload_text(data: bytes) -> str:
    try:
        return upload_text(data)
    except PatientError as err:
        raise APIError(400, _sentence(str(err)), param="file", code="invalid_report") from err


def _sentence(message: str) -> str:
    """The engine's error lines ("the report is empty: ...") as a sentence for a page."""
    message = message[:1].upper() + message[1:]
    return message if message.endswith((".", "?", "!")) else message + "."


class Privacy:
    """Security headers on every response, a request id, and one log line per request without its content."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex[:12]
        scope.setdefault("state", {})["request_id"] = request_id
        started, status = time.monotonic(), 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers += [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                            (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
                            (b"cache-control", b"no-store"), (b"x-request-id", request_id.encode())]
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            log.info("request=%s %s status=%s time=%.2fs", request_id, _route(scope), status,
                     time.monotonic() - started)


def _route(scope: Scope) -> str:
    """The method and path, cut to known ones: anything else a client sends (its text) is not logged."""
    method = scope["method"] if scope["method"] in ("GET", "HEAD", "POST", "OPTIONS") else "(other)"
    path = str(scope.get("path", ""))
    known = ("/", "/api/examples", "/api/themes", "/api/report", "/api/upload", "/api/answer", "/api/image/info",
             "/api/image/render", "/api/settings", "/openapi.json", "/static/app.js", "/static/app.css")
    if path in known:
        return f"{method} {path}"
    return f"{method} {'/api/examples/{id}' if path.startswith('/api/examples/') else '(other path)'}"


def create_app(load: Callable[[], Any], settings: WebSettings | None = None) -> FastAPI:
    """The app; `load()` gives the model (or None: templates only) once, when the server starts."""
    settings = settings or WebSettings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.assistant = await run_in_threadpool(_start, load, settings)
        app.state.pdf_turn = asyncio.Semaphore(1)
        yield

    # no /docs: Swagger UI loads from a CDN, which the page's policy (and this offline tool) refuses;
    # the schema is at /openapi.json
    app = FastAPI(title="verticals patient assistant", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, err: RequestValidationError) -> Response:
        return invalid_request(err.errors()).response()

    app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"), media_type="text/html")

    app.add_middleware(RequestLimits, max_open=settings.max_open, max_bytes=settings.max_upload_bytes,
                       timeout=settings.body_timeout,
                       too_large_hint=f"a report file may be at most {settings.max_upload_bytes / 2**20:g} MB")
    app.add_middleware(Privacy)
    return app


def _start(load: Callable[[], Any], settings: WebSettings) -> Assistant:
    """Load the model and the classifier, and answer once, so the first person does not wait for loading."""
    from verticals.patient.classify import classifier

    model = load()
    drafter = None if model is None else Drafter(model, settings.model_slots, settings.model_wait)
    assistant = Assistant(drafter, classifier(), sees_images=settings.sees_images and drafter is not None)
    warm = read_report("FINDINGS: A 4 mm nodule in the right upper lobe. No pleural effusion.")
    for _ in answer_stream(warm, "What is a nodule?", model=None, classifier=assistant.classifier):
        pass
    return assistant


def invalid_request(errors: Any) -> APIError:
    """The first of pydantic's errors as one 400 a person can read, naming the field."""
    first: dict[str, Any] = errors[0] if errors else {"loc": (), "msg": "invalid request", "type": "invalid"}
    loc = [p for p in first.get("loc", ()) if p != "body"]
    field = str(loc[-1]) if loc else ""
    kind = str(first.get("type", "invalid"))
    given = first.get("input")
    if kind == "string_too_long" and isinstance(given, str):
        limit = (first.get("ctx") or {}).get("max_length", 0)
        message = f"The {field} has {len(given):,} characters; the most read is {limit:,}."
    elif kind == "json_invalid":
        message, field = "The request body is not valid JSON.", ""
    elif kind == "missing" and not field:
        message = "The request needs a JSON body."
    elif kind == "missing":
        message = f"The request needs '{field}'."
    elif kind == "string_unicode":
        message = f"The {field} holds characters that are not text (a lone UTF-16 surrogate)."
    elif kind == "extra_forbidden":
        message = f"Unknown field '{field:.40}'."
    else:
        reason = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        message = f"Invalid '{field or 'body'}': {reason}."
    return APIError(400, message, param=field or None, code=kind)
