"""The console's ASGI app: routes that ask `facts`/`panels`, render a template, and turn every MlctlError into a
page that says what failed and what to do (with the HTTP status its kind deserves)."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from controlplane.console import panels, views
from controlplane.console.actions import CSRF_COOKIE, Actions, new_token
from controlplane.console.facts import Facts
from controlplane.console.settings import ConsoleSettings
from controlplane.errors import (
    AccessDeniedError,
    CheckFailedError,
    ConflictError,
    MlctlError,
    NotFoundError,
    UnavailableError,
    UsageError,
)

MAX_FORM_BYTES = 16 * 1024
# the most specific kind first
STATUS = ((AccessDeniedError, 403, "Refused: nothing was changed"), (NotFoundError, 404, "Not found"),
          (UsageError, 400, "Bad request"), (ConflictError, 409, "Conflict"),
          (UnavailableError, 503, "A source is unavailable"), (CheckFailedError, 422, "A check failed"),
          (MlctlError, 500, "The operation failed"))


def status_of(exc: MlctlError) -> tuple[int, str]:
    return next((code, title) for kind, code, title in STATUS if isinstance(exc, kind))


def create_app(settings: ConsoleSettings) -> FastAPI:
    app = FastAPI(title="mlctl console", docs_url=None, redoc_url=None, openapi_url=None)
    facts = Facts(settings)
    actions = Actions(settings, facts.lifecycle)
    common = {"repository": settings.repository, "read_only": settings.read_only}

    def page(template: str, status: int = 200, **context) -> HTMLResponse:
        return HTMLResponse(views.render(template, **common, status=status, **context), status_code=status)

    @app.exception_handler(MlctlError)
    async def mlctl_error(request: Request, exc: MlctlError) -> HTMLResponse:
        status, title = status_of(exc)
        back = request.url.path if request.method == "POST" else None
        back = back.rsplit("/", 1)[0].removesuffix("/canary") if back else None
        return page("error.html", status, title=title, message=exc.message, hint=exc.hint or "", back=back)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> HTMLResponse:
        return page("error.html", exc.status_code, title="Not found" if exc.status_code == 404 else "Error",
                    message=f"no page at {request.url.path}" if exc.status_code == 404 else str(exc.detail),
                    hint="start from the list of models", back=None)

    @app.get("/healthz", response_class=PlainTextResponse)
    def healthz() -> str:
        return "ok"

    @app.get("/", response_class=HTMLResponse)
    def models() -> HTMLResponse:
        return page("models.html", models=facts.models())

    @app.get("/models/{name}", response_class=HTMLResponse)
    def model(name: str, request: Request) -> HTMLResponse:
        token = request.cookies.get(CSRF_COOKIE) or new_token()
        response = page("model.html", page=facts.model(name), csrf=token, replica_timeout=settings.replica_timeout_s)
        response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path="/")
        return response

    @app.get("/models/{name}/panels/serving", response_class=HTMLResponse)
    def serving(name: str) -> HTMLResponse:
        settings.open_repository().config(name)  # an unknown model is a 404 here too
        return page("serving.html", panel=panels.serving(settings, name))

    @app.get("/models/{name}/panels/quality", response_class=HTMLResponse)
    def quality(name: str) -> HTMLResponse:
        settings.open_repository().config(name)
        return page("quality.html", panel=panels.quality(settings, name))

    @app.get("/models/{name}/diff", response_class=HTMLResponse)
    def diff(name: str, a: str = "", b: str = "") -> HTMLResponse:
        va, vb = _version(a, "a"), _version(b, "b")
        d = facts.diff(name, va, vb)
        return page("diff.html", d=d, panel=panels.serving(settings, name, [str(va), str(vb)]))

    async def act(request: Request, do, name: str) -> HTMLResponse:
        form = await _form(request)
        outcome = await run_in_threadpool(do, name, form, request.cookies.get(CSRF_COOKIE))
        return page("result.html", outcome=outcome)

    @app.post("/models/{name}/promote", response_class=HTMLResponse)
    async def promote(name: str, request: Request) -> HTMLResponse:
        return await act(request, actions.promote, name)

    @app.post("/models/{name}/rollback", response_class=HTMLResponse)
    async def rollback(name: str, request: Request) -> HTMLResponse:
        return await act(request, actions.rollback, name)

    @app.post("/models/{name}/canary/abort", response_class=HTMLResponse)
    async def abort(name: str, request: Request) -> HTMLResponse:
        return await act(request, actions.abort_canary, name)

    return app


def _version(text: str, which: str) -> int:
    if not text.strip().isdigit():
        raise UsageError(f"version {which}={text!r} is not a version number", hint="compare two versions: ?a=1&b=2")
    return int(text)


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form (one value per field); anything else, or an oversized body, is bad input."""
    kind = request.headers.get("content-type", "").split(";")[0].strip()
    if kind != "application/x-www-form-urlencoded":
        raise UsageError(f"a form was expected, got content type {kind or 'none'!r}", hint="submit the form on the model page")
    body = await request.body()
    if len(body) > MAX_FORM_BYTES:
        raise UsageError(f"the form is {len(body)} bytes, over {MAX_FORM_BYTES}")
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError as exc:
        raise UsageError("the form is not UTF-8") from exc
    return {key: values[-1] for key, values in fields.items()}
