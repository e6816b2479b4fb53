"""The vending service over HTTP: the application factory (FastAPI under ``/v1``, OpenAPI at ``/openapi.json``).

A thin shell, in parts: the observer (:mod:`.observe`) gives each request an id, a line in the access log and its
place in ``/metrics`` (:mod:`.metrics`); the gate (:mod:`.gate`) checks the database, the API key, the body's size
and type before any route runs; the routes (:mod:`.routes`, one module per resource) parse, call a service and answer;
the problems (:mod:`.problems`) turn every typed error into an RFC 9457 answer. Roles are enforced by the
services (``caller.require``). Routes are plain ``def``: the services are synchronous and FastAPI runs them in
its thread pool. Vend answers go out as the service built them, without a second validation pass.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi_offline import FastAPIOffline
from sqlalchemy.exc import DBAPIError

from mita import __version__, compose
from mita.settings import Settings
from mita.vend.database import check_durability
from mita.vend.errors import is_transient

from .gate import Gate, Readiness
from .metrics import Metrics
from .observe import Observe
from .openapi import install as install_openapi
from .problems import install as install_problem_handlers
from .routes import ROUTERS

log = logging.getLogger("mita.api")

MAX_BODY = Settings.model_fields["max_body_bytes"].default
#: FastAPI's own OpenTelemetry hooks, off: Mita's observability is its access log and ``/metrics``, and with the hooks
#: on, every request asked OpenTelemetry's global providers whether anyone had configured them (about 20 µs of a
#: vend's CPU). FastAPI releases before the hooks have no such setting.
NO_TELEMETRY: dict[str, Any] = (
    {"telemetry": {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}}
    if "telemetry" in inspect.signature(FastAPI.__init__).parameters
    else {}
)
DOCS_ASSETS = "/docs-assets"  # Swagger UI's and ReDoc's scripts, styles and icon


def create_app(database_url: str | None = None, *, settings: Settings | None = None, check: bool = True) -> FastAPI:
    """The API on ``database_url`` (default: the settings'); refuses a database whose settings could lose a
    confirmed vend.

    A database that cannot be reached yet does not stop the process: it starts, answers ``/readyz`` and every
    ``/v1`` route with 503 until the database is there (and durable, and migrated), then serves.
    """
    runtime = compose.build(settings, database_url=database_url)
    settings, engine, service = runtime.settings, runtime.engine, runtime.services
    if check:
        try:
            check_durability(engine)
        except DBAPIError as exc:
            if not is_transient(exc):
                engine.dispose()
                raise
            log.warning("database not reachable (%s); serving 503 until it is", type(exc.orig).__name__)
        except BaseException:
            engine.dispose()
            raise
    readiness = Readiness(engine)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Few threads per process: a vend mostly waits on the database, and dozens of threads
        # fighting for one interpreter lock cost more CPU than the vends themselves. Scale with
        # worker processes instead (``mita serve --workers``).
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.threads
        runtime.clockcheck.start()
        yield
        runtime.close()

    # the interactive documentation (/docs, /redoc) with its scripts and styles served from the package: it
    # works with no network, and tells no CDN who reads it
    app = FastAPIOffline(
        title="Mita vending API",
        version=__version__,
        description="STS prepayment vending: supply groups, tariffs, customers, meters, vends and their tokens.",
        openapi_url="/openapi.json",
        static_url=DOCS_ASSETS,
        swagger_ui_parameters={"validatorUrl": None},  # Swagger UI would fetch a badge from its validator
        lifespan=lifespan,
        **NO_TELEMETRY,
    )
    metrics = Metrics(engine, service.clock)
    app.add_middleware(
        Gate,
        engine=engine,
        readiness=readiness,
        max_body=settings.max_body_bytes,
        clockcheck=runtime.clockcheck,
        metrics_public=settings.metrics_public,
    )
    routes = [route for router in ROUTERS for route in router.routes]
    app.add_middleware(Observe, routes=routes, metrics=metrics)  # outermost: sees what the gate refuses
    app.state.engine = engine
    app.state.service = service
    app.state.runtime = runtime
    app.state.metrics = metrics
    install_problem_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    install_openapi(app)
    from mita.web.app import PREFIX, create_console  # the console: its own pages, the same runtime

    app.mount(PREFIX, create_console(runtime))
    return app


def app_from_env() -> FastAPI:
    """For ``uvicorn --factory mita.api.app:app_from_env``: everything from the settings (``MITA_*``)."""
    return create_app(settings=Settings())
