"""The vend's writes as plain SQL, sent in one round trip on PostgreSQL.

A vend writes nine kinds of rows. Through the SQL expression layer, one
statement at a time, that was most of a vend's time. Here the statements are
fixed SQL text (with ``%(name)s`` parameters; SQLite gets ``:name``) run one
after another on SQLite, and on PostgreSQL folded into one statement, still
inside the vend's transaction. The columns are those of :mod:`mita.vend.schema`; the
service's tests run on both databases, so the two stay in step.
"""

from __future__ import annotations

import datetime as dt
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
    "(SELECT credit_limit FROM vendors WHERE id = %(vendor_id)s) AS credit_limit, "
    "k.id AS key_id, k.dkga AS key_dkga, k.status AS key_status, k.issued_until AS key_until, "
    "k.credit_limit AS key_limit, "
    "EXISTS (SELECT 1 FROM meter_endpoints e WHERE e.meter_id = m.id) AS connected "
    "FROM meters m JOIN supply_groups g ON g.id = m.supply_group_id "
    "LEFT JOIN vending_keys k ON k.supply_group_id = m.supply_group_id AND k.krn = m.krn "
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
    "outbox": "INSERT INTO outbox (vend_id, channel, recipient, dedupe_key, payload, status, attempts, "
    "next_attempt_at, created_at) VALUES (%(vend_id)s, 'receipt', %(recipient)s, %(dedupe_key)s, %(payload)s, "
    "'pending', 0, %(at)s, %(at)s) ON CONFLICT (dedupe_key) DO NOTHING",
    "answer": "UPDATE idempotency SET status_code = 201, response = %(response)s, vend_id = %(vend_id)s "
    "WHERE api_key_id = %(api_key_id)s AND key = %(key)s",
}
# On PostgreSQL all of a vend's writes are one statement (data-modifying WITH clauses, rows passed as
# arrays): one parse of a prepared statement, one round trip, whatever the number of tokens and ledger lines.
PG_VEND = (
    "WITH v AS (INSERT INTO vends (id, vendor_id, api_key_id, meter_id, customer_id, kind, amount, units, receipt, "
    "status, created_at) VALUES (%(vend_id)s, %(vendor_id)s, %(api_key_id)s, %(meter_id)s, %(customer_id)s, "
    "'purchase', %(amount)s, %(units)s, %(receipt)s::json, 'completed', %(at)s)), "
    "t AS (INSERT INTO tokens (vend_id, meter_id, seq, kind, tid, base_date, token_class, subclass, digits, units, "
    "created_at) SELECT %(vend_id)s, %(meter_id)s, x.seq, x.kind, x.tid, x.base_date, x.cls, x.sub, x.digits, "
    "x.units, %(at)s FROM unnest(%(t_seq)s::int[], %(t_kind)s::text[], %(t_tid)s::bigint[], %(t_base)s::int[], "
    "%(t_cls)s::int[], %(t_sub)s::int[], %(t_digits)s::text[], %(t_units)s::bigint[]) "
    "AS x(seq, kind, tid, base_date, cls, sub, digits, units)), "
    "m AS (UPDATE meters SET last_tid = COALESCE(%(m_tid)s::bigint, last_tid), "
    "pending_key = COALESCE(%(m_pending)s::json, pending_key) WHERE id = %(meter_id)s), "
    "l AS (INSERT INTO ledger (vend_id, account, debit, credit, created_at) SELECT %(vend_id)s, x.account, x.debit, "
    "x.credit, %(at)s FROM unnest(%(l_account)s::text[], %(l_debit)s::bigint[], %(l_credit)s::bigint[]) "
    "AS x(account, debit, credit)), "
    "mm AS (INSERT INTO meter_months (meter_id, month, units, purchases, fbe_issued, fixed_charged) "
    "VALUES (%(meter_id)s, %(month)s, %(mm_units)s, 1, %(fbe)s, %(fixed)s) "
    "ON CONFLICT (meter_id, month) DO UPDATE SET units = meter_months.units + excluded.units, "
    "purchases = meter_months.purchases + 1, fbe_issued = meter_months.fbe_issued OR excluded.fbe_issued, "
    "fixed_charged = meter_months.fixed_charged OR excluded.fixed_charged), "
    "a AS (INSERT INTO audit (at, actor, action, entity, entity_id, detail) "
    "VALUES (%(at)s, %(actor)s, 'vend', 'vend', %(vend_id)s, %(detail)s::json)), "
    "o AS (INSERT INTO outbox (vend_id, channel, recipient, dedupe_key, payload, status, attempts, "
    "next_attempt_at, created_at) VALUES (%(vend_id)s, 'receipt', %(o_recipient)s, %(o_dedupe)s, %(payload)s::json, "
    "'pending', 0, %(at)s, %(at)s) ON CONFLICT (dedupe_key) DO NOTHING), "
    "c AS (UPDATE customers SET debt = debt - %(c_debt)s, carried = carried - %(c_in)s + %(c_out)s, "
    "refund_balance = refund_balance + %(c_refund)s WHERE id = %(c_id)s) "
    "UPDATE idempotency SET status_code = 201, response = %(response)s::json, vend_id = %(vend_id)s "
    "WHERE api_key_id = %(api_key_id)s AND key = %(key)s"
)


