"""``mita vends list`` and ``mita vends history``: what was sold and sent, newest first, from the terminal.

Thin shells over :mod:`mita.vend.listings` (the queries of ``GET /v1/vends`` and ``GET /v1/meters/{drn}/vends``),
acting as the system administrator on ``--database-url``, which must exist and be migrated (exit 3 otherwise).
By default a table for people, one vend a line; ``--json`` prints the API's answer unchanged
(``{"items": [...], "next": cursor}``), a public contract for scripts.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from .command import command, emit, group, note, say
from .listing import add_period, every_page, page_size, positive, show_table
from .options import add_choice, add_database_url, add_json

if TYPE_CHECKING:
    from mita import compose

#: As :class:`mita.vend.lifecycles.VendKind` and ``VendStatus`` (a test checks): listed here so that defining the
#: options imports no service.
KINDS = ("purchase", "engineering", "key_change")
STATUSES = ("completed", "reversed")
#: ``delivery``: a connected meter's vend, how its tokens went to it (the head-end command's status); ``-``: keypad.
COLUMNS = ("created_at", "kind", "status", "meter", "customer", "vendor", "amount", "currency", "units", "delivery",
           "tokens", "id")  # fmt: skip
NUMBERS = ("vendor", "amount", "units")


def add_commands(parser: argparse.ArgumentParser) -> None:
    commands = group(parser)
    p = command(commands, "list", list_vends, "Vends, newest first, filtered: purchases, engineering tokens, key "
                "changes, each with its tokens.\n\nFilters combine; a meter or customer that does not exist finds "
                "nothing. Amounts are in minor units (cents), units in 0.1 kWh (0.1 m3 for water and gas). One page "
                "at a time: the next page's cursor is printed on standard error (in the JSON: next).")  # fmt: skip
    p.add_argument("--meter", metavar="DRN", help="Only this meter's vends (its number with the check digit).")
    p.add_argument("--vendor-id", type=positive, metavar="N", help="Only what this vendor sold.")
    p.add_argument("--customer", metavar="ACCOUNT", help="Only this customer's vends (the account).")
    add_choice(p, "--kind", values=KINDS, help="Only vends of this kind.")
    add_choice(p, "--status", values=STATUSES, help="Only completed, or only reversed, purchases.")
    add_period(p, "Vends")
    p.add_argument("--limit", type=page_size, default=50, metavar="N", help="Vends in the page: 1..500, default 50.")
    p.add_argument("--after", metavar="CURSOR", help="The page after this cursor (the previous page's next).")
    add_database_url(p)
    add_json(p)

    p = command(commands, "history", history, "Everything a meter was sold or sent, newest first: purchases "
                "(reversed ones marked), engineering tokens and key changes, with their tokens.")  # fmt: skip
    p.add_argument("drn", metavar="DRN", help="The meter's number, with its check digit.")
    add_database_url(p)
    add_json(p)


def _runtime(args: argparse.Namespace) -> compose.Runtime:
    from . import dbshell

    return dbshell.runtime(args.database_url)


def list_vends(args: argparse.Namespace) -> None:
    from mita.vend import listings, registry

    from .dbshell import refusals

    f = listings.VendFilter(args.meter, args.vendor_id, args.customer, args.kind, args.status, args.since, args.until)
    engine = _runtime(args).engine
    with refusals():
        page = listings.list_vends(engine, registry.SYSTEM, f, args.limit, args.after)
    if args.json:
        emit(page)
        return
    _show(page["items"])
    if page["next"] is not None:
        note(f"more: the next page is --after {page['next']}")


def history(args: argparse.Namespace) -> None:
    from mita.vend import listings, registry

    from .dbshell import refusals

    engine = _runtime(args).engine
    with refusals():
        out = every_page(lambda after: listings.meter_history(engine, registry.SYSTEM, args.drn, listings.MAX_PAGE,
                                                              after))  # fmt: skip
    if args.json:
        emit(out)
    else:
        _show(out["items"])


def _show(items: list[dict[str, Any]]) -> None:
    if not items:
        say("no vends")
        return
    show_table(COLUMNS, [_row(v) for v in items], right=NUMBERS)


def _row(v: dict[str, Any]) -> list[Any]:
    status = v["status"] if v["reversed_at"] is None else f"{v['status']} {v['reversed_at'][:16]}"
    tokens = " ".join(t["digits"] for t in v["tokens"])
    return [v["created_at"][:19], v["kind"], status, v["meter"], v["customer"], v["vendor_id"], v["amount"],
            v["currency"], v["units"], _delivery(v.get("delivery")), tokens, v["id"]]  # fmt: skip


def _delivery(sent: dict[str, Any] | None) -> str | None:
    """The delivery's status, with the code of its last failure where that says more (``queued:unreachable``)."""
    if sent is None:
        return None
    error = sent["error"]
    return sent["status"] if error is None or error == sent["status"] else f"{sent['status']}:{error}"
