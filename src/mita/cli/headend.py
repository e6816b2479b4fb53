"""``mita headend``: connect a meter, send it commands, see what came of them (issue 12).

Thin shells over :mod:`mita.headend` (the registry and the commands the HTTP API's ``/v1/meters/{drn}/connection``
and ``/v1/meters/{drn}/commands`` use), acting as the system administrator on ``--database-url``, which must exist
and be migrated (exit 3 otherwise). ``mita worker`` runs the commands; ``command --wait`` watches one until the
meter answered, for a person who runs the worker beside it.

The meter's LLS secret comes from ``--secret-file`` or ``--secret-env`` (never the command line:
:mod:`mita.cli.secrets`), and is never printed: the answers say only whether there is one. ``--json`` prints what
the API answers (times in RFC 3339 with the utility's offset); ``command`` always answers in JSON.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from .command import command, emit, fail, group, note, say, show_fields
from .listing import page_size, positive, show_table
from .options import add_choice, add_database_url, add_json, add_key_source

if TYPE_CHECKING:
    from mita import compose

#: As ``mita.headend.commands.OPERATOR_KINDS``, ``LOGS`` and ``mita.vend.lifecycles.CommandStatus`` (a test
#: checks): listed here so that defining the options imports no service.
KINDS = ("disconnect", "reconnect", "set_power_limit", "set_tariff_rate", "read_registers", "read_events", "set_clock")
LOGS = ("standard", "fraud", "disconnector", "token")
STATUSES = ("queued", "sent", "acknowledged", "failed", "expired")
FINAL = frozenset({"acknowledged", "failed", "expired"})
ENCODINGS = ("bcd", "ascii")
#: As ``mita.vend.lifecycles.Transport``.
TRANSPORTS = ("dlms", "mqtt")
#: LLS secrets are 1 to 32 octets, as hex.
SECRET_DIGITS = tuple(range(2, 65, 2))
#: How often ``--wait`` reads the command again, and how long it waits when no time is given.
POLL_S = 0.2
WAIT_S = 60.0
#: How many of its commands ``show`` lists.
SHOWN = 10
COLUMNS = ("id", "created_at", "kind", "status", "attempts", "finished_at", "error")
#: The detection's periodic rules (``mita.headend.detect.RULES``; a test checks).
RULES = ("bypass", "leak", "silent", "clock_drift", "low_credit")


def add_commands(parser: argparse.ArgumentParser) -> None:
    commands = group(parser)
    command(commands, "register", register, "Connect a meter, or change its endpoint: where it answers over "
            "DLMS/COSEM, its management secret, how its token gateway takes tokens.\n\nThe meter's keys, TIDs and "
            "history are unchanged. Without a secret the head-end reads the meter over the public client only "
            "(no tokens, no switching). Audited, without the secret.", _register_options)  # fmt: skip
    command(commands, "unregister", unregister, "Back to keypad-only delivery: the meter's endpoint is forgotten "
            "(commands still queued fail not_connected when their turn comes).", _drn_options)  # fmt: skip
    command(commands, "show", show, f"A meter's endpoint (or keypad only) and its last {SHOWN} commands.",
            _drn_options)  # fmt: skip
    command(commands, "command", send, "Queue a command for a connected meter; mita worker runs it. Prints the "
            "command as JSON.\n\nset_power_limit and set_tariff_rate are STS management tokens: the token is issued "
            "now (a TID, in the meter's history) and delivered remotely. With --wait, reads the command every "
            f"{POLL_S} s until the meter answered (acknowledged: exit 0) or not (failed or expired, or still not "
            "done when the wait ends: exit 1; the JSON's status says which).", _command_options)  # fmt: skip
    command(commands, "commands", list_commands, "A meter's commands, newest first.", _list_options)
    command(commands, "detect", detect, "Run the detection over the stored telemetry: alarms for bypass, leaks, "
            "silent meters and clock drift, and one SMS per low-credit forecast through the outbox.\n\nOne pass by "
            "default (--once), or one every --every seconds until interrupted. Each pass prints a JSON summary (one "
            "line per pass with --every): meters looked at, findings per rule, alarms opened and repeated, messages "
            "queued. A condition still seen counts on its open alarm; a person closes alarms (mita alarms close).",
            _detect_options)  # fmt: skip


def _drn(p: argparse.ArgumentParser) -> None:
    p.add_argument("drn", metavar="DRN", help="The meter's number, with its check digit.")


def _drn_options(p: argparse.ArgumentParser) -> None:
    _drn(p)
    add_database_url(p)
    add_json(p)


def _register_options(p: argparse.ArgumentParser) -> None:
    _drn(p)
    add_choice(p, "--transport", values=TRANSPORTS, default="dlms",
               help="dlms (default): the meter answers at --host/--port; mqtt: an MQTT-native meter on the broker "
                    "(--host/--port default to MITA_MQTT_URL's; no secret).")  # fmt: skip
    p.add_argument("--host", help="The meter's DNS name or IP address (mqtt: the broker's). Required for dlms.")
    p.add_argument("--port", type=int, help="Its TCP port (4059: the DLMS/COSEM port). Required for dlms.")
    add_key_source(p, "secret", "the management association's LLS secret, hex (1 to 32 octets)")
    add_choice(p, "--token-encoding", values=ENCODINGS, default="bcd",
               help="How its token gateway takes a token: packed BCD (default) or 20 ASCII digits.")  # fmt: skip
    p.add_argument("--client", type=int, default=1, metavar="N", help="Management client address (default 1).")
    p.add_argument("--server", type=int, default=1, metavar="N", help="Logical device address (default 1).")
    add_database_url(p)
    add_json(p)


def _logs(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    wrong = [name for name in names if name not in LOGS]
    if not names or wrong:
        raise argparse.ArgumentTypeError(f"invalid logs: {text!r} (a comma-separated list of {', '.join(LOGS)})")
    return names


def _rules(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    wrong = [name for name in names if name not in RULES]
    if not names or wrong:
        raise argparse.ArgumentTypeError(f"invalid rules: {text!r} (a comma-separated list of {', '.join(RULES)})")
    return list(dict.fromkeys(names))


def _command_options(p: argparse.ArgumentParser) -> None:
    _drn(p)
    add_choice(p, "kind", values=KINDS, help="What to do.")
    p.add_argument("--value", type=int, metavar="N", help="set_power_limit: watts; set_tariff_rate: the rate.")
    p.add_argument("--logs", type=_logs, metavar="LOG,...", help=f"read_events: which logs ({', '.join(LOGS)}); "
                   "default all.")  # fmt: skip
    p.add_argument("--expires-in", type=positive, metavar="SECONDS", help="Give up after this long (default the "
                   "delivery expiry, MITA_DELIVERY_EXPIRY_HOURS; management tokens always take it).")  # fmt: skip
    p.add_argument("--wait", type=float, nargs="?", const=WAIT_S, metavar="SECONDS",
                   help=f"Wait until the meter answered, at most this long (default {WAIT_S:.0f} s).")  # fmt: skip
    add_database_url(p)
    add_json(p, always=True)


def _list_options(p: argparse.ArgumentParser) -> None:
    _drn(p)
    add_choice(p, "--status", values=STATUSES, help="Only commands in this status.")
    p.add_argument("--limit", type=page_size, default=50, metavar="N", help="At most this many: 1..500, default 50.")
    add_database_url(p)
    add_json(p)


def _detect_options(p: argparse.ArgumentParser) -> None:
    how = p.add_mutually_exclusive_group()
    how.add_argument("--once", action="store_true", help="One pass, then exit (the default).")
    how.add_argument("--every", type=positive, metavar="SECONDS", help="A pass every this many seconds, until "
                     "interrupted (the rules' cadence: hourly, 3600, is what they were tuned at).")  # fmt: skip
    p.add_argument("--interval", type=positive, default=900, metavar="SECONDS",
                   help="The meters' reading interval (default 900: the MQTT format's).")  # fmt: skip
    p.add_argument("--rules", type=_rules, metavar="RULE,...", help=f"Only these rules ({', '.join(RULES)}; default "
                   "all): e.g. leak,silent,low_credit every hour and bypass,clock_drift once a day, the bypass rule's "
                   "four weeks of readings read daily only.")  # fmt: skip
    add_database_url(p)
    add_json(p, always=True)


# ---------------------------------------------------------------------- handlers


def runtime_of(args: argparse.Namespace) -> compose.Runtime:
    from . import dbshell

    return dbshell.runtime(args.database_url)


def shown(value: Any) -> Any:
    """An answer as the API sends it: times in RFC 3339 with the utility's offset."""
    import datetime

    from mita.vend.walltime import with_offset

    if isinstance(value, datetime.datetime):
        return with_offset(value)
    if isinstance(value, dict):
        return {k: shown(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shown(v) for v in value]
    return value


def register(args: argparse.Namespace) -> None:
    from mita.headend import registry
    from mita.vend.registry import SYSTEM

    from . import secrets
    from .dbshell import refusals

    source = secrets.KeySource("secret", args.secret_file, args.secret_env)
    secret = secrets.read_key(source, what="the meter's LLS secret", digits=SECRET_DIGITS, required=False)
    runtime = runtime_of(args)
    host, port = args.host, args.port
    if args.transport == "mqtt" and (host is None or port is None):
        from mita.headend.mqttclient import MqttError, parse_url

        try:
            broker = parse_url(runtime.settings.mqtt_url)
        except MqttError as exc:
            fail(exc.code, f"MITA_MQTT_URL: {exc.message}")
        host, port = host or broker.host, port or broker.port
    if host is None or port is None:
        fail("usage", "--host and --port say where a DLMS meter answers")
    with refusals():
        out = registry.register(
            runtime.engine, SYSTEM, args.drn, host=host, port=port,
            secret=None if secret is None else bytes.fromhex(secret), at=runtime.clock(),
            token_encoding=args.token_encoding, client=args.client, server=args.server, transport=args.transport,
        )  # fmt: skip
    _show_endpoint(shown(out), args.json)


def unregister(args: argparse.Namespace) -> None:
    from mita.headend import registry
    from mita.vend.registry import SYSTEM

    from .dbshell import refusals

    runtime = runtime_of(args)
    with refusals():
        removed = registry.unregister(runtime.engine, SYSTEM, args.drn, runtime.clock())
    if not removed:
        fail("not_connected", f"meter {args.drn} has no communication endpoint (keypad only already)")
    if args.json:
        emit({"meter": args.drn, "connected": False})
    else:
        say(f"meter {args.drn}: keypad only")


def show(args: argparse.Namespace) -> None:
    from mita.headend import commands, registry

    from .dbshell import refusals

    engine = runtime_of(args).engine
    with refusals():
        endpoint = registry.describe(engine, args.drn)
        recent = commands.for_meter(engine, args.drn, limit=SHOWN)
    out = shown({"connection": endpoint, "commands": recent})
    if args.json:
        emit(out)
        return
    if endpoint is None:
        say(f"meter {args.drn}: keypad only")
    else:
        _show_endpoint(out["connection"], False)
    say()
    _show_commands(out["commands"])


def send(args: argparse.Namespace) -> int:
    import datetime

    from mita.headend import commands
    from mita.vend.registry import SYSTEM
    from mita.vend.remote import TOKEN_KINDS

    from . import exits
    from .dbshell import refusals

    if args.expires_in is not None and args.kind in TOKEN_KINDS:
        fail("invalid_request", f"{args.kind} is an STS token, tried for the delivery expiry like a vend's tokens "
             "(MITA_DELIVERY_EXPIRY_HOURS): it takes no --expires-in")  # fmt: skip
    runtime = runtime_of(args)
    params = {k: v for k, v in (("value", args.value), ("logs", args.logs)) if v is not None}
    expiry = runtime.services.ctx.delivery_expiry
    if args.expires_in is not None:
        expiry = datetime.timedelta(seconds=args.expires_in)
    with refusals():
        out = commands.queue(
            runtime.engine, runtime.services.engineering, SYSTEM, args.drn, args.kind, params,
            at=runtime.clock(), expiry=expiry,
        )  # fmt: skip
        if args.wait is not None:
            out = _wait(runtime, out, args.wait)
    emit(shown(out))
    if args.wait is None or out["status"] == "acknowledged":
        return exits.OK
    if out["status"] in FINAL:
        note(f"command {out['id']} {out['status']}: {out['error'] or 'no reason given'}")
    else:
        note(f"command {out['id']} still {out['status']} after {args.wait:g} s (is mita worker running?)")
    return exits.REFUSED


def _wait(runtime: compose.Runtime, out: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The command once it is final, or as it is when ``seconds`` have passed."""
    import time

    from mita.headend import commands

    deadline = time.monotonic() + seconds
    while out["status"] not in FINAL and time.monotonic() < deadline:
        time.sleep(min(POLL_S, max(deadline - time.monotonic(), 0.0)))
        out = commands.get(runtime.engine, out["id"])
    return out


def list_commands(args: argparse.Namespace) -> None:
    from mita.headend import commands

    from .dbshell import refusals

    engine = runtime_of(args).engine
    with refusals():
        out = shown(commands.for_meter(engine, args.drn, limit=args.limit, status=args.status))
    if args.json:
        emit(out)
    else:
        _show_commands(out)


def detect(args: argparse.Namespace) -> None:
    import datetime
    import sys
    import time

    from mita.headend import detection

    from .dbshell import refusals

    runtime = runtime_of(args)
    days = runtime.settings.low_credit_days
    while True:
        started = time.monotonic()
        with refusals():
            summary = detection.run(
                runtime.engine,
                now=datetime.datetime.now(datetime.UTC),
                interval=args.interval,
                low_credit_days=days,
                rules=args.rules,
            )
        emit(summary.as_json(), indent=None if args.every else 2)
        if not args.every:
            return
        sys.stdout.flush()  # a line per pass, as it is made, to whatever reads the pipe
        time.sleep(max(args.every - (time.monotonic() - started), 0.0))


# ---------------------------------------------------------------------- for people


def _show_endpoint(endpoint: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit(endpoint)
        return
    if endpoint.get("transport") == "mqtt":
        fields = {"transport": "mqtt", "broker": f"{endpoint['host']}:{endpoint['port']}"}
        show_fields(f"meter {endpoint['meter']}: connected", {**fields, "since": endpoint["created_at"]})
        return
    fields = {k: endpoint[k] for k in ("host", "port", "client", "server", "token_encoding")}
    fields["secret"] = "kept (sealed)" if endpoint["secret"] else "none: reading only (public client)"
    fields["since"] = endpoint["created_at"]
    show_fields(f"meter {endpoint['meter']}: connected", fields)


def _show_commands(items: list[dict[str, Any]]) -> None:
    if not items:
        say("no commands")
        return
    show_table(COLUMNS, [[c[k][:19] if k.endswith("_at") and c[k] else c[k] for k in COLUMNS] for c in items],
               right=("id", "attempts"))  # fmt: skip
