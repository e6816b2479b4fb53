"""The composition root: one place builds what a process runs on — its settings, its database engine, its
clock and its services — for the API, the command line and the workers alike.

Nothing below this reads the environment or the wall clock for itself: the settings are read here (once), the
clock is handed to every service (and to the outbox worker and the head-end's command sender, through
:attr:`Runtime.clock`), and the keystores are opened by the keyring the services share.

The runtime also holds the process's :class:`~mita.vend.clockcheck.ClockCheck` on that same clock, built but not
started: a long-lived process (``mita serve``'s workers, ``mita worker``) starts it, and :meth:`Runtime.close`
stops it; a one-shot command never pays for its thread.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from mita.settings import Settings
from mita.vend.callers import local_now
from mita.vend.clockcheck import ClockCheck
from mita.vend.database import make_engine
from mita.vend.service import VendingService

if TYPE_CHECKING:
    from mita.channels.payments import Payments


@dataclass(frozen=True)
class Runtime:
    settings: Settings
    engine: Engine
    services: VendingService
    clockcheck: ClockCheck

    @property
    def clock(self) -> Callable[[], dt.datetime]:
        return self.services.clock

    @functools.cached_property
    def payments(self) -> Payments:
        """The channels' payment pipeline (built on first use: most processes never take a payment)."""
        from mita.channels.payments import Payments

        s = self.settings
        return Payments(self.services, currency=s.currency, unverified_cap=s.mpesa_unverified_cap)

    def close(self) -> None:
        self.clockcheck.stop()
        self.engine.dispose()


def build(
    settings: Settings | None = None,
    *,
    database_url: str | None = None,
    clock: Callable[[], dt.datetime] = local_now,
    pool_size: int | None = None,
) -> Runtime:
    """A process's runtime: the database named by ``database_url`` (a command's option) or the settings."""
    settings = settings or Settings()
    engine = make_engine(database_url or settings.database_url, pool_size=pool_size or settings.threads)
    services = VendingService(
        engine,
        clock=clock,
        reversal_window=dt.timedelta(hours=settings.reversal_window_hours),
        warn_days=settings.key_warn_days,
        delivery_expiry=dt.timedelta(hours=settings.delivery_expiry_hours),
    )
    return Runtime(settings, engine, services, ClockCheck(engine, clock, settings.max_clock_skew))
