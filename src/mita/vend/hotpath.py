"""The vend's SQL as plain text, and the two ways it is sent.

A vend writes nine kinds of rows. Through the SQL expression layer, one statement at a time, that was most of
a vend's time. Here the statements are fixed SQL text (with ``%(name)s`` parameters; SQLite gets ``:name``), run
one after another on SQLite, and on PostgreSQL folded into one statement (its values one JSON document), still
inside the vend's transaction. The columns are those of :mod:`mita.vend.schema`; the service's tests run on both
databases, so the two stay in step.

On PostgreSQL a vend is sent in one of two ways:

| path | run by | round trips |
|---|---|---|
| the thread's | ``Purchases.vend`` (SQLAlchemy's connection) | 3: BEGIN / claim, lock, read / writes, COMMIT |
| the event loop's | ``Purchases.vend_async`` (:class:`AsyncPool`) | 2: BEGIN, claim, lock, read / writes, COMMIT |

The thread's steps after BEGIN are psycopg pipelines (:func:`claim_and_load`, :func:`run`); the event loop's
(:func:`claim_and_load_async`, :func:`run_async`) are one batch each, BEGIN and COMMIT in them.
The event loop's statements are prepared once per connection and run in libpq's pipeline mode, their parameters
sent as values: one batch of messages out and one of answers back per step.
"""

from __future__ import annotations

import asyncio
import collections
import datetime as dt
import json
import re
import weakref
from typing import Any, ClassVar

import psycopg
from psycopg import pq
from psycopg.abc import Transformer
from psycopg.adapt import PyFormat
from psycopg.adapt import Transformer as Adapter
from psycopg.errors import error_from_result
from psycopg.rows import dict_row
from sqlalchemy import Connection, Engine, event

from .database import CONNECT_TIMEOUT_S, TCP_ARGS
from .errors import VendError
from .jsontext import json_text

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
    "'pending', 0, %(at)s, %(at)s)",  # its key names the new vend: nothing to conflict with
    "answer": "UPDATE idempotency SET status_code = 201, response = %(response)s, vend_id = %(vend_id)s "
    "WHERE api_key_id = %(api_key_id)s AND key = %(key)s",
}
# On PostgreSQL all of a vend's writes are one statement (data-modifying WITH clauses), its values one JSON
# document read once by json_to_record: one parse of a prepared statement, one round trip whatever the number
# of tokens and ledger lines, and few strings for the driver to send (forty parameters and eight arrays cost
# the driver more CPU than the statement costs the server). The JSON columns' texts (the receipt, the answer...)
# are parameters of their own, each read once by PostgreSQL as it stores it (``json`` keeps a value's text: what
# is stored is what SQLite stores); inside the document they were parsed twice, a tenth of the server's CPU.
_TEXTS = ("receipt", "detail", "payload", "response", "m_pending")
_TEXTS_SQL = ", ".join(f"%({name})s::json AS {name}" for name in _TEXTS)
_DOC_COLUMNS = (
    "vend_id text, vendor_id bigint, api_key_id bigint, meter_id bigint, customer_id bigint, amount bigint, "
    "units bigint, tokens json, m_tid bigint, lines json, month text, mm_units bigint, fbe boolean, fixed boolean, "
    "actor text, o_recipient text, o_dedupe text, c_id bigint, c_debt bigint, c_in bigint, c_out bigint, "
    "c_refund bigint, key text"
)
PG_VEND = (
    f"WITH d AS MATERIALIZED (SELECT x.*, %(at)s::timestamp AS at, {_TEXTS_SQL} FROM json_to_record(%(doc)s::json) "
    f"AS x({_DOC_COLUMNS})), "
    "v AS (INSERT INTO vends (id, vendor_id, api_key_id, meter_id, customer_id, kind, amount, units, receipt, "
    "status, created_at) SELECT vend_id, vendor_id, api_key_id, meter_id, customer_id, 'purchase', amount, units, "
    "receipt, 'completed', d.at FROM d), "
    "t AS (INSERT INTO tokens (vend_id, meter_id, seq, kind, tid, base_date, token_class, subclass, digits, units, "
    "created_at) SELECT d.vend_id, d.meter_id, x.seq, x.kind, x.tid, x.base_date, x.token_class, x.subclass, "
    "x.digits, x.units, d.at FROM d, json_to_recordset(d.tokens) AS x(seq int, kind text, tid bigint, "
    "base_date int, token_class int, subclass int, digits text, units bigint)), "
    "m AS (UPDATE meters SET last_tid = COALESCE(d.m_tid, last_tid), pending_key = COALESCE(d.m_pending, "
    "pending_key) FROM d WHERE meters.id = d.meter_id), "
    "l AS (INSERT INTO ledger (vend_id, account, debit, credit, created_at) SELECT d.vend_id, x.account, x.debit, "
    "x.credit, d.at FROM d, json_to_recordset(d.lines) AS x(account text, debit bigint, credit bigint)), "
    "mm AS (INSERT INTO meter_months (meter_id, month, units, purchases, fbe_issued, fixed_charged) "
    "SELECT meter_id, month, mm_units, 1, fbe, fixed FROM d "
    "ON CONFLICT (meter_id, month) DO UPDATE SET units = meter_months.units + excluded.units, "
    "purchases = meter_months.purchases + 1, fbe_issued = meter_months.fbe_issued OR excluded.fbe_issued, "
    "fixed_charged = meter_months.fixed_charged OR excluded.fixed_charged), "
    "a AS (INSERT INTO audit (at, actor, action, entity, entity_id, detail) "
    "SELECT d.at, actor, 'vend', 'vend', vend_id, detail FROM d), "
    "o AS (INSERT INTO outbox (vend_id, channel, recipient, dedupe_key, payload, status, attempts, "
    "next_attempt_at, created_at) SELECT vend_id, 'receipt', o_recipient, o_dedupe, payload, 'pending', 0, d.at, "
    "d.at FROM d), "
    "c AS (UPDATE customers SET debt = debt - d.c_debt, carried = carried - d.c_in + d.c_out, "
    "refund_balance = refund_balance + d.c_refund FROM d WHERE customers.id = d.c_id) "
    "UPDATE idempotency SET status_code = 201, response = d.response, vend_id = d.vend_id "
    "FROM d WHERE idempotency.api_key_id = d.api_key_id AND idempotency.key = d.key"
)
_TOKEN_FIELDS = ("seq", "kind", "tid", "base_date", "token_class", "subclass", "digits", "units")


