"""``mita worker ingest``: store what meters publish over MQTT (readings, events, status) in the database.

``mita worker`` alone still dispatches the outbox (:mod:`mita.cli.worker`, unchanged): this module defines the
``worker`` command by adding the ``ingest`` sub-command to it. Run as many ingest workers as the stream needs, on
as many machines: they share the MQTT v5 shared subscription ``$share/<group>/...`` (``--group``, default
``MITA_MQTT_GROUP``), and each keeps a persistent session under its client id (``--client-id``, default
``mita-ingest-<host>-<index>``: give each worker on one machine its own ``--index``), so a worker restarted under
the same id gets back what it had not acknowledged. SIGTERM or Ctrl-C stops it after the batch in hand; on exit
it prints what it did as JSON. Design and figures: ``docs/notes/ingest.md``.
"""

from __future__ import annotations

import argparse

from . import command
from .options import add_database_url, add_json
from .worker import _bounded, log_to_stderr
from .worker import add_worker as add_outbox_worker

DOC = """Store what meters publish over MQTT: readings, events, status.

Subscribes to the shared subscriptions of the group (MQTT v5, QoS 1), writes batches (COPY on PostgreSQL), and
acknowledges each message only after its batch committed: a worker killed at any moment loses nothing, and a
message sent again is stored once. Prints what it did as JSON on exit."""


def add_worker(parser: argparse.ArgumentParser) -> None:
    """``mita worker`` (the outbox, :func:`mita.cli.worker.add_worker`) with its ``ingest`` sub-command."""
    add_outbox_worker(parser)
    subs = parser.add_subparsers(title="sub-commands", metavar="[ingest]", parser_class=command.Parser)
    command.command(subs, "ingest", ingest, DOC, add_ingest)


def add_ingest(parser: argparse.ArgumentParser) -> None:
    add_database_url(parser)
    parser.add_argument("--mqtt-url", metavar="URL",
                        help="The broker, mqtt://host:port (default MITA_MQTT_URL). Never with a password in it "
                             "(ps shows it to everyone): put the URL with its password in MITA_MQTT_URL.")  # fmt: skip
    parser.add_argument("--group", help="The shared subscription group (default MITA_MQTT_GROUP, mita-ingest).")
    parser.add_argument("--index", type=_bounded(int, 0, 9999), default=0,
                        help="This worker's number on this machine, in its default client id (default 0).")  # fmt: skip
    parser.add_argument("--client-id", help="The MQTT client id, stable across restarts (default "
                                            "mita-ingest-<host>-<index>).")  # fmt: skip
    parser.add_argument("--batch-size", type=_bounded(int, 1, 20_000), default=500,
                        help="Messages written in one transaction (default 500).")  # fmt: skip
    parser.add_argument("--max-delay", type=_bounded(float, 0.001, 60), default=0.1,
                        help="Seconds a batch waits to fill from its first message (default 0.1).")  # fmt: skip
    parser.add_argument("--receive-maximum", type=_bounded(int, 1, 65_535),
                        help="Messages the broker may send before their acknowledgement: the back-pressure "
                             "window (default twice the batch size).")  # fmt: skip
    parser.add_argument("--session-expiry", type=_bounded(int, 0, 2**32 - 1), default=86_400,
                        help="Seconds the broker keeps this worker's session (and its messages) while it is "
                             "away (default 86400).")  # fmt: skip
    parser.add_argument("--idle-exit", type=_bounded(float, 0.1), metavar="SECONDS",
                        help="Stop after this long without a message (tests, benchmarks).")  # fmt: skip
    add_json(parser, always=True)


def ingest(args: argparse.Namespace) -> None:
    """Run one ingest worker until SIGTERM, Ctrl-C or ``--idle-exit``; print its counts as JSON."""
    import logging
    import os
    import signal
    import threading
    from types import FrameType

    from mita.headend.ingest import IngestWorker, Options
    from mita.headend.mqttclient import MqttError, parse_url, stable_client_id
    from mita.settings import Settings
    from mita.vend.errors import VendError

    from . import dbshell

    settings = Settings()
    try:
        broker = parse_url(args.mqtt_url or settings.mqtt_url)
    except MqttError as exc:  # its message never holds the URL's text
        raise VendError("invalid_request", exc.message) from None
    if args.mqtt_url and broker.password is not None:
        raise VendError("secret_on_command_line",
                        "--mqtt-url holds a password, which every local user sees in ps and shell history: set "
                        "MITA_MQTT_URL instead")  # fmt: skip
    options = Options(
        client_id=args.client_id or stable_client_id("mita-ingest", args.index),
        group=args.group or settings.mqtt_group,
        batch_size=args.batch_size,
        max_delay=args.max_delay,
        receive_maximum=args.receive_maximum,
        session_expiry=args.session_expiry,
        retention_months=settings.readings_retention_months,
        idle_exit=args.idle_exit,
    )
    log_to_stderr()  # the outbox worker's log set-up: Python's warnings one line each too
    log = logging.getLogger("mita.headend.ingest")
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        if stopping.is_set():  # asked twice: now (what is not acknowledged stays with the broker)
            raise KeyboardInterrupt
        log.info("%s: stopping after the current batch", signal.Signals(signum).name)
        stopping.set()

    runtime = dbshell.runtime(args.database_url, pool_size=2)
    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, stop) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
    try:
        with dbshell.refusals():
            worker = IngestWorker(runtime.engine, broker, options, stopping=stopping)
            try:
                counts = worker.run()
            except MqttError as exc:
                raise VendError(exc.code, exc.message) from None
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        runtime.engine.dispose()
    done = counts.as_dict()
    log.info("ingest %s (pid %d): stopped: %s", options.client_id, os.getpid(), done)
    command.emit(done, indent=None)