def _pg_params(writes: list[Write]) -> dict[str, Any]:
    """The one-statement form's parameters, from the same list of writes SQLite runs one by one."""
    w: dict[str, Any] = dict(writes)
    vend, tokens, lines, month = w["vend"], w["token"], w["ledger"], w["month"]
    customer = w.get("customer") or {"id": None, "debt": 0, "carried_in": 0, "carried_out": 0, "refund": 0}
    return {
        **{k: vend[k] for k in ("vendor_id", "api_key_id", "meter_id", "customer_id", "amount", "units", "at")},
        "vend_id": vend["id"],
        "receipt": vend["receipt"],
        "t_seq": [t["seq"] for t in tokens],
        "t_kind": [t["kind"] for t in tokens],
        "t_tid": [t["tid"] for t in tokens],
        "t_base": [t["base_date"] for t in tokens],
        "t_cls": [t["token_class"] for t in tokens],
        "t_sub": [t["subclass"] for t in tokens],
        "t_digits": [t["digits"] for t in tokens],
        "t_units": [t["units"] for t in tokens],
        "m_tid": w["meter_tid"]["tid"] if "meter_tid" in w else None,
        "m_pending": w["meter_pending"]["pending"] if "meter_pending" in w else None,
        "l_account": [x["account"] for x in lines],
        "l_debit": [x["debit"] for x in lines],
        "l_credit": [x["credit"] for x in lines],
        "month": month["month"],
        "mm_units": month["units"],
        "fbe": month["fbe"],
        "fixed": month["fixed"],
        "actor": w["audit"]["actor"],
        "detail": w["audit"]["detail"],
        "payload": w["outbox"]["payload"],
        "o_recipient": w["outbox"]["recipient"],
        "o_dedupe": w["outbox"]["dedupe_key"],
        "c_id": customer["id"],
        "c_debt": customer["debt"],
        "c_in": customer["carried_in"],
        "c_out": customer["carried_out"],
        "c_refund": customer["refund"],
        "response": w["answer"]["response"],
        "key": w["answer"]["key"],
    }


# Claim the key and lock the meter in one statement. The rest is read by a second statement, after the
# lock is held: under READ COMMITTED a locking read re-checks the locked row, but rows it joins (the
# customer's balances, the month's units) would come from the statement's earlier snapshot, stale by
# whatever the vend we waited for has just committed.
PG_CLAIM_AND_LOCK = (
    "WITH claim AS (" + SQL["claim"] + ") "
    "SELECT (SELECT key FROM claim) AS claimed, id FROM meters WHERE drn = %(drn)s FOR UPDATE"
)


def _sqlite_params(params: dict[str, Any]) -> dict[str, Any]:
    """Datetimes as SQLAlchemy writes them to SQLite, so that text comparisons and both write paths agree."""
    return {
        k: v.isoformat(sep=" ", timespec="microseconds") if isinstance(v, dt.datetime) else v for k, v in params.items()
    }


_SQLITE = {name: re.sub(r"%\((\w+)\)s", r":\1", sql) for name, sql in SQL.items()}

Write = tuple[str, dict[str, Any] | list[dict[str, Any]]]


def read_meter(conn: Connection, params: dict[str, Any]) -> dict[str, Any] | None:
    """The meter's row with all a vend reads (no lock: for quotes)."""
    sql = SQL["load"] if conn.dialect.name == "postgresql" else _SQLITE["load"]
    if conn.dialect.name != "postgresql":
        params = _sqlite_params(params)
    found = conn.exec_driver_sql(sql, params).mappings().first()
    if found is None:
        return None
    row = dict(found)
    if isinstance(row["pending_key"], str):  # SQLite hands JSON columns back as text (and dates too)
        row["pending_key"] = json.loads(row["pending_key"])
    if isinstance(row["key_until"], str):
        row["key_until"] = dt.datetime.fromisoformat(row["key_until"])
    return row


def claim_and_load(
    conn: Connection, claim: dict[str, Any], reading: dict[str, Any]
) -> tuple[bool, dict[str, Any] | None]:
    """Claim the idempotency key, lock the meter, and read all a vend needs: two round trips.

    Returns whether the key was claimed (False: another request has it) and the meter's row.
    """
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor(row_factory=dict_row) as cur:
            cur.execute(PG_CLAIM_AND_LOCK, {**claim, **reading})
            locked = cur.fetchone()
            if locked is None:  # no such meter (the claim is rolled back with the transaction)
                return True, None
            claimed = locked["claimed"]
            cur.execute(SQL["load"], reading)
            row = cur.fetchone()
    else:
        claimed = conn.exec_driver_sql(_SQLITE["claim"], _sqlite_params(claim)).mappings().first()
        row = read_meter(conn, reading)
    return claimed is not None, row


def run(conn: Connection, writes: list[Write]) -> None:
    """Execute a vend's ``writes`` in its transaction: one statement on PostgreSQL, in order on SQLite."""
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur:
            cur.execute(PG_VEND, _pg_params(writes))
        return
    for name, params in writes:
        if isinstance(params, dict):
            conn.exec_driver_sql(_SQLITE[name], _sqlite_params(params))
        else:
            conn.exec_driver_sql(_SQLITE[name], [_sqlite_params(p) for p in params])
