"""Errors as RFC 9457 problem details (``application/problem+json``), never as tracebacks.

Every refusal carries ``type``, ``title``, ``status``, ``detail`` and ``code``; ``code`` is the stable,
machine-readable part (the same codes as :class:`mita.vend.errors.VendError` and :class:`mita.sts.StsError`),
``detail`` is for people. Validation problems add ``errors``: where and what, without echoing the input (a
request body may hold a vending key).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from mita.sealing import KeyStoreError
from mita.sts import StsError
from mita.vend.errors import database_failure

from .codes import BY_STATUS, answer

log = logging.getLogger("mita.api")

PROBLEM_JSON = "application/problem+json"
TYPE_PREFIX = "urn:mita:problem:"


class FieldError(BaseModel):
    loc: list[str | int] = Field(description="where: body, query, path or header, then the field's path")
    msg: str = Field(description="what is wrong, for people")
    type: str = Field(description="Pydantic's error type (missing, string_too_long, ...)")


class Problem(BaseModel):
    """An RFC 9457 problem detail; ``code`` is stable, branch on it."""

    type: str = Field(examples=["urn:mita:problem:check_digit_error"], description="urn:mita:problem: and the code")
    title: str = Field(description="the code's title, the same for every answer with that code")
    status: int = Field(description="the HTTP status")
    detail: str = Field(description="what happened in this case, for people (never the input or a key)")
    code: str = Field(examples=["check_digit_error"], description="stable, machine-readable: branch on it")
    errors: list[FieldError] | None = Field(None, description="validation problems (422): where and what")


def title_for(code: str) -> str:
    return answer(code).title


def problem(
    status: int,
    code: str,
    detail: str,
    *,
    headers: Mapping[str, str] | None = None,
    errors: list[dict[str, Any]] | None = None,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": TYPE_PREFIX + code,
        "title": title_for(code),
        "status": status,
        "detail": detail,
        "code": code,
    }
    if errors is not None:
        body["errors"] = errors
    return JSONResponse(body, status_code=status, headers=headers, media_type=PROBLEM_JSON)


def _headers_for(status: int, code: str = "") -> dict[str, str] | None:
    if status == 401:
        return {"WWW-Authenticate": 'Bearer realm="mita"'}
    if status == 503 or code == "in_progress":  # worth retrying soon, with the same Idempotency-Key
        return {"Retry-After": "1"}
    return None


def refusal(exc: StsError) -> JSONResponse:
    """A typed refusal as a problem: its status from the code table, and the headers that status calls for."""
    status = answer(exc.code).status
    return problem(status, exc.code, exc.message, headers=_headers_for(status, exc.code))


async def _sts_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StsError)
    return refusal(exc)


def _field_errors(errors: Sequence[Any]) -> list[dict[str, Any]]:
    """Where and what, never the input itself."""
    return [
        {"loc": [x if isinstance(x, int) else str(x) for x in e.get("loc", ())], "msg": e.get("msg", ""),
         "type": e.get("type", "")}
        for e in errors
    ]  # fmt: skip


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    for e in errors:
        if e.get("type") == "json_invalid":
            reason = (e.get("ctx") or {}).get("error", "JSON decode error")
            where = e.get("loc", ("body", 0))[-1]
            at = f" (at character {where})" if isinstance(where, int) else ""
            return problem(400, "invalid_json", f"the request body is not valid JSON: {reason}{at}")
    fields = _field_errors(errors)
    if errors and all(
        len(e.get("loc", ())) == 2 and e["loc"][0] == "header" and str(e["loc"][1]).lower() == "idempotency-key"
        for e in errors
    ):
        detail = "an Idempotency-Key header of 1..200 characters is required"
        return problem(422, "invalid_idempotency_key", detail, errors=fields)
    detail = "; ".join(f"{'.'.join(str(x) for x in f['loc'])}: {f['msg']}" for f in fields) or "invalid request"
    return problem(422, "invalid_request", detail, errors=fields)


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    status = exc.status_code
    code = BY_STATUS.get(status, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else HTTPStatus(status).phrase
    if detail == "There was an error parsing the body":
        code = "invalid_json"
    headers = dict(exc.headers or {})
    headers.update(_headers_for(status) or {})
    return problem(status, code, detail, headers=headers or None)


def failure_site(exc: BaseException) -> str:
    """Where a database failure happened, for the log line: ``in: <statement>`` (its first 200 characters, never
    its parameters), or, when no statement was running, what failed on the connection. Only the driver error's
    class and SQLSTATE are named: ``str(exc)`` holds the parameters, and libpq's words on a connection string it
    could not parse quote a piece of it (``missing "=" after "<password>"``)."""
    orig = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    sqlstate = getattr(orig, "sqlstate", None) if isinstance(orig, psycopg.Error) else None
    named = type(orig).__name__ + (f", SQLSTATE {sqlstate}" if sqlstate else "")
    lost = isinstance(exc, DBAPIError) and exc.connection_invalidated
    statement = exc.statement if isinstance(exc, DBAPIError) else None  # None when SQLAlchemy was not running one
    if statement:
        return f"in: {statement[:200]}" + (f" (the connection was lost: {named})" if lost else "")
    if isinstance(exc, PoolTimeout):
        return f"waiting for a connection: none was free in the pool within its timeout ({named})"
    if lost:
        return f"outside any statement (a commit, a rollback): the connection was lost ({named})"
    if isinstance(orig, psycopg.Error) and (orig.pgconn is not None or (isinstance(exc, DBAPIError) and not sqlstate)):
        return f"connecting: no connection could be made ({named})"  # refused, unreachable, no such role...
    if isinstance(exc, DBAPIError):
        return f"outside any statement (a commit, a rollback) ({named})"
    return f"with no statement recorded ({named})"  # a driver error raised straight, not through SQLAlchemy


async def _database_error(_: Request, exc: Exception) -> JSONResponse:
    """Transient failures are 503 (retry later), deterministic refusals 500 with their own code; a pool with no
    connection free in time is 503 too (the pool's own ``TimeoutError`` is no driver error)."""
    failure = database_failure(exc)
    log.error("database error %s (%s) %s", failure.code, failure.message, failure_site(exc))
    return refusal(failure)


async def _client_gone(request: Request, _: Exception) -> Response:
    """The client hung up while sending its body: one line in the log, and nothing to answer."""
    log.warning("client disconnected during the request body: %s %s", request.method, request.url.path)
    return Response(status_code=400)


async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
    log.error("unhandled %s", type(exc).__name__)
    return problem(500, "internal_error", "an unexpected error occurred; it has been logged")


_KEYSTORE_DETAIL = {  # what a client is told; the keystore's own message (labels, slots) stays in the log
    "hsm_unavailable": "the HSM is not available; retry later",
    "hsm_not_configured": "this server has no HSM configured (the pkcs11 keystore)",
    "key_exists": "the keystore already holds a key for this supply group and KRN",
}


async def _keystore_error(_: Request, exc: Exception) -> JSONResponse:
    """Key store refusals: the request's (422), a key there already (409), an HSM away (503), or the server's
    key store broken (500, logged)."""
    assert isinstance(exc, KeyStoreError)
    status = answer(exc.code).status
    if status < 500 and exc.code not in _KEYSTORE_DETAIL:
        return problem(status, exc.code, exc.message)
    if status >= 500:
        log.error("key store unusable: %s", exc.code)
    detail = _KEYSTORE_DETAIL.get(exc.code, "the server's key store is not usable; the operator must fix it")
    headers = {"Retry-After": "5"} if exc.code == "hsm_unavailable" else None
    return problem(status, exc.code, detail, headers=headers)


def install(app: FastAPI) -> None:
    app.add_exception_handler(StsError, _sts_error)
    app.add_exception_handler(KeyStoreError, _keystore_error)  # more specific than the StsError handler
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(DBAPIError, _database_error)
    app.add_exception_handler(psycopg.Error, _database_error)
    app.add_exception_handler(PoolTimeout, _database_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(Exception, _unexpected)


def responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for the problems a route can answer with (their codes: :mod:`mita.api.openapi`)."""
    return {s: {"model": Problem, "description": HTTPStatus(s).phrase} for s in statuses}
