"""What the channels' routes stand on: the app's payment pipeline and the callback secret, made once per app."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request

from mita.channels.hooks import HookSecret
from mita.channels.payments import Payments
from mita.compose import Runtime


def runtime_of(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def payments_of(request: Request) -> Payments:
    return runtime_of(request).payments


def hooks_of(request: Request) -> HookSecret:
    state: Any = request.app.state
    hooks: HookSecret | None = getattr(state, "hooks", None)
    if hooks is None:
        hooks = state.hooks = HookSecret.from_settings(runtime_of(request).settings)
    return hooks


Pay = Annotated[Payments, Depends(payments_of)]
Hooks = Annotated[HookSecret, Depends(hooks_of)]


def checked_secret(secret: str, hooks: Hooks) -> str:
    """The path's callback secret, checked before the route's query and body are validated: a wrong secret is a
    404 whatever else the request holds (a 422 listing the missing fields would tell a prober the route is there)."""
    hooks.check(secret)
    return secret


Secret = Annotated[str, Depends(checked_secret)]
