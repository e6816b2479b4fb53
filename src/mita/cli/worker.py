"""``mita worker``: send what the outbox holds (receipts, SMS, webhooks) and run its jobs (campaign generation).

Channels go to senders as ``MITA_OUTBOX_SENDERS`` says (``receipt=log,sms=log,webhook=webhook``; see
:mod:`mita.outbox.senders`). Run as many workers as needed, on as many machines: on PostgreSQL they share the
queue without waiting for each other; on SQLite run one. SIGTERM or Ctrl-C stops a worker after its current
batch (a second Ctrl-C at once). ``--status`` prints the queue's depth as JSON; on exit the worker prints what
it did, also as JSON.

Head-end commands for MQTT-native meters are published to the broker of ``MITA_MQTT_URL``
(:mod:`mita.headend.mqttlink`); their acknowledgements are applied by an ack listener this worker runs beside its
dispatchers (a thread: the shared subscription ``$share/<MITA_MQTT_GROUP>-acks/mita/v1/+/ack`` on a persistent
session, which also expires the commands no ack answered by their deadline) when any meter is registered on MQTT,
or with ``--mqtt-acks``. Its client id is ``--mqtt-client-id`` (default ``mita-acks-<host>-0``): give each worker on
one machine its own, so that each takes its own session back when it restarts. The dispatchers start once the
listener is connected (at most :data:`ACKS_CONNECT_S`): a first start's acks are not published to a group with no
subscription yet. Not with ``--once``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from mita.oneline import log_warnings

from .command import emit
from .options import add_database_url, add_json

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from mita.compose import Runtime
    from mita.headend import mqttlink
    from mita.headend.runner import CommandSender

#: How long a worker waits for its ack listener's connection before its dispatchers publish (a broker down at start
#: costs this once; the listener goes on trying).
ACKS_CONNECT_S = 5.0


def _bounded(kind: type[int] | type[float], low: float, high: float | None = None) -> Callable[[str], float]:
    """An option type: a number within [low, high]."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < low or (high is not None and value > high):
            within = f"{low:g} to {high:g}" if high is not None else f"at least {low:g}"
            raise argparse.ArgumentTypeError(f"must be {within} (got {text})")
        return value

    return parse


def add_worker(parser: argparse.ArgumentParser) -> None:
    add_database_url(parser)
    parser.add_argument("--batch-size", type=_bounded(int, 1, 10_000), default=100,
                        help="Rows claimed at a time (default 100).")  # fmt: skip
    parser.add_argument("--poll-interval", type=_bounded(float, 0.01), default=1.0,
                        help="Seconds between looks when nothing is due (default 1).")  # fmt: skip
    parser.add_argument("--once", action="store_true", help="Send what is due now, then exit.")
    parser.add_argument("--channels", help="Comma-separated channels to send (default: all that have a sender).")
    parser.add_argument("--concurrency", type=_bounded(int, 1, 256), default=1,
                        help="Dispatchers in this process, each claiming its own batches: head-end commands wait "
                             "on meters, so many run at once (default 1).")  # fmt: skip
    parser.add_argument("--meter-timeout", type=_bounded(float, 0.05, 300), default=5.0,
                        help="Seconds the head-end waits for a meter's answer (default 5).")  # fmt: skip
    parser.add_argument("--status", action="store_true", help="Print the queue's depth as JSON, and exit.")
    parser.add_argument("--max-attempts", type=_bounded(int, 1, 1000), default=8,
                        help="Tries before a row is parked dead (default 8).")  # fmt: skip
    parser.add_argument("--lease", type=_bounded(float, 0.1), default=60.0,
                        help="Seconds a claim holds its rows; longer than any one send (default 60).")  # fmt: skip
    parser.add_argument("--backoff-base", type=_bounded(float, 0.001), default=30.0,
                        help="Seconds before the first retry (default 30).")  # fmt: skip
    parser.add_argument("--backoff-max", type=_bounded(float, 0.001), default=3600.0,
                        help="Longest wait between tries, seconds (default 3600).")  # fmt: skip
    parser.add_argument("--mqtt-acks", action="store_true",
                        help="Listen for MQTT meters' acknowledgements even before any meter is registered on MQTT "
                             "(by default: when one is).")  # fmt: skip
    parser.add_argument(
        "--mqtt-client-id",
        metavar="ID",
        help="The ack listener's MQTT client id, one per worker (default mita-acks-<host>-0).",
    )
    add_json(parser, always=True)
    parser.set_defaults(handler=worker)


