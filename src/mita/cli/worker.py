"""``mita worker``: send what the outbox holds (receipts, SMS, webhooks) and run its jobs (campaign generation).

Channels go to senders as ``MITA_OUTBOX_SENDERS`` says (``receipt=log,sms=log,webhook=webhook``; see
:mod:`mita.outbox.senders`). Run as many workers as needed, on as many machines: on PostgreSQL they share the
queue without waiting for each other; on SQLite run one. SIGTERM or Ctrl-C stops a worker after its current
batch (a second Ctrl-C at once). ``--status`` prints the queue's depth as JSON; on exit the worker prints what
it did, also as JSON.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from types import FrameType
from typing import Annotated

import typer
from sqlalchemy import Engine

from mita import campaign, compose
from mita.outbox import (
    CampaignGenerator,
    Policy,
    SenderContext,
    Worker,
    build_senders,
    depth,
    parse_routes,
    register_kind,
)
from mita.outbox.worker import local_now
from mita.settings import OutboxSettings
from mita.vend import database
from mita.vend.errors import VendError

from .dbshell import UrlOpt, _url, refusals

log = logging.getLogger("mita.outbox")

# the campaign service sits above the outbox: the shell composes the two
register_kind("campaign", lambda ctx: CampaignGenerator(ctx.engine, campaign.generate, stopping=ctx.stopping))


def worker(
    database_url: UrlOpt = None,
    batch_size: Annotated[int, typer.Option(min=1, max=10_000, help="Rows claimed at a time.")] = 100,
    poll_interval: Annotated[float, typer.Option(min=0.01, help="Seconds between looks when nothing is due.")] = 1.0,
    once: Annotated[bool, typer.Option("--once", help="Send what is due now, then exit.")] = False,
    channels: Annotated[
        str | None, typer.Option(help="Comma-separated channels to send (default: all that have a sender).")
    ] = None,
    status: Annotated[bool, typer.Option("--status", help="Print the queue's depth as JSON, and exit.")] = False,
    max_attempts: Annotated[int, typer.Option(min=1, max=1000, help="Tries before a row is parked dead.")] = 8,
    lease: Annotated[
        float, typer.Option(min=0.1, help="Seconds a claim holds its rows; longer than any one send.")
    ] = 60.0,
    backoff_base: Annotated[float, typer.Option(min=0.001, help="Seconds before the first retry.")] = 30.0,
    backoff_max: Annotated[float, typer.Option(min=0.001, help="Longest wait between tries, seconds.")] = 3600.0,
) -> None:
    """Dispatch the outbox: claim due rows, send each through its channel's sender, retry with backoff."""
    engine = compose.build(database_url=_url(database_url), pool_size=2).engine
    try:
        with refusals():
            database.check_ready(engine)
            if status:
                typer.echo(json.dumps(depth(engine, local_now())))
                return
            _dispatch(engine, batch_size, poll_interval, once, channels, max_attempts, lease, backoff_base, backoff_max)
    finally:
        engine.dispose()


def _dispatch(
    engine: Engine,
    batch_size: int,
    poll_interval: float,
    once: bool,
    channels: str | None,
    max_attempts: int,
    lease: float,
    backoff_base: float,
    backoff_max: float,
) -> None:
    settings = OutboxSettings()
    routes = parse_routes(settings.outbox_senders or None)
    if channels is not None:
        wanted = [c for c in (part.strip() for part in channels.split(",")) if c]
        missing = [c for c in wanted if c not in routes]
        if missing or not wanted:
            raise VendError(
                "outbox_misconfigured",
                f"no sender for channel {', '.join(missing) or '(none given)'}: map it in MITA_OUTBOX_SENDERS",
            )
        routes = {c: routes[c] for c in wanted}
    try:
        policy = Policy(max_attempts=max_attempts, lease=lease, backoff_base=backoff_base, backoff_max=backoff_max)
        policy.check()
    except ValueError as exc:
        raise VendError("invalid_request", str(exc)) from None
    stopping = threading.Event()
    senders = build_senders(routes, SenderContext(engine, stopping, settings.sender_env()))
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )

    def stop(signum: int, _frame: FrameType | None) -> None:
        if stopping.is_set():  # asked twice: now
            raise KeyboardInterrupt
        log.info("%s: stopping after the current batch", signal.Signals(signum).name)
        stopping.set()

    main = threading.current_thread() is threading.main_thread()  # only there can signals be handled
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
        w = Worker(engine, senders, batch_size=batch_size, policy=policy, stopping=stopping)
        shown = ", ".join(f"{c}={k}" for c, k in sorted(routes.items()))
        log.info("%s: sending %s; batches of %d, lease %g s", w.name, shown, batch_size, lease)
        totals = w.run(once=once, poll_interval=poll_interval)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    log.info("%s: stopped: %s", w.name, totals.as_dict())
    typer.echo(json.dumps(totals.as_dict()))