def _pg_params(writes: list[Write]) -> dict[str, Any]:
    """The one-statement form's parameters, from the same list of writes SQLite runs one by one: the vend's
    time, the JSON texts to store, and everything else as one JSON document."""
    w: dict[str, Any] = dict(writes)
    vend, tokens, lines, month = w["vend"], w["token"], w["ledger"], w["month"]
    customer = w.get("customer") or {"id": None, "debt": 0, "carried_in": 0, "carried_out": 0, "refund": 0}
    values = {
        **{k: vend[k] for k in ("vendor_id", "api_key_id", "meter_id", "customer_id", "amount", "units")},
        "vend_id": vend["id"],
        "tokens": [{k: t[k] for k in _TOKEN_FIELDS} for t in tokens],
        "m_tid": w["meter_tid"]["tid"] if "meter_tid" in w else None,
        "lines": [{"account": x["account"], "debit": x["debit"], "credit": x["credit"]} for x in lines],
        "month": month["month"],
        "mm_units": month["units"],
        "fbe": month["fbe"],
        "fixed": month["fixed"],
        "actor": w["audit"]["actor"],
        "o_recipient": w["outbox"]["recipient"],
        "o_dedupe": w["outbox"]["dedupe_key"],
        "c_id": customer["id"],
        "c_debt": customer["debt"],
        "c_in": customer["carried_in"],
        "c_out": customer["carried_out"],
        "c_refund": customer["refund"],
        "key": w["answer"]["key"],
    }
    return {
        "at": vend["at"],
        "doc": json_text(values),
        # already JSON texts (SQLite stores them as they are): sent as they are, not parsed and dumped again
        "receipt": vend["receipt"],
        "detail": w["audit"]["detail"],
        "payload": w["outbox"]["payload"],
        "response": w["answer"]["response"],
        "m_pending": w["meter_pending"]["pending"] if "meter_pending" in w else None,
    }


