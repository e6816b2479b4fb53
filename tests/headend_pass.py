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

#: Long enough for a loaded CI host: a retry is due only after the test's frozen clock moves, so an exchange cut
#: short by a tight limit failed the test (a disconnect took 2.9 s once with 2.0 s here). Nothing in these tests
#: waits for it to run out: a meter that is not there refuses the connection at once.
PATIENT_S = 15.0


def run_headend(
    engine: Engine, svc: VendingService, actor: Caller, clock: Callable[[], dt.datetime], timeout: float = PATIENT_S
) -> None:
    """Everything due now sent; a meter that answers ``key_changed`` confirms its key change, as ``mita worker``
    has it confirmed (``via="meter"``, by ``actor``)."""
    sender = CommandSender(
        engine, clock=clock, confirm_key_change=lambda drn: svc.confirm_key_change(actor, drn, via="meter"),
        timeout=timeout,
    )  # fmt: skip
    Worker(engine, {"headend": sender}, policy=FAST, clock=clock).run(once=True)
