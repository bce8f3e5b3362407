"""The console's ASGI app: the wiring (settings, facts, actions, the page renderer on `app.state`), the routes
(routes.py) and the handlers that turn every MlctlError into a page that says what failed and what to do (with
the HTTP status its kind deserves)."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from controlplane.console import views
from controlplane.console.actions import Actions
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

# the most specific kind first
STATUS = ((AccessDeniedError, 403, "Refused: nothing was changed"), (NotFoundError, 404, "Not found"),
          (UsageError, 400, "Bad request"), (ConflictError, 409, "Conflict"),
          (UnavailableError, 503, "A source is unavailable"), (CheckFailedError, 422, "A check failed"),
          (MlctlError, 500, "The operation failed"))


def status_of(exc: MlctlError) -> tuple[int, str]:
    return next((code, title) for kind, code, title in STATUS if isinstance(exc, kind))


@dataclass(frozen=True)
class Console:
    """What every route needs, built once per app."""

    settings: ConsoleSettings
    facts: Facts
    actions: Actions

    def page(self, template: str, status: int = 200, **context) -> HTMLResponse:
        common = {"repository": self.settings.repository, "read_only": self.settings.read_only}
        return HTMLResponse(views.render(template, **common, status=status, **context), status_code=status)


def console_of(request: Request) -> Console:
    return request.app.state.console


async def _mlctl_error(request: Request, exc: MlctlError) -> HTMLResponse:
    status, title = status_of(exc)
    back = request.url.path if request.method == "POST" else None
    back = back.rsplit("/", 1)[0].removesuffix("/canary") if back else None
    return console_of(request).page("error.html", status, title=title, message=exc.message, hint=exc.hint or "", back=back)


async def _http_error(request: Request, exc: StarletteHTTPException) -> HTMLResponse:
    missing = exc.status_code == 404
    return console_of(request).page("error.html", exc.status_code, title="Not found" if missing else "Error",
                                    message=f"no page at {request.url.path}" if missing else str(exc.detail),
                                    hint="start from the list of models", back=None)


def create_app(settings: ConsoleSettings) -> FastAPI:
    from controlplane.console.routes import router

    app = FastAPI(title="mlctl console", docs_url=None, redoc_url=None, openapi_url=None)
    facts = Facts(settings)
    app.state.console = Console(settings, facts, Actions(settings, facts.lifecycle))
    app.add_exception_handler(MlctlError, _mlctl_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.include_router(router)
    return app