# Claim the key and lock the meter in one statement. The rest is read by a second statement, after the
# lock is held: under READ COMMITTED a locking read re-checks the locked row, but rows it joins (the
# customer's balances, the month's units) would come from the statement's earlier snapshot, stale by
# whatever the vend we waited for has just committed.
#
# The same statement reads the session's durability settings (finding 3 of docs/reliability.md): the start-up
# check cannot see ``synchronous_commit = off`` set live (ALTER SYSTEM and a reload) after the server started,
# and a vend committed under it could be lost in a crash after its answer. Read with every vend, in a statement
# it sends anyway, it costs no round trip.
PG_CLAIM_AND_LOCK = (
    "WITH claim AS (" + SQL["claim"] + ") "
    "SELECT (SELECT key FROM claim) AS claimed, id, current_setting('synchronous_commit') AS synchronous_commit, "
    "current_setting('fsync') AS fsync FROM meters WHERE drn = %(drn)s FOR UPDATE"
)
#: The settings under which a committed vend could be lost in a crash, and the value that makes it so.
UNSAFE = {"synchronous_commit": "off", "fsync": "off"}
#: How long the event loop's vend waits for each answer from PostgreSQL. A server that is there but silent (a
#: lost answer behind a stuck proxy, a lock held by a hung transaction) would otherwise hold the request and its
#: connection for as long as it stays silent, and enough such requests would stall every vend of the process; past
#: the deadline the connection is closed and the till is answered 503 ``retry``: its retry, with the same key,
#: finds the vend if the COMMIT had gone through. (The thread's vend has libpq's TCP limits, ``database.TCP_ARGS``.)
ROUND_TRIP_DEADLINE_S = 15.0


def check_durable(locked: dict[str, Any]) -> None:
    """Refuse the vend (before any of its writes; the caller rolls back the claim) if the session it runs in could
    lose its commit: 503 ``unsafe_database``, as at start-up."""
    for name, unsafe in UNSAFE.items():
        if locked[name] == unsafe:
            raise VendError("unsafe_database", f"PostgreSQL {name} is off: confirmed vends could be lost")


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
    """Claim the idempotency key, lock the meter, and read all a vend needs.

    On PostgreSQL the two statements go in one pipeline (one round trip after the transaction's BEGIN): the
    server runs them in order, so the read's snapshot is taken with the lock held. Returns whether the key was
    claimed (False: another request has it) and the meter's row.
    """
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor(row_factory=dict_row) as lock, raw.cursor(row_factory=dict_row) as load:
            with raw.pipeline():
                lock.execute(PG_CLAIM_AND_LOCK, {**claim, **reading})
                load.execute(SQL["load"], reading)
            locked = lock.fetchone()
            row = load.fetchone()
        if locked is None:  # no such meter (the claim is rolled back with the transaction)
            return True, None
        check_durable(locked)
        claimed = locked["claimed"]
    else:
        claimed = conn.exec_driver_sql(_SQLITE["claim"], _sqlite_params(claim)).mappings().first()
        row = read_meter(conn, reading)
    return claimed is not None, row


def run(conn: Connection, writes: list[Write], *, commit: bool = False) -> None:
    """Execute a vend's ``writes`` in its transaction: one statement on PostgreSQL, in order on SQLite.

    ``commit``: these are the transaction's last writes, and on PostgreSQL its COMMIT goes in the same round
    trip (a pipeline); the caller's own commit then finds nothing to do. A failed COMMIT raises here, inside the
    caller's transaction block, as it would have there.
    """
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur, raw.pipeline():
            cur.execute(PG_VEND, _pg_params(writes))
            if commit:
                cur.execute("COMMIT", prepare=False)
        return
    for name, params in writes:
        if isinstance(params, dict):
            conn.exec_driver_sql(_SQLITE[name], _sqlite_params(params))
        else:
            conn.exec_driver_sql(_SQLITE[name], [_sqlite_params(p) for p in params])


# ---------------------------------------------------------------------- the event loop's path (PostgreSQL)


