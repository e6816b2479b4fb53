"""``mita report sales``: sales per vendor and tariff over a day or a period, reversals netted out.

A thin shell over :mod:`mita.vend.reports` (as ``GET /v1/reports/sales``), acting as the system administrator on
``--database-url`` (exit 3 if it is missing or not migrated). The period is the utility's wall clock: ``--date``
(default today) from midnight to midnight, or ``--since`` and ``--until`` (at most 366 days). By default a table
for people; ``--csv`` prints the API's CSV (header first), ``--json`` its JSON answer.
"""

from __future__ import annotations

import argparse
from typing import Any

from .command import command, emit, group, say
from .listing import add_period, day, show_table
from .options import add_database_url

COLUMNS = ("vendor", "tariff", "currency", "vends", "reversals", "amount", "vat", "units", "fbe_units")
NUMBERS = COLUMNS[3:]


def add_commands(parser: argparse.ArgumentParser) -> None:
    commands = group(parser)
    p = command(commands, "sales", sales, "Sales per vendor and tariff over a day or a period, reversals netted "
                "out on the day they were made.\n\nMoney in minor units of the tariff's currency (cents), units in "
                "0.1 kWh (0.1 m3 for water and gas); amount, vat, units and fbe_units are net (sales minus "
                "reversals). A vendor shown as - is direct: sold with a staff key.")  # fmt: skip
    p.add_argument("--date", type=day, metavar="YYYY-MM-DD", help="A day of the utility's wall clock (default today).")
    add_period(p, "Sales")
    shape = p.add_mutually_exclusive_group()
    shape.add_argument("--csv", action="store_true", help="Print the report's rows as CSV, header first.")
    shape.add_argument("--json", action="store_true", help="Print the answer as JSON, for scripts.")
    add_database_url(p)


def sales(args: argparse.Namespace) -> None:
    import sys

    from mita.vend import registry, reports

    from . import dbshell

    runtime = dbshell.runtime(args.database_url)
    with dbshell.refusals():
        start, end = reports.period(runtime.clock().date(), args.date, args.since, args.until)
        out = reports.sales_report(runtime.engine, registry.SYSTEM, start, end)
    if args.csv:
        sys.stdout.write(reports.sales_csv(out))
    elif args.json:
        emit(out)
    else:
        _show(out)


def _show(out: dict[str, Any]) -> None:
    say(f"sales from {out['since']} until {out['until']} ({out['time_zone']})")
    if not out["rows"]:
        say("no sales")
        return
    show_table(COLUMNS, [[row[c] for c in COLUMNS] for row in out["rows"]], right=NUMBERS)
    say()
    say("totals")
    columns = ("currency", *NUMBERS)
    show_table(columns, [[t[c] for c in columns] for t in out["totals"]], right=NUMBERS)
