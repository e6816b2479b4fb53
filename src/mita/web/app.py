"""The console as an application of its own, mounted by the API's factory under ``/console``: its own pages,
static files and error pages (HTML, not the API's JSON problems), the same process, database and services."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.types import Scope

from mita.compose import Runtime
from mita.sts.errors import StsError
from mita.vend.errors import VendError
from mita.vend.operators import Operators

from .console import HERE, Refused, SignIn, refused, render, to_sign_in
from .pages import ROUTERS
from .throttle import Throttle

PREFIX = "/console"
log = logging.getLogger("mita.web")


class Static(StaticFiles):
    """Mita's own scripts, styles and icons: cached by the browser for an hour, never fetched from elsewhere."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers["Cache-Control"] = "public, max-age=3600"
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response


def _service_error(request: Request, exc: Exception) -> Response:
    """A service's refusal that no page caught for a field of its own: a page saying what and why, 4xx."""
    assert isinstance(exc, VendError | StsError)
    status = 404 if exc.code == "not_found" else 403 if exc.code == "forbidden" else 422
    return render(request, "error.html", status, title="Not done", message=exc.message)


def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    title = "Not found" if exc.status_code == 404 else "Not done"
    message = "There is no such page." if exc.status_code == 404 else str(exc.detail)
    return render(request, "error.html", exc.status_code, title=title, message=message)


async def _client_gone(request: Request, _: Exception) -> Response:
    """The browser hung up while sending a form: one line in the log, nothing to answer, nothing done."""
    log.warning("client disconnected during the request body: %s %s", request.method, request.url.path)
    return Response(status_code=400)


def _unexpected(request: Request, exc: Exception) -> Response:
    """A fault of Mita's own: a plain page and one log line, never a traceback shown to the operator."""
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
    return render(request, "error.html", 500, title="Something went wrong", message="It has been logged.")


def create_console(runtime: Runtime) -> FastAPI:
    console = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, title="Mita console")
    console.state.runtime = runtime
    console.state.operators = Operators(runtime.engine, runtime.clock)
    # sign-in tries per client address: on top of the lock after 5 wrong passwords for a name (in the database)
    rate = runtime.settings.console_signins_per_minute
    console.state.signins = Throttle(per_minute=rate, burst=max(1, int(rate)))
    console.mount("/static", Static(directory=HERE / "static"), name="static")
    console.add_exception_handler(SignIn, to_sign_in)
    console.add_exception_handler(Refused, refused)
    console.add_exception_handler(VendError, _service_error)
    console.add_exception_handler(StsError, _service_error)
    console.add_exception_handler(HTTPException, _http_error)
    console.add_exception_handler(ClientDisconnect, _client_gone)
    console.add_exception_handler(Exception, _unexpected)
    for router in ROUTERS:
        console.include_router(router)
    return console