class AsyncPool:
    """A process's psycopg connections for the vend on the event loop (``Purchases.vend_async``).

    Autocommit connections that send their own BEGIN and COMMIT, so that each goes in a pipeline with the
    statements beside it: two round trips per vend. As many as the engine's pool keeps (``MITA_THREADS``, at
    least 4), not its overflow too: a vend that finds them all busy waits for one (first come, first served),
    which costs the process little, while every backend PostgreSQL runs at once beyond what its CPUs serve costs
    it more work per vend (on 2 CPUs, 16 backends did each vend with about a fifth more CPU than 8: lock and WAL
    waits, context switches; ``benchmarks/README.md``). A connection holds no
    asyncio object, so one pool serves whichever event loop asks (a test client's too); the engine's
    ``dispose`` closes the idle ones.
    """

    _pools: ClassVar[weakref.WeakKeyDictionary[Engine, AsyncPool]] = weakref.WeakKeyDictionary()

    def __init__(self, conninfo: str, size: int) -> None:
        self.conninfo = conninfo
        self.size = size
        self.idle: list[psycopg.AsyncConnection[Any]] = []
        self.busy = 0  # connections handed out, or being opened
        self.waiters: collections.deque[asyncio.Future[psycopg.AsyncConnection[Any] | None]] = collections.deque()

    @classmethod
    def of(cls, engine: Engine) -> AsyncPool | None:
        """The engine's pool (made on first use); None on SQLite."""
        pool = cls._pools.get(engine)
        if pool is None:
            if engine.dialect.name != "postgresql":
                return None
            url = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
            size = max(4, engine.pool.size())  # type: ignore[attr-defined]
            made = cls._pools[engine] = cls(url, size)

            def disposed(_: Any) -> None:
                cls._pools.pop(engine, None)
                made.close()

            event.listen(engine, "engine_disposed", disposed)
            return made
        return pool

    async def take(self) -> psycopg.AsyncConnection[Any]:
        """An idle connection, a new one, or the next one given back."""
        if self.busy < self.size:
            self.busy += 1
            conn = self.idle.pop() if self.idle else None
        else:
            waiter = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                conn = await waiter  # the slot comes with it: a connection, or None (open one)
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():  # handed over just as this task was cancelled
                    self._release(waiter.result())
                else:
                    self.waiters.remove(waiter)
                raise
        if conn is not None:
            return conn
        try:
            conn = await psycopg.AsyncConnection.connect(
                self.conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S, **TCP_ARGS
            )
        except BaseException:
            self._release(None)
            raise
        try:
            await prepare(conn)
        except BaseException:
            await conn.close()
            self._release(None)
            raise
        return conn

    async def give(self, conn: psycopg.AsyncConnection[Any], *, committed: bool) -> None:
        """Back to the pool: rolled back first unless ``committed``; closed if it is broken."""
        try:
            if not committed and conn.info.transaction_status != pq.TransactionStatus.IDLE:
                await conn.execute("ROLLBACK", prepare=False)
        except psycopg.Error:
            pass
        if conn.info.transaction_status != pq.TransactionStatus.IDLE:
            await conn.close()
            self._release(None)
        else:
            self._release(conn)

    def _release(self, conn: psycopg.AsyncConnection[Any] | None) -> None:
        """A slot back: to the first waiter (with ``conn``, or None to open one), else to the pool."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        self.busy -= 1
        if conn is not None:
            self.idle.append(conn)

    def close(self) -> None:
        for conn in self.idle:
            conn.pgconn.finish()  # no round trip: the server ends the session when the socket closes
        self.idle.clear()


def _positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """``%(name)s`` parameters as ``$1``, ``$2``... (for PREPARE), and the names in that order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return re.sub(r"%\((\w+)\)s", number, sql), tuple(names)


# The event loop's statements, prepared once per connection (a session's) and run in libpq's pipeline mode: each
# step's statements (BEGIN, claim, read; write, COMMIT) are queued in libpq's buffer with their parameters as
# values, and go in one send with one sync: one message batch out and one batch of answers back per step, with the
# plans kept. (psycopg's own pipeline flushes at each statement: four sends, each waking the server's process, on
# a machine where that is what costs; the same statements as ``EXECUTE name(literals)`` in one simple query cost
# PostgreSQL the parsing of the literals, the 4 KB document among them, and the client their quoting.)
_PREPARED = {
    "mita_vend_claim": _positional(PG_CLAIM_AND_LOCK),
    "mita_vend_load": _positional(SQL["load"]),
    "mita_vend_write": _positional(PG_VEND),
}
#: A step: ``("BEGIN" or "COMMIT", None)``, or a prepared statement's name and its parameters by name.
Step = tuple[str, dict[str, Any] | None]
#: Each connection's adapter (values to parameters, result columns to Python), kept with it.
_ADAPTERS: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], Transformer] = weakref.WeakKeyDictionary()


