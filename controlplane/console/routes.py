"""The console's routes: each asks `facts`/`panels` or an action, and renders one template."""

from __future__ import annotations

from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, PlainTextResponse
from starlette.concurrency import run_in_threadpool

from controlplane.console import panels
from controlplane.console.actions import CSRF_COOKIE, new_token
from controlplane.console.app import console_of
from controlplane.errors import UsageError

MAX_FORM_BYTES = 16 * 1024
router = APIRouter()


@router.get("/healthz", response_class=PlainTextResponse)
def healthz() -> str:
    return "ok"


@router.get("/", response_class=HTMLResponse)
def models(request: Request) -> HTMLResponse:
    console = console_of(request)
    return console.page("models.html", models=console.facts.models())


@router.get("/models/{name}", response_class=HTMLResponse)
def model(name: str, request: Request) -> HTMLResponse:
    console = console_of(request)
    token = request.cookies.get(CSRF_COOKIE) or new_token()
    response = console.page("model.html", page=console.facts.model(name), csrf=token,
                            replica_timeout=console.settings.replica_timeout_s)
    response.set_cookie(CSRF_COOKIE, token, httponly=True, samesite="strict", path="/")
    return response


@router.get("/models/{name}/panels/serving", response_class=HTMLResponse)
def serving(name: str, request: Request) -> HTMLResponse:
    console = console_of(request)
    console.settings.open_repository().config(name)  # an unknown model is a 404 here too
    return console.page("serving.html", panel=panels.serving(console.settings, name))


@router.get("/models/{name}/panels/quality", response_class=HTMLResponse)
def quality(name: str, request: Request) -> HTMLResponse:
    console = console_of(request)
    console.settings.open_repository().config(name)
    return console.page("quality.html", panel=panels.quality(console.settings, name))


@router.get("/models/{name}/diff", response_class=HTMLResponse)
def diff(name: str, request: Request, a: str = "", b: str = "") -> HTMLResponse:
    console = console_of(request)
    va, vb = _version(a, "a"), _version(b, "b")
    return console.page("diff.html", d=console.facts.diff(name, va, vb),
                        panel=panels.serving(console.settings, name, [str(va), str(vb)]))


async def _act(request: Request, action: str, name: str) -> HTMLResponse:
    console = console_of(request)
    form = await _form(request)
    outcome = await run_in_threadpool(getattr(console.actions, action), name, form, request.cookies.get(CSRF_COOKIE))
    return console.page("result.html", outcome=outcome)


@router.post("/models/{name}/promote", response_class=HTMLResponse)
async def promote(name: str, request: Request) -> HTMLResponse:
    return await _act(request, "promote", name)


@router.post("/models/{name}/rollback", response_class=HTMLResponse)
async def rollback(name: str, request: Request) -> HTMLResponse:
    return await _act(request, "rollback", name)


@router.post("/models/{name}/canary/abort", response_class=HTMLResponse)
async def abort(name: str, request: Request) -> HTMLResponse:
    return await _act(request, "abort_canary", name)


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
