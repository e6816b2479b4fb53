"""SMS through Kannel: the outbox sender (:mod:`.kannel`), delivery reports and the sweep (:mod:`.reports`),
what customers can ask (:mod:`.inbound`), and Kannel on loopback with its fake SMSC (:mod:`.box`). The routes are
in ``mita.api.routes.sms_hooks``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mita.settings import Settings

from ..payments import Payments


def install(payments: Payments, settings: Settings, register: Callable[..., Any]) -> dict[str, str]:
    """With ``MITA_KANNEL_URL`` set: every SMS (tokens, answers, low credit, key changes) leaves through Kannel."""
    if not settings.kannel_url:
        return {}
    from ..hooks import HookSecret
    from .kannel import KannelSender

    password = settings.kannel_password.get_secret_value() if settings.kannel_password is not None else ""
    hooks = HookSecret.from_settings(settings)

    def make(ctx: Any) -> KannelSender:
        return KannelSender(ctx.engine, settings.kannel_url, settings.kannel_user, password, settings.sms_from,
                            hooks, settings.public_url, payments.clock)  # fmt: skip

    register("kannel", make)
    return {"sms": "kannel"}
