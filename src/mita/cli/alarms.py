"""``mita alarms``: what the ingest and the detection raised, a person's moves on it, a meter's timeline.

Thin shells over :mod:`mita.headend.alarms` (what ``/v1/alarms``, ``/v1/meters/{drn}/timeline`` and
``/v1/meters/{drn}/telemetry`` answer), acting as the system administrator on ``--database-url``, which must exist
and be migrated (exit 3 otherwise). By default a table for people; ``--json`` prints the API's answer unchanged
(times in RFC 3339 with the utility's offset). A refused move exits 1 with its code (``alarm_closed``,
``already_acknowledged``), as the API answers 409.
"""

from __future__ import annotations

import argparse
from typing import Any

from .command import command, emit, group, note, say, show_fields
from .headend import runtime_of, shown
from .listing import add_period, every_page, page_size, positive, show_table
from .options import add_choice, add_database_url, add_json

#: As :class:`mita.vend.lifecycles.AlarmStatus` and ``AlarmSeverity`` (a test checks): listed here so that
#: defining the options imports no service.
STATUSES = ("open", "acknowledged", "closed")
SEVERITIES = ("low", "medium", "high")
COLUMNS = ("id", "opened_at", "meter", "rule", "severity", "status", "occurrences", "last_seen_at", "summary")
#: The closing note's longest (``mita.vend.limits.REASON``).
NOTE_MAX = 500


def add_commands(parser: argparse.ArgumentParser) -> None:
    commands = group(parser)
    p = command(commands, "list", list_alarms, "Alarms, newest opened first, filtered.\n\nFilters combine; a meter "
                "that does not exist finds nothing. One page at a time: the next page's cursor is printed on "
                "standard error (in the JSON: next).")  # fmt: skip
    add_choice(p, "--status", values=STATUSES, help="Only alarms in this status.")
    p.add_argument("--meter", metavar="DRN", help="Only this meter's alarms (its number with the check digit).")
    p.add_argument("--rule", metavar="RULE", help="Only this rule's alarms (cover, magnetic, bypass, leak, silent...).")
    add_choice(p, "--severity", values=SEVERITIES, help="Only alarms of this severity.")
    add_period(p, "Alarms opened")
    p.add_argument("--limit", type=page_size, default=50, metavar="N", help="Alarms in the page: 1..500, default 50.")
    p.add_argument("--after", metavar="CURSOR", help="The page after this cursor (the previous page's next).")
    add_database_url(p)
    add_json(p)

    command(commands, "show", show, "One alarm, with its evidence.", _id_options)
    command(commands, "ack", ack, "Acknowledge an alarm: someone is on it (open -> acknowledged). Audited.",
            _id_options)  # fmt: skip
    p = command(commands, "close", close, "Close an alarm: dealt with (open or acknowledged -> closed), with a note "
                "of what was found and done. Final: the same condition seen again opens a new alarm. Audited.",
                _id_options)  # fmt: skip
    p.add_argument("--note", required=True, help=f"What was found and done (at most {NOTE_MAX} characters).")
    command(commands, "timeline", timeline, "What happened at a meter, newest first: its alarms, the events it "
            "reported, the head-end's commands and its vends.", _drn_options)  # fmt: skip
    command(commands, "telemetry", telemetry, "A meter's latest reading and status, as the ingest keeps them.",
            _drn_options)  # fmt: skip


def _id_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("alarm_id", type=positive, metavar="ID", help="The alarm's id.")
    add_database_url(p)
    add_json(p)


def _drn_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("drn", metavar="DRN", help="The meter's number, with its check digit.")
    add_database_url(p)
    add_json(p)


# ---------------------------------------------------------------------- handlers


def list_alarms(args: argparse.Namespace) -> None:
    from mita.headend import alarms
    from mita.vend.registry import SYSTEM

    from .dbshell import refusals

    f = alarms.AlarmFilter(args.status, args.meter, args.rule, args.severity, args.since, args.until)
    engine = runtime_of(args).engine
    with refusals():
        page = shown(alarms.list_alarms(engine, SYSTEM, f, args.limit, args.after))
    if args.json:
        emit(page)
        return
    _show_alarms(page["items"])
    if page["next"] is not None:
        note(f"more: the next page is --after {page['next']}")


def show(args: argparse.Namespace) -> None:
    from mita.headend import alarms
    from mita.vend.registry import SYSTEM

    from .dbshell import refusals

    with refusals():
        out = shown(alarms.get(runtime_of(args).engine, SYSTEM, args.alarm_id))
    _show_alarm(out, args.json)


def ack(args: argparse.Namespace) -> None:
    from mita.headend import alarms
    from mita.vend.registry import SYSTEM

    from .dbshell import refusals

    runtime = runtime_of(args)
    with refusals():
        out = shown(alarms.acknowledge(runtime.engine, SYSTEM, args.alarm_id, at=runtime.clock()))
    _show_alarm(out, args.json)


def close(args: argparse.Namespace) -> None:
    from mita.headend import alarms
    from mita.vend.registry import SYSTEM

    from .command import fail
    from .dbshell import refusals

    text = args.note.strip()
    if not text or len(text) > NOTE_MAX or any(ord(c) < 32 or ord(c) == 127 for c in text):
        fail("invalid_request", f"--note is 1 to {NOTE_MAX} printable characters")
    runtime = runtime_of(args)
    with refusals():
        out = shown(alarms.close(runtime.engine, SYSTEM, args.alarm_id, at=runtime.clock(), note=text))
    _show_alarm(out, args.json)


def timeline(args: argparse.Namespace) -> None:
    from mita.headend import alarms
    from mita.vend.registry import SYSTEM

    from .dbshell import refusals

    engine = runtime_of(args).engine
    with refusals():
        out = every_page(lambda after: alarms.timeline(engine, SYSTEM, args.drn, alarms.MAX_PAGE, after))
    out = shown(out)
    if args.json:
        emit(out)
        return
    if not out["items"]:
        say(f"meter {args.drn}: nothing yet")
        return
    show_table(("at", "type", "id", "summary"), [[e["at"][:19], e["type"], e["id"], e["summary"]]
                                                 for e in out["items"]])  # fmt: skip


def telemetry(args: argparse.Namespace) -> None:
    from mita.headend import alarms
    from mita.vend.registry import SYSTEM

    from .dbshell import refusals

    with refusals():
        out = shown(alarms.telemetry(runtime_of(args).engine, SYSTEM, args.drn))
    if args.json:
        emit(out)
    else:
        show_fields(f"meter {out['meter']}: latest telemetry", {k: v for k, v in out.items() if k != "meter"})


# ---------------------------------------------------------------------- for people


def _show_alarm(alarm: dict[str, Any], as_json: bool) -> None:
    if as_json:
        emit(alarm)
        return
    fields = {k: v for k, v in alarm.items() if k not in ("id", "meter", "evidence") and v is not None}
    fields.update({f"evidence.{k}": v for k, v in alarm["evidence"].items()})
    show_fields(f"alarm {alarm['id']} on meter {alarm['meter']}", fields)


def _show_alarms(items: list[dict[str, Any]]) -> None:
    if not items:
        say("no alarms")
        return
    show_table(COLUMNS, [[a[k][:19] if k.endswith("_at") else a[k] for k in COLUMNS] for a in items],
               right=("id", "occurrences"))  # fmt: skip
