"""M-Pesa through Safaricom's Daraja API: the callbacks' bodies (:mod:`.messages`), Mita's client (:mod:`.client`),
the outbox sender of pushes and refunds (:mod:`.senders`), the reconciliation pass (:mod:`.reconcile`), and a fake
Daraja that makes real callbacks with faults (:mod:`.fake`). The routes are in ``mita.api.routes.mpesa_hooks``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mita.settings import Settings

from ..payments import Payments

PROVIDER = "mpesa"


def install(payments: Payments, settings: Settings, register: Callable[..., Any]) -> dict[str, str]:
    """With ``MITA_MPESA_URL`` set: the ``mpesa`` sender for pushes and refunds."""
    if not settings.mpesa_url:
        return {}
    from ..hooks import HookSecret
    from .client import Credentials, Daraja
    from .senders import REFUND, STK, DarajaSender

    daraja = Daraja(settings.mpesa_url, Credentials.from_settings(settings))
    hooks = HookSecret.from_settings(settings)
    register("mpesa", lambda ctx: DarajaSender(payments, daraja, hooks, settings.public_url, payments.clock))
    return {STK: "mpesa", REFUND: "mpesa"}
