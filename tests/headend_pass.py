"""One ``mita worker`` pass over the head-end channel, as the tests that deliver to simulated meters run it."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from sqlalchemy import Engine

from mita.headend.runner import CommandSender
from mita.outbox import Policy, Worker
from mita.vend.callers import Caller
from mita.vend.service import VendingService

#: Retries due at once: a test moves its clock instead of waiting for a backoff.
FAST = Policy(max_attempts=1000, backoff_base=0.001, backoff_max=0.001)


def run_headend(
    engine: Engine, svc: VendingService, actor: Caller, clock: Callable[[], dt.datetime], timeout: float = 2.0
) -> None:
    """Everything due now sent; a meter that answers ``key_changed`` confirms its key change, as ``mita worker``
    has it confirmed (``via="meter"``, by ``actor``)."""
    sender = CommandSender(
        engine, clock=clock, confirm_key_change=lambda drn: svc.confirm_key_change(actor, drn, via="meter"),
        timeout=timeout,
    )  # fmt: skip
    Worker(engine, {"headend": sender}, policy=FAST, clock=clock).run(once=True)
