"""(in progress)"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mita.settings import Settings

from ..payments import Payments


def install(payments: Payments, settings: Settings, register: Callable[..., Any]) -> dict[str, str]:
    """Register this channel's outbox sender kinds; the routes (outbox channel -> kind) it adds."""
    return {}
