"""``mita import customers|meters FILE.csv``: bulk registration from CSV, every row or none.

Thin shells over :mod:`mita.vend.imports` (as ``POST /v1/imports/customers|meters``), acting as the system
administrator on ``--database-url`` (exit 3 if it is missing or not migrated). The columns are the API's field
names (``mita import customers --help`` lists them); ``-`` reads the CSV from standard input.

Nothing is written unless every row is good. A refused import prints each problem on standard error, one a line
(``row 3, drn: ... [format_error]``, rows numbered as a spreadsheet shows them, the header being row 1), then the
error line ``error[import_refused]: ...``, and exits 1. With ``--json`` the answer is the API's
(``{"imported", "entity"}``), and a refusal's JSON error lists the problems too: ``{"error": {"code", "message",
"total", "errors": [{"row", "column", "code", "message"}]}}``.
"""

from __future__ import annotations

import argparse

from . import exits
from .command import command, emit, fail, group, note, report, say
from .options import add_database_url, add_json

CUSTOMER_COLUMNS = "account and name (required), phone, fbe_eligible (true/false), debt (minor units), debt_rate (0..1)"
METER_COLUMNS = ("drn and sgc (required), customer (an account), tariff (a name), utility (electricity, water, gas), "
                 "manufacturer, area, ti, krn, kt, ea, base_date, ken (default: the supply group's)")  # fmt: skip


def add_commands(parser: argparse.ArgumentParser) -> None:
    commands = group(parser)
    for name, columns in (("customers", CUSTOMER_COLUMNS), ("meters", METER_COLUMNS)):
        doc = (f"Create {name} from a CSV file: every row or none; a refusal lists every bad row.\n\n"
               f"Columns (header first, any order, UTF-8): {columns}.")  # fmt: skip
        p = command(commands, name, run_import, doc)
        p.add_argument("file", metavar="FILE.csv", help="The CSV file; - reads it from standard input.")
        add_database_url(p)
        add_json(p)
        p.set_defaults(entity=name)


def _read(path: str) -> str:
    import sys

    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except OSError as exc:
        fail("unreadable_file", f"cannot read {path} ({exc.strerror or type(exc).__name__})")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        fail("invalid_csv", f"{'standard input' if path == '-' else path} is not UTF-8 text")


def run_import(args: argparse.Namespace) -> int:
    from mita.vend import imports, registry

    from . import dbshell

    text = _read(args.file)
    runtime = dbshell.runtime(args.database_url)
    importer = (runtime.services.registry.import_customers if args.entity == "customers"
                else runtime.services.registry.import_meters)  # fmt: skip
    try:
        with dbshell.refusals():
            out = importer(registry.SYSTEM, imports.parse_csv(text))
    except imports.ImportRefused as refused:
        for e in refused.errors:
            where = f"row {e.row}" + (f", {e.column}" if e.column else "")
            note(f"{where}: {e.message} [{e.code}]")
        if args.json:
            emit({"error": {"code": refused.code, "message": refused.message, "total": refused.total,
                            "errors": refused.rows()}})  # fmt: skip
        report(refused.code, refused.message, json_mode=False)
        return exits.REFUSED
    if args.json:
        emit(out)
    else:
        say(f"imported {out['imported']} {out['entity']}")
    return exits.OK