def _adapter(conn: psycopg.AsyncConnection[Any]) -> Transformer:
    tx = _ADAPTERS.get(conn)
    if tx is None:
        tx = _ADAPTERS[conn] = Adapter(conn)
    return tx


def _texts(values: list[Any]) -> list[bytes | None] | None:
    """The parameters in text, as psycopg's adapters dump them for a UTF-8 connection (their types are the prepared
    statement's), for the kinds a vend sends: text, integers, times without a zone, NULL. None for anything else,
    or a text with a NUL (which PostgreSQL cannot store): psycopg's adapters dump those, or refuse them. Their
    general machinery (an adapter looked up per value) cost a vend more than the rest of sending its statements."""
    out: list[bytes | None] = []
    for v in values:
        kind = type(v)
        if kind is str:
            if "\x00" in v:
                return None
            out.append(v.encode())
        elif kind is int:
            out.append(str(v).encode())
        elif v is None:
            out.append(None)
        elif kind is dt.datetime and v.tzinfo is None:
            out.append(v.isoformat(" ").encode())
        else:
            return None
    return out


def _queue(pgconn: pq.abc.PGconn, tx: Transformer, steps: list[Step]) -> None:
    """Each step into libpq's buffer (nothing sent yet), then the sync that ends the batch."""
    utf8 = tx.encoding == "utf-8"  # the connection's client encoding, as the adapter encodes texts
    for name, params in steps:
        if params is None:
            pgconn.send_query_params(name.encode(), None)
        else:
            values = [params[n] for n in _PREPARED[name][1]]
            texts = _texts(values) if utf8 else None
            dumped = tx.dump_sequence(values, [PyFormat.TEXT] * len(values)) if texts is None else texts
            pgconn.send_query_prepared(name.encode(), dumped)
    pgconn.pipeline_sync()


async def _exchange(pgconn: pq.abc.PGconn) -> list[pq.abc.PGresult]:
    """Send what :func:`_queue` buffered and take every result up to the sync (one per statement; a statement
    after a failed one answers ``PIPELINE_ABORTED``), within :data:`ROUND_TRIP_DEADLINE_S` (``TimeoutError``).

    libpq's asynchronous calls, as psycopg's own waiting runs them, with one timer for the whole exchange: psycopg's
    general-purpose wait (a poll before each write, a timer per wait) and a timeout scope around it cost the vend
    more CPU than this does in all. As in psycopg, the socket is watched only while waiting, never while libpq
    reads: a reader left on through a read in which libpq met the end of the session (a restart, a terminated
    backend) was never called again under uvloop (uvicorn's loop), though the end was there to read, and every
    vend on such a connection waited out the deadline (``tests/vend/test_hotpath_ends.py``)."""
    loop = asyncio.get_running_loop()
    fd = pgconn.socket
    waiter: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not waiter.done():
            waiter.set_result(None)

    def late() -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError())

    timer = loop.call_later(ROUND_TRIP_DEADLINE_S, late)
    results: list[pq.abc.PGresult] = []
    try:
        while pgconn.flush():  # only a batch bigger than the socket's buffer waits here
            loop.add_writer(fd, ready)
            try:
                await waiter
            finally:
                loop.remove_writer(fd)
            waiter = loop.create_future()
        while True:
            loop.add_reader(fd, ready)  # only while waiting: libpq closes the socket when it reads its end
            try:
                await waiter
            finally:
                loop.remove_reader(fd)
            waiter = loop.create_future()
            pgconn.consume_input()
            while not pgconn.is_busy():
                result = pgconn.get_result()
                if result is None:  # the end of one statement's results
                    _check_alive(pgconn)
                    continue
                if result.status == pq.ExecStatus.PIPELINE_SYNC:
                    return results
                results.append(result)
            _check_alive(pgconn)
    except TimeoutError:  # the deadline (an OSError too, which the next clause is not for)
        raise
    except OSError as exc:  # the socket gone under the loop: as psycopg's own wait reports it
        raise psycopg.OperationalError("connection socket closed") from exc
    finally:
        timer.cancel()


