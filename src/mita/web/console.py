"""The console's plumbing: the signed-in operator, CSRF, rendering, and the answers to what goes wrong.

Every page is a plain ``def`` (the services are synchronous; Starlette runs it in its thread pool). A page asks for
``Signed`` (a GET: the session, or a redirect to the sign-in page) or ``Posted`` (a POST: the session, and the form's
``csrf`` field equal to the session's, else 403). Errors of the services (``VendError`` and the token engine's
``StsError``, each with a stable code) are shown on the page that caused them, next to the field they concern, never
as a traceback.

| header | value: why |
|---|---|
| Content-Security-Policy | ``default-src 'self'``, no inline script, no frames: a page runs only Mita's own files |
| Cache-Control | ``no-store``: a receipt left in a shared PC's cache is a token for anyone |
| X-Content-Type-Options, Referrer-Policy | ``nosniff``, ``same-origin`` |
"""

from __future__ import annotations

import datetime as dt
import hmac
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData

from mita.compose import Runtime
from mita.vend.operators import Operators, Session

HERE = Path(__file__).parent
COOKIE = "mita_console"
SECURE_COOKIE = "__Host-mita_console"  # over HTTPS: the browser keeps it to this host and path /, Secure
templates = Jinja2Templates(directory=HERE / "templates")  # autoescape on (Starlette's default)

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}

#: The navigation: (path under /console, label); every page is for admins and operators alike.
NAV = (
    ("/", "Dashboard"),
    ("/meters", "Meters"),
    ("/customers", "Customers"),
    ("/vend", "Vend"),
    ("/vends", "Vends"),
    ("/engineering", "Engineering"),
    ("/doctor", "Token doctor"),
    ("/keys", "Keys"),
    ("/campaigns", "Campaigns"),
    ("/alarms", "Alarms"),
    ("/audit", "Audit"),
)


class SignIn(Exception):
    """No live session: the browser goes to the sign-in page, then back to where it was."""

    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class Refused(Exception):
    """A request the console refuses outright (a POST without its CSRF token): 403, a page saying why."""

    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


def runtime(request: Request) -> Runtime:
    rt: Runtime = request.app.state.runtime
    return rt


def operators(request: Request) -> Operators:
    ops: Operators = request.app.state.operators
    return ops


def cookie_name(request: Request) -> str:
    return SECURE_COOKIE if request.url.scheme == "https" else COOKIE


def session_token(request: Request) -> str | None:
    return request.cookies.get(SECURE_COOKIE) or request.cookies.get(COOKIE)


def signed(request: Request) -> Session:
    """The signed-in operator, or off to the sign-in page."""
    session = operators(request).session(session_token(request))
    if session is None:
        path = request.url.path.removeprefix(request.scope.get("root_path", ""))
        raise SignIn(path + (f"?{request.url.query}" if request.url.query else ""))
    request.state.session = session
    return session


async def posted(request: Request) -> Session:
    """A form sent by a signed-in operator from a page the console rendered (its CSRF token). The form is read here,
    on the event loop, and kept in ``request.state.form``: the pages are plain ``def`` (the services block on the
    database, so they run in the thread pool, never on the loop)."""
    form = await request.form()
    request.state.form = form
    session = await run_in_threadpool(signed, request)
    sent = form.get("csrf")
    if not isinstance(sent, str) or not hmac.compare_digest(sent.encode(), session.csrf.encode()):
        raise Refused(403, "This form is out of date or did not come from the console. Open the page again.")
    return session


Signed = Annotated[Session, Depends(signed)]
Posted = Annotated[Session, Depends(posted)]


def field(form: FormData | Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def render(request: Request, template: str, code: int = 200, /, **context: Any) -> HTMLResponse:
    """A page, with what every template uses: the operator, the navigation, the CSRF token."""
    session: Session | None = getattr(request.state, "session", None)
    base = request.scope.get("root_path", "")
    response = templates.TemplateResponse(
        request,
        template,
        {
            "session": session,
            "csrf": session.csrf if session else "",
            "nav": NAV,
            "base": base,
            "here": request.url.path.removeprefix(base) or "/",
            **context,
        },
        status_code=code,
    )
    response.headers.update(HEADERS)
    return response


def go(request: Request, path: str) -> RedirectResponse:
    """After a POST that did something: to the page that shows it (303: the browser GETs it; a reload repeats
    nothing)."""
    response = RedirectResponse(request.scope.get("root_path", "") + path, status_code=303)
    response.headers.update(HEADERS)
    return response


def to_sign_in(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, SignIn)
    target = "/login" + (f"?next={quote(exc.next_path, safe='/')}" if exc.next_path not in ("", "/") else "")
    return go(request, target)


def refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return render(request, "error.html", exc.status, title="Refused", message=exc.message)


def when(value: dt.datetime | str | None) -> str:
    """A time as an operator reads it: the utility's wall clock, to the minute."""
    if value is None:
        return ""
    if isinstance(value, str):
        try:
            return dt.datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M")
        except ValueError:
            return value
    return value.strftime("%Y-%m-%d %H:%M")


def money(minor: int | None, currency: str = "") -> str:
    if minor is None:
        return ""
    sign = "-" if minor < 0 else ""
    whole, cents = divmod(abs(minor), 100)
    return f"{currency + ' ' if currency else ''}{sign}{whole:,}.{cents:02d}"


def token_groups(digits: str) -> str:
    """20 digits as a customer types them: five groups of four."""
    return " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))


def quantity(units: int | None, utility: str | None = "electricity") -> str:
    """Base units (0.1 kWh, 0.1 m³) as a customer reads them: ``41.1 kWh``."""
    if units is None:
        return ""
    return f"{units // 10}.{units % 10} {'kWh' if (utility or 'electricity') == 'electricity' else 'm³'}"


templates.env.filters.update(when=when, money=money, token=token_groups, quantity=quantity)
