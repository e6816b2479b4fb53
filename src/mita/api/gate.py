"""What a request passes before any route reads its body: a ready database, an API key, a size, a media type.

FastAPI reads a route's body before it resolves the route's dependencies, so a key checked in a
dependency is checked after the whole body is in memory: an unauthenticated 300 MB POST was read whole
before its 401. This ASGI middleware answers from the headers alone, in this order:

| check | refused with |
|---|---|
| the database is reachable, durable and migrated (asked until it is, at most once a second) | 503 (see below) |
| on writes (console too, not callbacks): the clock near the database's (`MITA_MAX_CLOCK_SKEW`) | 503 `clock_skew` |
| an API key (`Authorization: Bearer` or `X-API-Key`) that is valid | 401 `unauthorized` |
| `Content-Length` at most the body limit | 413 `payload_too_large` |
| a body on POST, PUT or PATCH is JSON (`application/json` or `application/*+json`) | 415 `unsupported_media_type` |
| ... but CSV (`text/csv`) on the import routes (``CSV_PATHS``) | 415 `unsupported_media_type` |

The database's refusals are ``database_unavailable``, ``unsafe_database`` or ``schema_outdated``. The gate runs
outside the application's exception handlers, so it types its own database failures (the readiness check's, an
API key's lookup, a pool with no connection free) through ``database_failure``: 503, never a 500 with a traceback.
A body sent without a length (chunked) is counted as it is read, and refused with 413 at the limit.
Paths outside ``/v1`` (documentation, ``/healthz``, ``/readyz``) and ``/v1/health`` pass without a key.
Providers' callbacks (``/hooks/...``: M-Pesa, Kannel, the USSD aggregator) carry no API key either: a secret path
segment authenticates them (checked by their routes, ``mita.channels.hooks``); the gate still asks for a ready
database and holds them to the body limit (their bodies are JSON or forms, as each provider sends). So does the
operator console (``/console``): a signed-in operator's session cookie authenticates its pages (``mita.web``).
``/metrics`` passes without a key while ``MITA_METRICS_PUBLIC`` is true (the default: a Prometheus server on the
private network has none); otherwise it needs an admin or operator key (a vendor's till has no business seeing
the utility's totals), and is refused like a ``/v1`` route.

Once a caller is admitted, the routes in ``DIRECT`` (``POST /v1/vends``, the busiest) are answered by the gate
itself with their route's own code (``mita.api.routes.vends.serve_vend``): the router's matching over every route
and the dependency resolution were a third of a vend's CPU in the server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Awaitable, Callable

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mita.vend import database, registry
from mita.vend.clockcheck import ClockCheck
from mita.vend.errors import VendError, database_failure
from mita.vend.service import Caller

from .problems import problem, refusal
from .routes.vends import serve_vend

OPEN_PATHS = frozenset({"/v1/health"})
HOOKS = "/hooks/"  # providers' callbacks: no key, a secret in the path (mita.channels.hooks)
CONSOLE = "/console"  # the operator console: no key, a session cookie of a signed-in operator (mita.web)
METRICS_PATH = "/metrics"
METRICS_ROLES = ("admin", "operator")  # who may scrape when the metrics are not public
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
CSV_PATHS = frozenset({"/v1/imports/customers", "/v1/imports/meters"})  # their bodies are CSV, not JSON
RECHECK_S = 1.0  # a database that is not ready is asked again at most this often
#: Routes the gate answers itself once it has admitted the caller (the busiest: see ``serve_vend``).
DIRECT: dict[tuple[str, str], Callable[[Scope, Receive, Send, Caller], Awaitable[None]]] = {
    ("POST", "/v1/vends"): serve_vend,
}


class Readiness:
    """Whether the database may serve requests: checked until it is, then trusted (pre-ping does the rest)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.ready = False
        self._lock = threading.Lock()
        self._next_check = 0.0
        self._last_error = VendError("database_unavailable", "the database has not been reached yet")

    def check(self) -> None:
        """Ask the database now (blocking); raises the typed error that keeps the server from serving."""
        with self._lock:
            if self.ready:
                return
            now = time.monotonic()
            if now < self._next_check:
                raise self._last_error
            self._next_check = now + RECHECK_S
            try:
                database.check_ready(self.engine)
            except VendError as exc:
                self._last_error = exc
                raise
            except (DBAPIError, PoolTimeout) as exc:  # check_ready types its connect, not the SHOW statements after
                self._last_error = database_failure(exc)
                raise self._last_error from None
            self.ready = True


def api_key(headers: Headers) -> str | None:
    """The key from ``Authorization: Bearer <key>`` (any case of "Bearer") or ``X-API-Key``."""
    scheme, _, credentials = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and credentials.strip():
        return credentials.strip()
    return headers.get("x-api-key") or None