def _check_alive(pgconn: pq.abc.PGconn) -> None:
    """Raise if libpq has found the session over while reading: it has closed the socket then, and no answer will
    come (a wait on would watch a closed descriptor, or another socket given its number since)."""
    if pgconn.status == pq.ConnStatus.BAD:
        message = pgconn.error_message.decode(errors="replace").strip()
        raise psycopg.OperationalError(message or "the connection to the database is lost")


async def _pipeline(conn: psycopg.AsyncConnection[Any], steps: list[Step]) -> list[pq.abc.PGresult]:
    """Run ``steps`` as one batch and wait for all their results, raising the first error as psycopg would.
    Straight on the connection's libpq handle: a cursor's machinery (its query parsing, result sets, row
    factories) cost more of a vend's CPU than the two batches themselves."""
    pgconn = conn.pgconn
    pgconn.enter_pipeline_mode()
    _queue(pgconn, _adapter(conn), steps)
    try:
        results = await _exchange(pgconn)
    except TimeoutError:
        pgconn.finish()  # its answer may still come, to a request long gone: the connection is done for
        raise VendError(
            "retry",
            f"the database did not answer within {ROUND_TRIP_DEADLINE_S:g} s; retry with the same Idempotency-Key",
        ) from None
    except BaseException:  # cancelled (the client left) or the connection lost: answers still owed, mid-pipeline
        pgconn.finish()  # so it goes nowhere near the pool again; the server rolls its transaction back
        raise
    pgconn.exit_pipeline_mode()
    return _raised(conn, results)


def _raised(conn: psycopg.AsyncConnection[Any], results: list[pq.abc.PGresult]) -> list[pq.abc.PGresult]:
    """``results``, or the first error among them raised as psycopg raises it (typed, with its SQLSTATE)."""
    for result in results:
        if result.status == pq.ExecStatus.FATAL_ERROR:
            raise error_from_result(result, encoding=conn.info.encoding)
    return results


#: Each prepared statement's column names (fixed by its text), read from its first result.
_COLUMNS: dict[str, tuple[str, ...]] = {}


def _row(tx: Transformer, result: pq.abc.PGresult, statement: str) -> dict[str, Any] | None:
    """The first row of ``statement``'s result by column name, or None."""
    if result.ntuples == 0:
        return None
    names = _COLUMNS.get(statement)
    if names is None:
        names = _COLUMNS[statement] = tuple((result.fname(i) or b"").decode() for i in range(result.nfields))
    tx.set_pgresult(result)
    values: tuple[Any, ...] = tx.load_row(0, tuple)
    return dict(zip(names, values, strict=True))


async def prepare(conn: psycopg.AsyncConnection[Any]) -> None:
    """Prepare the event loop's statements on a new connection."""
    pgconn = conn.pgconn
    pgconn.enter_pipeline_mode()
    for name, (sql, _) in _PREPARED.items():
        pgconn.send_prepare(name.encode(), sql.encode())
    pgconn.pipeline_sync()
    results = await _exchange(pgconn)
    pgconn.exit_pipeline_mode()
    _raised(conn, results)


async def claim_and_load_async(
    conn: psycopg.AsyncConnection[Any], claim: dict[str, Any], reading: dict[str, Any]
) -> tuple[bool, dict[str, Any] | None]:
    """:func:`claim_and_load` on an autocommit connection: BEGIN, the claim and lock, and the read, in one
    batch (one round trip); the read runs after the lock is held, as the statements run in order."""
    tx = _adapter(conn)
    steps: list[Step] = [("BEGIN", None), ("mita_vend_claim", {**claim, **reading}), ("mita_vend_load", reading)]
    results = await _pipeline(conn, steps)
    locked = _row(tx, results[1], "mita_vend_claim")
    if locked is None:
        return True, None
    check_durable(locked)
    return locked["claimed"] is not None, _row(tx, results[2], "mita_vend_load")


async def run_async(conn: psycopg.AsyncConnection[Any], writes: list[Write]) -> None:
    """:func:`run` and COMMIT, in one batch (one round trip)."""
    await _pipeline(conn, [("mita_vend_write", _pg_params(writes)), ("COMMIT", None)])
