"""``mita sms``: SMS through Kannel, the configuration a utility starts its Kannel from and the delivery sweep.

``kannel-config`` writes the layout verified with Debian's Kannel 1.4.5 (:func:`mita.channels.sms.box.config`):
bearerbox and smsbox on 127.0.0.1, the queue in a store file, inbound SMS to Mita's hook (``MITA_PUBLIC_URL`` and
the callback secret) with ``max-messages = 0``, and Kannel's fake SMSC where the operator's SMPP link goes. The file
holds the sendsms password and the callback secret: it is written readable by its owner only, and neither is
printed anywhere else. ``sweep`` marks messages that never got a final report ``unknown`` and flags payments whose
token SMS was never confirmed delivered (``mita channels reconcile`` runs it too).
"""

from __future__ import annotations

import argparse

from .command import command, emit, fail, group, note, say
from .options import add_database_url, add_json

#: Kannel's own default ports, from ``--port-base`` 13000: admin, smsbox, sendsms and the SMSC link.
PORTS = {"admin": 0, "smsbox": 1, "sendsms": 13, "smsc": 14}


def add_commands(parser: argparse.ArgumentParser) -> None:
    commands = group(parser)
    p = command(commands, "kannel-config", kannel_config, "Write a Kannel configuration for Mita (kannel.conf).")
    p.add_argument("--out", metavar="FILE", help="Write it here, readable by its owner only (default: stdout).")
    p.add_argument("--port-base", type=int, default=13000, metavar="N",
                   help="Ports: admin N, smsbox N+1, sendsms N+13, SMSC N+14 (Kannel's defaults: 13000).")  # fmt: skip
    p.add_argument("--folder", default="/var/spool/kannel", metavar="DIR",
                   help="Kannel's store file and logs (/var/spool/kannel).")  # fmt: skip
    p = command(commands, "sweep", sweep, "Close SMS that never got a final report, flag unconfirmed payments.")
    p.add_argument("--report-hours", type=float, default=1.0, metavar="H",
                   help="A message with no final report after H hours is unknown (1).")  # fmt: skip
    p.add_argument("--confirm-hours", type=float, default=24.0, metavar="H",
                   help="A vended payment not confirmed delivered after H hours is flagged (24).")  # fmt: skip
    add_database_url(p)
    add_json(p)


def kannel_config(args: argparse.Namespace) -> None:
    import os
    from pathlib import Path

    from mita.channels.hooks import HookSecret
    from mita.channels.sms.box import config
    from mita.settings import ChannelSettings
    from mita.vend.errors import VendError

    settings = ChannelSettings()
    if not 1024 <= args.port_base <= 65535 - max(PORTS.values()):
        fail("usage", "--port-base must leave its four ports between 1024 and 65535")
    password = settings.kannel_password.get_secret_value() if settings.kannel_password is not None else ""
    if not password:
        raise VendError("channels_misconfigured", "set MITA_KANNEL_PASSWORD: Kannel's sendsms user gets the same")
    if settings.kannel_user != "mita":
        raise VendError("channels_misconfigured", "the configuration's sendsms user is mita: unset MITA_KANNEL_USER")
    mo_url = HookSecret.from_settings(settings).path(settings.public_url, "kannel/mo")
    ports = {name: args.port_base + offset for name, offset in PORTS.items()}
    text = config(mo_url=mo_url, folder=Path(args.folder), password=password, **ports)
    if args.out is None:
        say(text.rstrip("\n"))
    else:
        fd = os.open(args.out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            os.fchmod(out.fileno(), 0o600)  # an existing file keeps no wider mode
            out.write(text)
        note(f"wrote {args.out} (it holds the sendsms password and the callback secret)")
    note(f"Mita sends through it with MITA_KANNEL_URL=http://127.0.0.1:{ports['sendsms']}; replace the fake SMSC "
         f"group with the operator's link; start bearerbox, then smsbox, with the file")  # fmt: skip


def sweep(args: argparse.Namespace) -> None:
    import datetime as dt

    from mita.channels.sms import reports

    from .dbshell import refusals
    from .headend import runtime_of

    runtime = runtime_of(args)
    with refusals():
        done = reports.sweep(runtime.payments, report_within=dt.timedelta(hours=args.report_hours),
                             confirm_within=dt.timedelta(hours=args.confirm_hours))  # fmt: skip
    if args.json:
        emit({"unknown": done.unknown, "flagged": done.flagged}, indent=None)
    else:
        say(f"unknown={done.unknown} flagged={done.flagged}")
