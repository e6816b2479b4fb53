"""Bulk import of customers and meters from CSV: every row or none, and every bad row reported.

The columns are the API's field names (``POST /v1/customers``, ``POST /v1/meters``), in any order; only the
required ones must be there, and an empty cell takes the field's default. Cells are trimmed. Each value goes
through the same checks as a single create (:data:`.fields.CUSTOMER_FIELDS`, :data:`.fields.METER_FIELDS`,
:func:`.fields.meter_key`), so an import refuses what the API refuses, with the same codes.

Nothing is written unless every row is good: all rows are checked first (values, duplicates within the file,
what already exists, what they refer to), and the problems come back together (:class:`ImportRefused`, one
:class:`RowError` per problem: row, column, code, message). Then one transaction writes every row and its audit
entry. Rows are numbered as a spreadsheet shows them: the header is row 1, the first data row is row 2 (blank
lines are skipped and not counted).

| customers column | required | default | | meters column | required | default |
|---|---|---|---|---|---|---|
| account | yes | | | drn | yes | |
| name | yes | | | sgc | yes | |
| phone | | none | | customer (an account) | | none |
| fbe_eligible (true/false) | | false | | tariff (a name) | | none |
| debt (minor units) | | 0 | | utility | | electricity |
| debt_rate (0..1) | | 0 | | manufacturer, area | | empty |
| | | | | ti | | 1 |
| | | | | krn, kt, ea, base_date, ken | | the supply group's |
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from sqlalchemy import JSON, Connection, Engine, insert, select
from sqlalchemy.exc import IntegrityError

from mita import sts

from . import fields
from .callers import Caller
from .errors import VendError
from .schema import audit, customers, meters, supply_groups, tariffs

MAX_REPORTED = 1000  # problems listed in one answer (the count says how many there were)
CHUNK = 500  # values per IN (...) lookup: SQLite allows 999 parameters in older builds
HEADER_ROW = 1


@dataclass(frozen=True)
class RowError:
    """One problem of an import: where (row, and column when it is one cell's) and what (code, message)."""

    row: int
    column: str | None
    code: str
    message: str


class ImportRefused(VendError):
    """Nothing was imported: ``errors`` lists the problems, row by row (at most MAX_REPORTED)."""

    def __init__(self, what: str, errors: list[RowError]) -> None:
        rows = len({e.row for e in errors})
        shown = f" (the first {MAX_REPORTED} are listed)" if len(errors) > MAX_REPORTED else ""
        super().__init__(
            "import_refused",
            f"{len(errors)} problem(s) in {rows} row(s) of the {what} import{shown}; nothing was imported",
        )
        self.total = len(errors)
        self.errors = errors[:MAX_REPORTED]

    def rows(self) -> list[dict[str, Any]]:
        return [asdict(e) for e in self.errors]


# ---------------------------------------------------------------------- reading the file


def parse_csv(text: str) -> list[dict[str, str]]:
    """Rows of a CSV text as ``{column: cell}`` (header first; a UTF-8 byte order mark is dropped).

    A row with more or fewer cells than the header, or a header naming a column twice, is reported with the
    rest (:class:`ImportRefused`); text that is not CSV at all is ``invalid_csv``.
    """
    reader = csv.reader(io.StringIO(text.removeprefix("\ufeff")), strict=True)
    errors: list[RowError] = []
    try:
        header = [name.strip() for name in next(reader, [])]
        if not any(header):
            raise ImportRefused("CSV", [RowError(HEADER_ROW, None, "invalid_csv", "the first line names the columns")])
        for name in {n for n in header if header.count(n) > 1}:
            errors.append(RowError(HEADER_ROW, name, "invalid_csv", f"column {name!r} is named twice"))
        rows: list[dict[str, str]] = []
        for record in reader:
            if not any(cell.strip() for cell in record):
                continue
            if len(record) != len(header):
                row = HEADER_ROW + len(rows) + 1
                message = f"{len(record)} cells where the header names {len(header)} columns"
                errors.append(RowError(row, None, "invalid_csv", message))
            rows.append(dict(zip(header, (cell.strip() for cell in record), strict=False)))
    except csv.Error as exc:
        raise VendError("invalid_csv", f"the body is not readable CSV (line {reader.line_num}: {exc})") from None
    if errors:
        raise ImportRefused("CSV", errors)
    return rows


# ---------------------------------------------------------------------- cells to values


def _text(cell: str) -> str:
    return cell


def _flag(cell: str) -> bool:
    value = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}.get(cell.lower())
    if value is None:
        raise VendError("invalid_request", "must be true or false (or yes/no, 1/0)")
    return value


def _whole(code: str) -> Callable[[str], int]:
    def parse(cell: str) -> int:
        digits = cell.removeprefix("-")
        if not digits.isdigit() or not digits.isascii() or len(digits) > 19:
            raise VendError(code, "must be a whole number")
        return int(cell)

    return parse


@dataclass(frozen=True)
class Column:
    required: bool
    parse: Callable[[str], Any]  # the cell's text to a value; the registry's table then checks it
    default: Any = None