def worker(args: argparse.Namespace) -> None:
    """Dispatch the outbox: claim due rows, send each through its channel's sender, retry with backoff."""
    from mita.outbox import depth

    from . import dbshell

    runtime = _runtime(args.database_url, args.concurrency)
    try:
        with dbshell.refusals():
            if args.status:
                emit(depth(runtime.engine, runtime.clock()), indent=None)
                return
            _dispatch(runtime, args)
    finally:
        runtime.close()


def _runtime(option: str | None, dispatchers: int) -> Runtime:
    """A pooled connection for each dispatcher (each holds one at a time: a claim, a send, a settle): with fewer,
    dispatchers queue for the pool, which closes its overflow connections on check-in and opens new ones at once
    (a PostgreSQL backend started and ended per transaction)."""
    from . import dbshell

    return dbshell.runtime(option, pool_size=max(2, dispatchers))


def _dispatch(runtime: Runtime, args: argparse.Namespace) -> None:
    import logging
    import os
    import signal
    import threading
    from types import FrameType

    from mita import campaign
    from mita.channels import senders as channel_senders
    from mita.headend.runner import CommandSender
    from mita.outbox import (
        DEFAULT_ROUTES,
        CampaignGenerator,
        Counts,
        Policy,
        SenderContext,
        Worker,
        build_senders,
        parse_routes,
        register_kind,
    )
    from mita.settings import OutboxSettings
    from mita.vend.callers import Caller
    from mita.vend.errors import VendError
    from mita.vend.remote import CHANNEL as HEADEND

    engine, services = runtime.engine, runtime.services
    log = logging.getLogger("mita.outbox")
    # the campaign service and the head-end sit above the outbox: the shell composes them
    register_kind("campaign", lambda ctx: CampaignGenerator(ctx.engine, campaign.generate, stopping=ctx.stopping))
    meter = Caller(api_key_id=None, name="head-end", role="admin")

    def confirm(drn: str) -> None:  # the meter answered key_changed: the pending configuration becomes current
        services.confirm_key_change(meter, drn, via="meter")

    publisher = _publisher(runtime.settings.mqtt_url, log)
    register_kind(
        "headend", lambda ctx: CommandSender(ctx.engine, clock=runtime.clock, confirm_key_change=confirm,
                                             timeout=args.meter_timeout, publisher=publisher)
    )  # fmt: skip
    settings = OutboxSettings()
    channels = channel_senders.install(runtime.payments, runtime.settings, register_kind)
    routes = parse_routes(settings.outbox_senders or None, {**DEFAULT_ROUTES, HEADEND: "headend", **channels})
    if args.channels is not None:
        wanted = [c for c in (part.strip() for part in args.channels.split(",")) if c]
        missing = [c for c in wanted if c not in routes]
        if missing or not wanted:
            raise VendError(
                "outbox_misconfigured",
                f"no sender for channel {', '.join(missing) or '(none given)'}: map it in MITA_OUTBOX_SENDERS",
            )
        routes = {c: routes[c] for c in wanted}
    try:
        policy = Policy(max_attempts=args.max_attempts, lease=args.lease, backoff_base=args.backoff_base,
                        backoff_max=args.backoff_max)  # fmt: skip
        policy.check()
    except ValueError as exc:
        raise VendError("invalid_request", str(exc)) from None
    clockcheck = runtime.clockcheck  # compared once now, so that no batch is claimed before a verdict
    clockcheck.measure()
    if args.once:  # a one-shot run on a clock off fails (clock_skew); a long-lived one waits for it, polling
        clockcheck.check()
    stopping = threading.Event()
    senders = build_senders(routes, SenderContext(engine, stopping, settings.sender_env()))
    log_to_stderr()

    def stop(signum: int, _frame: FrameType | None) -> None:
        if stopping.is_set():  # asked twice: now
            raise KeyboardInterrupt
        log.info("%s: stopping after the current batch", signal.Signals(signum).name)
        stopping.set()

    main = threading.current_thread() is threading.main_thread()  # only there can signals be handled
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
    workers = [
        Worker(engine, senders, batch_size=args.batch_size, policy=policy, stopping=stopping, clock=runtime.clock,
               name=f"worker {os.getpid()}" + (f".{i}" if args.concurrency > 1 else ""), clockcheck=clockcheck)
        for i in range(args.concurrency)
    ]  # fmt: skip
    totals, adding = Counts(), threading.Lock()
    listener = None
    if not args.once and HEADEND in routes and (args.mqtt_acks or _any_mqtt(engine)):  # its sweep also re-sends
        settler = CommandSender(engine, clock=runtime.clock, confirm_key_change=confirm, publisher=publisher,
                                resend_after=runtime.settings.mqtt_resend_after,
                                max_sends=runtime.settings.mqtt_max_sends)  # fmt: skip
        listener = _ack_listener(runtime, args, settler, stopping, log)

    if not args.once:
        clockcheck.start()  # stopped by runtime.close()

    def run(w: Worker) -> None:
        done = w.run(once=args.once, poll_interval=args.poll_interval)
        with adding:
            totals.add(done)

    try:
        shown = ", ".join(f"{c}={k}" for c, k in sorted(routes.items()))
        log.info("%s: sending %s; %d dispatcher(s), batches of %d, lease %g s", workers[0].name, shown,
                 args.concurrency, args.batch_size, args.lease)  # fmt: skip
        if len(workers) == 1:
            run(workers[0])
        else:
            threads = [threading.Thread(target=run, args=(w,), name=w.name, daemon=True) for w in workers]
            for t in threads:
                t.start()
            for t in threads:
                while t.is_alive():
                    t.join(0.5)  # in slices, so that a signal reaches the main thread
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        stopping.set()
        if listener is not None:
            listener.join(10)
        if publisher is not None:
            publisher.close()
    log.info("worker %s: stopped: %s", os.getpid(), totals.as_dict())
    emit(totals.as_dict(), indent=None)


