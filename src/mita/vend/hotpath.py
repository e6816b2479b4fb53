"""The vend's writes as plain SQL, sent in one round trip on PostgreSQL.

A vend writes nine kinds of rows. Through the SQL expression layer, one
statement at a time, that was most of a vend's time. Here the statements are
fixed SQL text (with ``%(name)s`` parameters; SQLite gets ``:name``), and on
PostgreSQL they go out together in psycopg's pipeline mode, still inside the
vend's transaction. The columns are those of :mod:`mita.vend.schema`; the
service's tests run on both databases, so the two stay in step.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import Connection, Row

SQL = {
    # Everything a vend reads besides the (locked) meter row, in one statement.
    "context": "SELECT g.*, t.name AS tariff_name, t.currency, t.carry_leftover, "
    "(SELECT v.id FROM tariff_versions v WHERE v.tariff_id = t.id AND v.effective_from <= %(at)s "
    "ORDER BY v.effective_from DESC LIMIT 1) AS version_id, "
    "c.debt, c.debt_rate, c.carried, c.fbe_eligible, "
    "mm.units AS month_units, mm.fixed_charged, mm.fbe_issued, "
    "(SELECT credit_limit FROM vendors WHERE id = %(vendor_id)s) AS credit_limit "
    "FROM supply_groups g LEFT JOIN tariffs t ON t.id = %(tariff_id)s "
    "LEFT JOIN customers c ON c.id = %(customer_id)s "
    "LEFT JOIN meter_months mm ON mm.meter_id = %(meter_id)s AND mm.month = %(month)s "
    "WHERE g.id = %(group_id)s",
    "vend": "INSERT INTO vends (id, vendor_id, api_key_id, meter_id, customer_id, kind, amount, units, receipt, "
    "status, created_at) VALUES (%(id)s, %(vendor_id)s, %(api_key_id)s, %(meter_id)s, %(customer_id)s, "
    "'purchase', %(amount)s, %(units)s, %(receipt)s, 'completed', %(at)s)",
    "token": "INSERT INTO tokens (vend_id, meter_id, seq, kind, tid, base_date, token_class, subclass, digits, "
    "units, created_at) VALUES (%(vend_id)s, %(meter_id)s, %(seq)s, %(kind)s, %(tid)s, %(base_date)s, "
    "%(token_class)s, %(subclass)s, %(digits)s, %(units)s, %(at)s)",
    "meter_tid": "UPDATE meters SET last_tid = %(tid)s WHERE id = %(id)s",
    "meter_pending": "UPDATE meters SET pending_key = %(pending)s WHERE id = %(id)s",
    "ledger": "INSERT INTO ledger (vend_id, account, debit, credit, created_at) "
    "VALUES (%(vend_id)s, %(account)s, %(debit)s, %(credit)s, %(at)s)",
    "customer": "UPDATE customers SET debt = debt - %(debt)s, carried = carried - %(carried_in)s + %(carried_out)s, "
    "refund_balance = refund_balance + %(refund)s WHERE id = %(id)s",
    "month": "INSERT INTO meter_months (meter_id, month, units, purchases, fbe_issued, fixed_charged) "
    "VALUES (%(meter_id)s, %(month)s, %(units)s, 1, %(fbe)s, %(fixed)s) "
    "ON CONFLICT (meter_id, month) DO UPDATE SET units = meter_months.units + excluded.units, "
    "purchases = meter_months.purchases + 1, fbe_issued = meter_months.fbe_issued OR excluded.fbe_issued, "
    "fixed_charged = meter_months.fixed_charged OR excluded.fixed_charged",
    "audit": "INSERT INTO audit (at, actor, action, entity, entity_id, detail) "
    "VALUES (%(at)s, %(actor)s, 'vend', 'vend', %(vend_id)s, %(detail)s)",
    "outbox": "INSERT INTO outbox (vend_id, channel, payload, status, created_at) "
    "VALUES (%(vend_id)s, 'receipt', %(payload)s, 'pending', %(at)s)",
    "answer": "UPDATE idempotency SET status_code = 201, response = %(response)s, vend_id = %(vend_id)s "
    "WHERE api_key_id = %(api_key_id)s AND key = %(key)s",
}
_SQLITE = {name: re.sub(r"%\((\w+)\)s", r":\1", sql) for name, sql in SQL.items()}

Write = tuple[str, dict[str, Any] | list[dict[str, Any]]]


def read(conn: Connection, name: str, params: dict[str, Any]) -> Row[Any]:
    sql = SQL[name] if conn.dialect.name == "postgresql" else _SQLITE[name]
    return conn.exec_driver_sql(sql, params).one()


def run(conn: Connection, writes: list[Write]) -> None:
    """Execute ``writes`` in order in the connection's transaction, pipelined where the driver can."""
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.pipeline(), raw.cursor() as cur:
            for name, params in writes:
                if isinstance(params, list):
                    cur.executemany(SQL[name], params)
                else:
                    cur.execute(SQL[name], params)
        return
    for name, params in writes:
        conn.exec_driver_sql(_SQLITE[name], params if isinstance(params, dict) else list(params))  # type: ignore[arg-type]