CUSTOMER_COLUMNS: dict[str, Column] = {
    "account": Column(True, _text),
    "name": Column(True, _text),
    "phone": Column(False, _text),
    "fbe_eligible": Column(False, _flag, False),
    "debt": Column(False, _whole("invalid_amount"), 0),
    "debt_rate": Column(False, _text, "0"),
}

METER_COLUMNS: dict[str, Column] = {
    "drn": Column(True, _text),
    "sgc": Column(True, _text),
    "customer": Column(False, _text),
    "tariff": Column(False, _text),
    "utility": Column(False, _text, "electricity"),
    "manufacturer": Column(False, _text, ""),
    "area": Column(False, _text, ""),
    "ti": Column(False, _whole("format_error"), 1),
    "krn": Column(False, _whole("format_error")),
    "kt": Column(False, _whole("format_error")),
    "ea": Column(False, _whole("format_error")),
    "base_date": Column(False, _whole("format_error")),
    "ken": Column(False, _whole("format_error")),
}


METER_CHECKS = {**fields.METER_FIELDS, **fields.METER_KEY_FIELDS}


def _header(rows: Sequence[Mapping[str, object]], columns: Mapping[str, Column], errors: list[RowError]) -> None:
    names = {name for row in rows[:1] for name in row}
    for name in sorted(names - columns.keys()):
        errors.append(
            RowError(HEADER_ROW, name, "invalid_request", f"unknown column; the columns are {', '.join(columns)}")
        )
    for name, column in columns.items():
        if column.required and rows and name not in names:
            errors.append(RowError(HEADER_ROW, name, "invalid_request", "this column is required"))
    if not rows:
        errors.append(RowError(HEADER_ROW, None, "invalid_request", "there are no rows to import"))


def _values(
    n: int,
    row: Mapping[str, object],
    columns: Mapping[str, Column],
    checks: Mapping[str, Callable[[Any], Any]],
    errors: list[RowError],
) -> dict[str, Any] | None:
    """The row's checked values (None if any is bad: each bad cell is reported)."""
    out: dict[str, Any] = {}
    good = True
    for name, column in columns.items():
        cell = row.get(name)
        try:
            if cell is None or cell == "":
                if column.required:
                    raise VendError("invalid_request", "is required")
                value = column.default
            else:
                value = column.parse(cell) if isinstance(cell, str) else cell
        except VendError as exc:
            errors.append(RowError(n, name, exc.code, f"{name} {exc}"))
            good = False
            continue
        try:
            out[name] = checks[name](value) if name in checks else value
        except sts.StsError as exc:  # VendError is one
            errors.append(RowError(n, name, exc.code, str(exc)))
            good = False
    return out if good else None


def _existing(conn: Connection, column: Any, key: Any, values: Iterable[str]) -> dict[str, Any]:
    """``{key: column}`` for the keys among ``values`` that exist, asked CHUNK at a time."""
    wanted = sorted(set(values))
    found: dict[str, Any] = {}
    for i in range(0, len(wanted), CHUNK):
        found.update((k, v) for k, v in conn.execute(select(key, column).where(key.in_(wanted[i : i + CHUNK]))))
    return found


def _first_rows(values: Iterable[tuple[int, str]]) -> tuple[dict[str, int], list[tuple[int, str, int]]]:
    """Where each key is first seen, and the rows that repeat one (row, key, first row)."""
    first: dict[str, int] = {}
    repeats = []
    for n, key in values:
        if key in first:
            repeats.append((n, key, first[key]))
        else:
            first[key] = n
    return first, repeats


Entries = list[tuple[str, dict[str, Any]]]  # (entity id, detail) per row


def _audit_rows(caller: Caller, at: dt.datetime, action: str, entity: str, rows: Entries) -> list[dict[str, Any]]:
    return [
        {"at": at, "actor": caller.name, "action": action, "entity": entity, "entity_id": ident,
         "detail": {**detail, "import": True}}
        for ident, detail in rows
    ]  # fmt: skip


