"""Signing in and out.

The sign-in form has its own CSRF defence, since there is no session yet: a random value in a cookie and the same
in the form (double submit), so another site cannot sign a browser in under an account of its choosing.
"""

from __future__ import annotations

import hmac
import secrets

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response

from mita.vend.errors import VendError

from ..console import HEADERS, Posted, cookie_name, field, go, operators, render, session_token
from ..throttle import Throttle

router = APIRouter()
LOGIN_COOKIE = "mita_login"


def _safe_next(target: str) -> str:
    """Only a path of the console itself: never another site (an open redirect)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


def _form(request: Request, status: int = 200, **context: str) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(
        request, "login.html", status, login_csrf=token,
        next=_safe_next(context.pop("next", request.query_params.get("next", "/"))), **{"name": "", **context},
    )  # fmt: skip
    secure = request.url.scheme == "https"
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="strict", secure=secure, path="/")
    return response


@router.get("/login")
def login_page(request: Request) -> Response:
    if operators(request).session(session_token(request)) is not None:
        return go(request, _safe_next(request.query_params.get("next", "/")))
    return _form(request)


@router.post("/login")
async def login(request: Request) -> Response:
    signins: Throttle = request.app.state.signins
    wait = signins.wait(request.client.host if request.client else "")
    if wait:
        response = _form(request, 429, error=f"Too many sign-in attempts from here: try again in {int(wait) + 1} s.")
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    form = await request.form()
    sent, kept = field(form, "csrf"), request.cookies.get(LOGIN_COOKIE, "")
    name, password, target = field(form, "name"), form.get("password"), field(form, "next")
    if not kept or not hmac.compare_digest(sent.encode(), kept.encode()):
        return _form(request, 403, error="The sign-in form had expired. Please try again.", name=name, next=target)
    if not name or not isinstance(password, str) or not password:
        return _form(request, 422, error="Enter your name and your password.", name=name, next=target)
    try:
        token, _ = await run_in_threadpool(operators(request).login, name, password)
    except VendError as exc:
        return _form(request, 401, error=exc.message, name=name, next=target)
    response = go(request, _safe_next(target or "/"))
    secure = request.url.scheme == "https"
    # a session cookie (gone when the browser closes); the server ends the session after IDLE or ABSOLUTE
    response.set_cookie(cookie_name(request), token, httponly=True, samesite="strict", secure=secure, path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


@router.post("/logout")
def logout(request: Request, session: Posted) -> Response:
    operators(request).logout(session_token(request))
    response = go(request, "/login")
    response.delete_cookie(cookie_name(request), path="/")
    response.headers.update(HEADERS)
    return response