def is_json(content_type: str) -> bool:
    kind = content_type.split(";", 1)[0].strip().lower()
    return kind == "application/json" or (kind.startswith("application/") and kind.endswith("+json"))


class Gate:
    def __init__(
        self,
        app: ASGIApp,
        *,
        engine: Engine,
        readiness: Readiness,
        max_body: int,
        clockcheck: ClockCheck,
        metrics_public: bool = True,
    ) -> None:
        self.app = app
        self.engine = engine
        self.readiness = readiness
        self.max_body = max_body
        self.clockcheck = clockcheck
        self.metrics_public = metrics_public

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if path.startswith(HOOKS) or path == CONSOLE or path.startswith(CONSOLE + "/"):
            await self._hook(scope, receive, send)
            return
        if not path.startswith("/v1/"):
            if path == METRICS_PATH and not self.metrics_public:
                await self._admit(scope, receive, send, METRICS_ROLES)
            else:
                await self.app(scope, receive, send)
            return
        await self._admit(scope, receive, send)

    async def _admit(self, scope: Scope, receive: Receive, send: Send, roles: tuple[str, ...] = ()) -> None:
        """The request goes on if the database is ready and its key valid (and of one of ``roles``, if given)."""
        headers = Headers(scope=scope)
        try:
            if not self.readiness.ready:
                await run_in_threadpool(self.readiness.check)
            if scope["method"] in BODY_METHODS:
                self.clockcheck.check()  # the last verdict, read: a sale on a skewed clock issues TIDs in the future
            caller = await self._caller(api_key(headers))
            if roles:
                caller.require(*roles)
        except VendError as exc:
            await refusal(exc)(scope, receive, send)
            return
        scope.setdefault("state", {})["caller"] = caller
        refused = self._body_refusal(scope["method"], headers, scope.get("path", ""))
        if refused is not None:
            status, code, detail = refused
            await problem(status, code, detail)(scope, receive, send)
            return
        direct = DIRECT.get((scope["method"], scope.get("path", "")))
        if direct is not None:
            await direct(scope, self._counted(receive), send, caller)
            return
        await self.app(scope, self._counted(receive), send)

    async def _hook(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A provider's callback or a console page: a ready database and the body limit; its route checks the path's
        secret, or the console the operator's session."""
        headers = Headers(scope=scope)
        try:
            if not self.readiness.ready:
                await run_in_threadpool(self.readiness.check)
            if not scope.get("path", "").startswith(HOOKS):  # providers' callbacks only record
                # the console sells, and times its sessions and sign-in lock on this clock (a jump back of 6 h
                # would keep an idle session 6 h longer): closed, reads too, while the clock strays
                self.clockcheck.check("the console is closed")
        except VendError as exc:
            await refusal(exc)(scope, receive, send)
            return
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await problem(413, "payload_too_large", f"request bodies are limited to {self.max_body} bytes")(
                scope, receive, send
            )
            return
        await self.app(scope, self._counted(receive), send)

    def _counted(self, receive: Receive) -> Receive:
        """``receive``, refusing a body (sent without a length) once it passes the limit."""
        total = 0

        async def counted() -> Message:
            nonlocal total
            message = await receive()
            total += len(message.get("body", b""))
            if total > self.max_body:  # the route's exception handlers answer it as a problem
                raise HTTPException(413, f"request bodies are limited to {self.max_body} bytes")
            return message

        return counted

    async def _caller(self, key: str | None) -> Caller:
        caller = registry.cached_caller(self.engine, key)  # no thread, no database for a key seen recently
        if caller is not None:
            return caller
        try:
            return await run_in_threadpool(registry.authenticate, self.engine, key)
        except (DBAPIError, PoolTimeout) as exc:  # the gate runs outside the application's exception handlers
            raise database_failure(exc) from None

    def _body_refusal(self, method: str, headers: Headers, path: str = "") -> tuple[int, str, str] | None:
        length = headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return 413, "payload_too_large", f"request bodies are limited to {self.max_body} bytes"
        has_body = (length is not None and length != "0") or "transfer-encoding" in headers
        if method in BODY_METHODS and has_body and path in CSV_PATHS:
            if headers.get("content-type", "").split(";", 1)[0].strip().lower() != "text/csv":
                return 415, "unsupported_media_type", "the request body must be CSV (Content-Type: text/csv)"
        elif method in BODY_METHODS and has_body and not is_json(headers.get("content-type", "")):
            return 415, "unsupported_media_type", "the request body must be JSON (Content-Type: application/json)"
        return None