def _insert_all(conn: Connection, table: Any, rows: list[dict[str, Any]]) -> None:
    """Insert ``rows`` (all with the same keys): by COPY on PostgreSQL, where statements cost far more (10,000
    meters: 0.3 s by COPY, 3 s as one INSERT per row, more as multi-row INSERTs that psycopg must parse)."""
    if not rows:
        return
    if conn.dialect.name != "postgresql":
        conn.execute(insert(table), rows)
        return
    names = list(rows[0])
    jsons = {c.name for c in table.columns if isinstance(c.type, JSON)}
    columns = ", ".join(f'"{n}"' for n in names)
    raw = conn.connection.driver_connection  # the transaction's own connection
    assert raw is not None
    with raw.cursor() as cur, cur.copy(f"COPY {table.name} ({columns}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row([json.dumps(row[n]) if n in jsons and row[n] is not None else row[n] for n in names])


def _write(engine: Engine, what: str, table: Any, rows: list[dict[str, Any]], entries: list[dict[str, Any]]) -> None:
    """Every row and its audit entry, in one transaction."""
    try:
        with engine.begin() as conn:
            _insert_all(conn, table, rows)
            _insert_all(conn, audit, entries)
    except (IntegrityError, psycopg.IntegrityError):  # written by someone else since our checks
        raise VendError("conflict", f"a {what} of the import was created meanwhile; nothing was imported") from None


# ---------------------------------------------------------------------- customers


def import_customers(
    engine: Engine, caller: Caller, rows: Iterable[Mapping[str, object]], at: dt.datetime
) -> dict[str, Any]:
    """Create every customer of ``rows`` (admin, operator), or none: see the module's notes."""
    caller.require("admin", "operator")
    rows = list(rows)
    errors: list[RowError] = []
    _header(rows, CUSTOMER_COLUMNS, errors)
    good: list[tuple[int, dict[str, Any]]] = []
    if not errors:
        for n, row in enumerate(rows, start=HEADER_ROW + 1):
            values = _values(n, row, CUSTOMER_COLUMNS, fields.CUSTOMER_FIELDS, errors)
            if values is not None:
                good.append((n, values))
    _, repeats = _first_rows((n, v["account"]) for n, v in good)
    errors += [RowError(n, "account", "conflict", f"account {a} is also on row {f}") for n, a, f in repeats]
    with engine.connect() as conn:
        taken = _existing(conn, customers.c.id, customers.c.account, (v["account"] for _, v in good))
    errors += [RowError(n, "account", "conflict", f"customer {v['account']} already exists")
               for n, v in good if v["account"] in taken]  # fmt: skip
    if errors:
        raise ImportRefused("customers", sorted(errors, key=lambda e: e.row))
    _write(
        engine,
        "customer",
        customers,
        [fields.customer_row(v, at) for _, v in good],
        _audit_rows(caller, at, "create_customer", "customer",
                    [(v["account"], {"fbe_eligible": v["fbe_eligible"], "debt": v["debt"]}) for _, v in good]),
    )  # fmt: skip
    return {"imported": len(good), "entity": "customers"}


# ---------------------------------------------------------------------- meters


def import_meters(
    engine: Engine, caller: Caller, rows: Iterable[Mapping[str, object]], at: dt.datetime
) -> dict[str, Any]:
    """Create every meter of ``rows`` (admin, operator), or none: see the module's notes."""
    caller.require("admin", "operator")
    rows = list(rows)
    errors: list[RowError] = []
    _header(rows, METER_COLUMNS, errors)
    good: list[tuple[int, dict[str, Any]]] = []
    if not errors:
        for n, row in enumerate(rows, start=HEADER_ROW + 1):
            values = _values(n, row, METER_COLUMNS, METER_CHECKS, errors)
            if values is not None:
                good.append((n, values))
    _, repeats = _first_rows((n, v["drn"]) for n, v in good)
    errors += [RowError(n, "drn", "conflict", f"meter {d} is also on row {f}") for n, d, f in repeats]
    with engine.connect() as conn:
        taken = _existing(conn, meters.c.id, meters.c.drn, (v["drn"] for _, v in good))
        groups = {
            r.sgc: r
            for r in conn.execute(
                select(supply_groups).where(supply_groups.c.sgc.in_(sorted({v["sgc"] for _, v in good})))
            )
        }
        accounts = _existing(
            conn, customers.c.id, customers.c.account, (v["customer"] for _, v in good if v["customer"])
        )
        names = _existing(conn, tariffs.c.id, tariffs.c.name, (v["tariff"] for _, v in good if v["tariff"]))
    made: list[dict[str, Any]] = []
    entries: Entries = []
    for n, v in good:
        problems = len(errors)
        if v["drn"] in taken:
            errors.append(RowError(n, "drn", "conflict", f"meter {v['drn']} already exists"))
        for column, known, what in (("customer", accounts, "customer"), ("tariff", names, "tariff")):
            if v[column] and v[column] not in known:
                errors.append(RowError(n, column, "not_found", f"no {what} {v[column]}"))
        group = groups.get(v["sgc"])
        if group is None:
            errors.append(RowError(n, "sgc", "not_found", f"no supply group {v['sgc']}"))
            continue
        try:
            key = fields.meter_key(group, ti=v["ti"], krn=v["krn"], kt=v["kt"], ea=v["ea"],
                                     base_date=v["base_date"], ken=v["ken"])  # fmt: skip
        except sts.StsError as exc:
            errors.append(RowError(n, None, exc.code, f"key configuration: {exc}"))
            continue
        if len(errors) > problems:
            continue
        own = {k: v[k] for k in fields.METER_FIELDS}
        made.append(fields.meter_row(own, group, key, accounts.get(v["customer"]), names.get(v["tariff"]), at))
        entries.append((v["drn"], {"sgc": v["sgc"], "customer": v["customer"], "tariff": v["tariff"], **key}))
    if errors:
        raise ImportRefused("meters", sorted(errors, key=lambda e: e.row))
    _write(engine, "meter", meters, made, _audit_rows(caller, at, "create_meter", "meter", entries))
    return {"imported": len(made), "entity": "meters"}
