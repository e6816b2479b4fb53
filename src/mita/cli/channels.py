"""``mita channels``: payments through the channels, the reconciliation with M-Pesa, and a fake Daraja.

``reconcile`` runs the pass of :mod:`mita.channels.mpesa.reconcile` (queries of unanswered pushes, the pull of recent
transactions, held payments verified or flagged, refunds of unvendable payments), the SMS delivery sweep and the
settling of tills' unconfirmed purchases, once or every few seconds; it needs ``MITA_MPESA_URL`` and Daraja's
credentials (``MITA_MPESA_*``). ``payments`` and ``payment`` read what the operators' API (``/v1/payments``)
shows. ``fake-daraja`` serves the fake Daraja that the tests and the demo use, with its faults.
"""

from __future__ import annotations

import argparse

from .command import command, emit, group, say, show_fields
from .headend import runtime_of, shown
from .listing import show_table
from .options import add_database_url, add_json

COLUMNS = ("id", "created_at", "provider", "kind", "provider_ref", "meter", "amount", "status", "detail")


def add_commands(parser: argparse.ArgumentParser) -> None:
    commands = group(parser)
    p = command(commands, "reconcile", reconcile, "Compare payments with M-Pesa's records and repair the gaps.")
    p.add_argument("--every", type=float, metavar="S", help="Run a pass every S seconds until stopped (default: once).")
    p.add_argument("--once", action="store_true", help="One pass (the default).")
    p.add_argument("--window-hours", type=float, default=2, metavar="H", help="How far back the pull reaches (2).")
    add_database_url(p)
    add_json(p)
    p = command(commands, "payments", list_payments, "Payments, newest first (the latest 50), filtered.")
    p.add_argument("--status", help="Only payments in this state (received, vended, delivered, flagged...).")
    add_database_url(p)
    add_json(p)
    p = command(commands, "payment", show_payment, "One payment, with everything the provider said about it.")
    p.add_argument("payment_id", type=int, metavar="ID")
    add_database_url(p)
    add_json(p)
    p = command(commands, "fake-daraja", fake_daraja, "Serve a fake Daraja (tests, demos) until Ctrl-C.")
    p.add_argument("--port", type=int, default=8089, help="Its port on 127.0.0.1 (8089).")
    p.add_argument("--seed", type=int, default=1, help="The seed of its faults.")
    p.add_argument("--duplicate-rate", type=float, default=0.0, help="Share of callbacks sent twice.")
    p.add_argument("--drop-rate", type=float, default=0.0, help="Share of callbacks never sent.")
    p.add_argument("--delay-ms", type=int, default=0, help="Callbacks wait up to this long (they overtake each other).")


def reconcile(args: argparse.Namespace) -> None:
    import datetime as dt
    import time

    from mita.channels.hooks import HookSecret
    from mita.channels.mpesa.client import Credentials, Daraja
    from mita.channels.mpesa.reconcile import Policy
    from mita.channels.mpesa.reconcile import reconcile as one_pass
    from mita.channels.pos import settle_unconfirmed
    from mita.channels.sms import reports
    from mita.vend.errors import VendError

    from .dbshell import refusals

    runtime = runtime_of(args)
    settings = runtime.settings
    if not settings.mpesa_url:
        raise VendError("channels_misconfigured", "reconciliation with M-Pesa needs MITA_MPESA_URL")
    daraja = Daraja(settings.mpesa_url, Credentials.from_settings(settings))
    policy = Policy(window=dt.timedelta(hours=args.window_hours))
    hooks = HookSecret.from_settings(settings)
    results = None  # where Daraja posts Transaction Status results: only with callbacks on
    if hooks.enabled and settings.public_url:
        results = (hooks.path(settings.public_url, "ke1/result"), hooks.path(settings.public_url, "ke1/timeout"))
    try:
        while True:
            with refusals():
                done = one_pass(runtime.payments, daraja, policy, results).as_dict()
                done["sms"] = reports.sweep(runtime.payments).__dict__
                # tills that never confirmed: settled once a reversal could no longer be accepted anyway
                now = runtime.clock()
                done["pos_settled"] = settle_unconfirmed(runtime.engine, now - runtime.services.reversal_window, at=now)
            if args.json:
                emit(done, indent=None)
            else:
                say(" ".join(f"{k}={v}" for k, v in done.items()))
            if args.every is None:
                return
            time.sleep(args.every)
    finally:
        daraja.close()


def list_payments(args: argparse.Namespace) -> None:
    from sqlalchemy import select

    from mita.vend.schema import payments

    q = select(*(payments.c[c] for c in COLUMNS)).order_by(payments.c.id.desc()).limit(50)
    if args.status:
        q = q.where(payments.c.status == args.status)
    with runtime_of(args).engine.connect() as conn:
        rows = [dict(r._mapping) for r in conn.execute(q)]
    if args.json:
        emit(shown(rows))
        return
    show_table(COLUMNS, ([r[c] for c in COLUMNS] for r in shown(rows)), right=("id", "amount"))


def show_payment(args: argparse.Namespace) -> None:
    from sqlalchemy import select

    from mita.vend.schema import payment_events

    from .dbshell import refusals

    runtime = runtime_of(args)
    with refusals():
        found = runtime.payments.get(args.payment_id)
    with runtime.engine.connect() as conn:
        events = conn.execute(
            select(payment_events.c.at, payment_events.c.source, payment_events.c.body)
            .where(payment_events.c.payment_id == args.payment_id)
            .order_by(payment_events.c.id)
        ).all()
    found["events"] = [dict(e._mapping) for e in events]
    if args.json:
        emit(shown(found))
        return
    show_fields(f"Payment {args.payment_id}", {k: v for k, v in shown(found).items() if k != "events"})
    for e in found["events"]:
        say(f"  {e['at']}  {e['source']}")


def fake_daraja(args: argparse.Namespace) -> None:
    import threading

    from mita.channels.mpesa import fake

    served = fake.serve(args.port, fake.Faults(args.duplicate_rate, args.drop_rate, args.delay_ms, args.seed))
    say(f"fake Daraja on {served.url} (shortcode {fake.SHORTCODE}); Ctrl-C to stop")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        served.stop()
