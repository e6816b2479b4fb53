"""Opening the database, safely: durability settings are checked, not assumed.

A confirmed vend is money. SQLite runs in WAL mode with ``synchronous=FULL``
and every write transaction starts with ``BEGIN IMMEDIATE`` (so two writers
never deadlock on a lock upgrade); PostgreSQL must have ``fsync`` and
``synchronous_commit`` on. Measured on this project's machine, anything less
lost confirmed commits in simulated power cuts, so the service refuses to
start on it.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import CheckConstraint, Engine, create_engine, event, inspect, text
from sqlalchemy.exc import DBAPIError, DisconnectionError

from .errors import VendError, database_failure

DEFAULT_URL = "sqlite:///mita.db"
CONNECT_TIMEOUT_S = 5
#: libpq's TCP settings for every PostgreSQL connection: a server host that vanished (power, a cut cable, a
#: partition) is noticed in about a minute (keepalives: 30 s idle, then 3 probes 10 s apart), and data sent but
#: never acknowledged gives up after 30 s (``tcp_user_timeout``), instead of the kernel's two hours and fifteen
#: minutes. A server that is there but silent answers the probes: the event loop's vend has a deadline of its own
#: (``hotpath.ROUND_TRIP_DEADLINE_S``).
TCP_ARGS: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
                             "keepalives_count": 3, "tcp_user_timeout": 30_000}  # fmt: skip
PING_AFTER_IDLE_S = 0.5
MIGRATIONS = str(Path(__file__).with_name("migrations"))


def normalise_url(url: str) -> str:
    """Plain ``postgresql://`` URLs use psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def make_engine(url: str = DEFAULT_URL, pool_size: int = 10) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _sqlite_begin(conn: Any) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    # Pre-ping, for connections that sat idle: one a database restart cut is found and replaced at checkout, so
    # the first requests after the restart succeed instead of answering 503. A connection back in use within
    # PING_AFTER_IDLE_S is not pinged (under load none is idle, and a ping is a round trip per request); one a
    # restart cut while busy fails its statement, and SQLAlchemy then drops every connection of the pool.
    # The connect timeout keeps an unreachable server from holding a request thread for minutes; TCP_ARGS a dead one.
    engine = create_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_recycle=1800,
        connect_args={"connect_timeout": CONNECT_TIMEOUT_S, **TCP_ARGS},
    )

    @event.listens_for(engine, "checkin")
    def _checked_in(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("idle_since", time.monotonic()) < PING_AFTER_IDLE_S:
            return
        try:
            dbapi_conn.execute("SELECT 1")
            dbapi_conn.rollback()
        except Exception:
            raise DisconnectionError("a pooled connection did not answer its ping") from None  # the pool reconnects

    return engine


def check_durability(engine: Engine) -> None:
    """Refuse settings under which a confirmed vend could be lost."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            mode = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
            sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
            if str(mode).lower() != "wal" or sync != 2:
                msg = f"SQLite must run with WAL and synchronous=FULL (got {mode}, {sync})"
                raise VendError("unsafe_database", msg)
        elif engine.dialect.name == "postgresql":
            for setting in ("fsync", "synchronous_commit"):
                value = conn.execute(text(f"SHOW {setting}")).scalar()
                if value == "off":
                    raise VendError("unsafe_database", f"PostgreSQL {setting} is off: confirmed vends could be lost")
        else:
            raise VendError("unsafe_database", f"unsupported database {engine.dialect.name}")


def check_existing(engine: Engine) -> None:
    """A database a command may read: there already (SQLite makes a missing file on connect, so that is asked
    first) and migrated; only ``mita db upgrade`` and ``mita demo`` make one."""
    shown = engine.url.render_as_string(hide_password=True)
    path = engine.url.database
    if engine.dialect.name == "sqlite" and path and path != ":memory:" and not Path(path).exists():
        raise VendError("database_missing", f"there is no database at {shown}: run mita db upgrade to make one")
    try:
        check_ready(engine)
    except VendError as exc:
        raise VendError(exc.code, f"{exc.message} (database {shown})") from None


def check_ready(engine: Engine) -> None:
    """Reachable, durable and migrated to the newest schema, or a typed error saying which is not so."""
    try:
        with engine.connect() as conn:
            migrated = inspect(conn).has_table("alembic_version")
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar() if migrated else None
    except DBAPIError as exc:
        raise database_failure(exc) from None
    if current != schema_head():
        raise VendError(
            "schema_outdated",
            f"the database schema is at {current or 'no revision'} (newest {schema_head()}): run mita db upgrade",
        )
    check_durability(engine)


def schema_drift(engine: Engine) -> list[str]:
    """How the migrated database differs from the models (``mita db check``); empty when they agree.

    Alembic's comparison (tables, columns, types, nullability, keys, indexes, foreign keys) plus the CHECK
    constraints by name, which Alembic does not compare: the statuses and kinds the code relies on.
    """
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from .schema import READINGS_PARTITION, metadata

    def ours(name: str | None, kind: str, parents: Any) -> bool:
        return not (kind == "table" and name is not None and READINGS_PARTITION.fullmatch(name))

    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": ours})
        found = [_describe(diff) for diff in compare_metadata(context, metadata)]
        inspector = inspect(conn)
        present = set(inspector.get_table_names())
        for table in metadata.sorted_tables:
            if table.name not in present:  # Alembic reported it as a table to add
                continue
            want = {str(c.name) for c in table.constraints if isinstance(c, CheckConstraint) and c.name}
            have = {str(c["name"]) for c in inspector.get_check_constraints(table.name) if c.get("name")}
            found += [f"missing check constraint {name} on {table.name}" for name in sorted(want - have)]
            found += [f"unexpected check constraint {name} on {table.name}" for name in sorted(have - want)]
    return found


def _describe(diff: Any) -> str:
    """One line for an Alembic difference (a tuple, or a list of them for column changes)."""
    if isinstance(diff, list):
        return "; ".join(_describe(d) for d in diff)
    what, *args = diff
    named = [getattr(a, "name", None) or getattr(getattr(a, "table", None), "name", None) or a for a in args]
    return f"{what}: " + ", ".join(str(x) for x in named if x is not None)


@functools.cache
def schema_head() -> str:
    """The newest migration's revision."""
    head = ScriptDirectory.from_config(alembic_config(DEFAULT_URL)).get_current_head()
    assert head is not None
    return head


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", MIGRATIONS)
    cfg.set_main_option("sqlalchemy.url", normalise_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str = DEFAULT_URL) -> None:
    """Bring the schema to the newest migration (``mita db upgrade``)."""
    command.upgrade(alembic_config(url), "head")
