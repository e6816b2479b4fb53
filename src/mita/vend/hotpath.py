"""The vend's writes as plain SQL, sent in one round trip on PostgreSQL.

A vend writes nine kinds of rows. Through the SQL expression layer, one
statement at a time, that was most of a vend's time. Here the statements are
fixed SQL text (with ``%(name)s`` parameters; SQLite gets ``:name``), and on
PostgreSQL they go out together in psycopg's pipeline mode, still inside the
vend's transaction. The columns are those of :mod:`mita.vend.schema`; the
service's tests run on both databases, so the two stay in step.
"""

from __future__ import annotations

import json
import re
from typing import Any

from psycopg.rows import dict_row
from sqlalchemy import Connection

SQL = {
    "claim": "INSERT INTO idempotency (api_key_id, key, request_hash, status_code, response, created_at) "
    "VALUES (%(api_key_id)s, %(key)s, %(hash)s, 0, '{}', %(at)s) ON CONFLICT DO NOTHING RETURNING key",
    # Everything a vend reads, in one statement; on PostgreSQL it also locks the meter's row.
    "load": "SELECT m.id, m.drn, m.iin, m.supply_group_id, m.customer_id, m.tariff_id, m.utility, m.ti, m.kt, "
    "m.krn, m.ea, m.base_date, m.ken, m.status, m.last_tid, m.pending_key, "
    "g.sgc, g.krn AS g_krn, g.kt AS g_kt, g.ea AS g_ea, g.base_date AS g_base_date, g.ken AS g_ken, "
    "t.currency, t.carry_leftover, "
    "(SELECT v.id FROM tariff_versions v WHERE v.tariff_id = m.tariff_id AND v.effective_from <= %(at)s "
    "ORDER BY v.effective_from DESC LIMIT 1) AS version_id, "
    "c.debt, c.debt_rate, c.carried, c.fbe_eligible, "
    "mm.units AS month_units, mm.fixed_charged, mm.fbe_issued, "
    "(SELECT credit_limit FROM vendors WHERE id = %(vendor_id)s) AS credit_limit "
    "FROM meters m JOIN supply_groups g ON g.id = m.supply_group_id "
    "LEFT JOIN tariffs t ON t.id = m.tariff_id "
    "LEFT JOIN customers c ON c.id = m.customer_id "
    "LEFT JOIN meter_months mm ON mm.meter_id = m.id AND mm.month = %(month)s "
    "WHERE m.drn = %(drn)s",
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


def claim_and_load(conn: Connection, claim: dict[str, Any], load: dict[str, Any]) -> tuple[bool, dict[str, Any] | None]:
    """Claim the idempotency key and read (and lock) the meter with all a vend needs: one round trip.

    Returns whether the key was claimed (False: another request has it) and the meter's row.
    """
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.pipeline():
            claiming = raw.cursor(row_factory=dict_row)
            claiming.execute(SQL["claim"], claim)
            loading = raw.cursor(row_factory=dict_row)
            loading.execute(SQL["load"] + " FOR UPDATE OF m", load)
        claimed, row = claiming.fetchone(), loading.fetchone()
    else:
        claimed = conn.exec_driver_sql(_SQLITE["claim"], claim).mappings().first()
        found = conn.exec_driver_sql(_SQLITE["load"], load).mappings().first()
        row = dict(found) if found is not None else None
        if row is not None and isinstance(row["pending_key"], str):
            row["pending_key"] = json.loads(row["pending_key"])
    return claimed is not None, row


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
