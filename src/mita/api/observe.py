"""Every request, seen once on its way out: a request id, an access log line, and the counts behind ``/metrics``.

The outermost middleware (outside :mod:`.gate`), so what the gate refuses is logged and counted too. Per request:

* **a request id**: the caller's ``X-Request-ID`` if it is a plain token (1–128 letters, digits and ``._:+/=-``),
  else a new one; sent back in the ``X-Request-ID`` header of every answer, problems included, and added to every
  log line written while the request runs (:data:`mita.api.logs.REQUEST_ID`);
* **one access log line** (``mita.access``): method, path (never the query string: a mistaken ``?api_key=``
  stays out of the logs), status, duration in ms, request id, the API key's id if the gate authenticated one
  (never the key);
* **counts** (:class:`mita.api.metrics.Metrics`): by route template (``/v1/meters/{drn}``, not the meter number,
  so that the number of series stays small), vends by kind and outcome, problems by their ``code``.

A problem's code is read from its body (``application/problem+json``, a few hundred bytes): the only place every
refusal passes, whichever handler wrote it. The rest is a few dictionary look-ups per request.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Sequence

from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .logs import REQUEST_ID
from .metrics import Metrics

access = logging.getLogger("mita.access")

HEADER = b"x-request-id"
VALID_ID = re.compile(rb"[A-Za-z0-9._:+/=-]{1,128}")
PROBLEM_JSON = b"application/problem+json"
UNMATCHED = "(unmatched)"  # the route label of a path no route serves (scanners would make a series each)


def request_id(scope: Scope) -> str:
    """The caller's ``X-Request-ID`` if it is a plain token, else a new random one (32 hex digits)."""
    for name, value in scope.get("headers", ()):
        if name == HEADER:
            return value.decode("ascii") if VALID_ID.fullmatch(value) else os.urandom(16).hex()
    return os.urandom(16).hex()  # 32 hex digits, as a UUID's hex (in a tenth of the time), all random


class Observe:
    """The outermost ASGI middleware: request id, access line and counts for every HTTP request."""

    def __init__(self, app: ASGIApp, *, routes: Sequence[BaseRoute], metrics: Metrics) -> None:
        self.app = app
        self.routes = routes  # the API's routes, to name those of the requests the gate refused
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = request_id(scope)
        token = REQUEST_ID.set(rid)
        status = 500
        problem: bytearray | None = None

        async def observed(message: Message) -> None:
            nonlocal status, problem
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [*message.get("headers", ()), (HEADER, rid.encode("ascii"))]
                message = {**message, "headers": headers}
                if any(k == b"content-type" and v.startswith(PROBLEM_JSON) for k, v in headers):
                    problem = bytearray()
            elif problem is not None and message["type"] == "http.response.body":
                problem += message.get("body", b"")
            await send(message)

        try:
            await self.app(scope, receive, observed)
        finally:
            # an exception here goes on to the outermost handler, which answers 500 internal_error
            code = "internal_error" if status == 500 and problem is None else _code(problem)
            self._done(scope, status, time.perf_counter() - started, rid, code)
            REQUEST_ID.reset(token)

    def _done(self, scope: Scope, status: int, seconds: float, rid: str, code: str | None) -> None:
        method: str = scope["method"]
        route = self._route(scope)
        self.metrics.observe(method, route, status, seconds, code)
        if not access.isEnabledFor(logging.INFO):
            return
        caller = scope.get("state", {}).get("caller")
        key_id = getattr(caller, "api_key_id", None)
        path = (scope.get("raw_path") or scope["path"].encode()).partition(b"?")[0]  # never the query string
        shown = path.decode("latin-1")  # as sent, still %-escaped: no control character reaches the log
        if shown.startswith("/hooks/"):  # a provider's callback: its last segment is the secret that admits it
            shown = shown.rstrip("/").rpartition("/")[0] + "/***"
        ms = round(seconds * 1000, 1)
        access.info(
            "%s %s %d %.1fms rid=%s key=%s", method, shown, status, ms, rid, key_id if key_id is not None else "-",
            extra={"fields": {"method": method, "path": shown, "route": route, "status": status, "duration_ms": ms,
                              "key_id": key_id, "code": code}},
        )  # fmt: skip

    def _route(self, scope: Scope) -> str:
        """The template of the route that answered (``/v1/vends/{vend_id}``); found here for a request the gate
        refused before the router saw it."""
        route = scope.get("route")
        if route is None:
            for candidate in self.routes:
                match, _ = candidate.matches(scope)
                if match is not Match.NONE:
                    route = candidate
                    break
        path = getattr(route, "path", None)
        return path if isinstance(path, str) else UNMATCHED


def _code(body: bytearray | None) -> str | None:
    """The ``code`` of a problem body."""
    if not body:
        return None
    try:
        code = json.loads(body).get("code")
    except (ValueError, AttributeError):
        return None
    return code if isinstance(code, str) else None