def log_to_stderr() -> None:
    """A worker's log (``mita worker``, ``mita worker ingest``): every record at INFO and above on standard error,
    one line each, Python's warnings included (:func:`mita.oneline.log_warnings`: raw, they take two lines), unless
    the process has set up its logging already (a test, a program running the worker). psycopg's and SQLAlchemy's
    records come through this handler too."""
    if logging.getLogger().handlers:
        return
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log_warnings()


def _publisher(url: str, log: logging.Logger) -> mqttlink.Publisher | None:
    """The MQTT publisher of head-end commands (it connects on its first command); None when ``MITA_MQTT_URL`` is
    not a broker URL: MQTT meters' commands then wait, queued, with the reason."""
    from mita.headend import mqttlink
    from mita.headend.mqttclient import MqttError

    try:
        return mqttlink.Publisher(url)
    except MqttError as exc:
        log.warning("no MQTT commands from this worker: %s", exc)
        return None


def _any_mqtt(engine: Engine) -> bool:
    from mita.headend import registry

    return registry.any_mqtt(engine)


def _ack_listener(
    runtime: Runtime, args: argparse.Namespace, settler: CommandSender, stopping: threading.Event,
    log: logging.Logger,
) -> threading.Thread | None:  # fmt: skip
    """The ack listener on its own thread, until ``stopping``; None (a warning) when the URL is not a broker's."""
    from mita.headend import mqttlink
    from mita.headend.mqttclient import MqttError

    try:
        listener = mqttlink.AckListener(
            runtime.settings.mqtt_url, settle=settler.settle, sweep=settler.sweep,
            group=runtime.settings.mqtt_group, client_id=args.mqtt_client_id,
        )  # fmt: skip
    except MqttError as exc:
        log.warning("no MQTT acknowledgements in this worker: %s", exc)
        return None
    thread = threading.Thread(target=listener.run, args=(stopping,), name="mita-acks", daemon=True)
    thread.start()
    try:  # subscribed before the first publish: an ack to a group that never subscribed is dropped by the broker
        listener.session.wait_connected(ACKS_CONNECT_S)
    except MqttError as exc:  # the listener keeps trying; the outbox meanwhile serves every channel
        log.warning("MQTT acknowledgements: %s; listening once connected", exc)
    log.info("listening for MQTT acknowledgements on %s as %s", listener.session.url.shown(),
             listener.session.client_id)  # fmt: skip
    return thread
