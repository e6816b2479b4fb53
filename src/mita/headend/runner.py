"""Running one command at its meter: the ``headend`` outbox channel's sender.

``mita worker`` claims a command's outbox row under a lease and hands it here. The command moves queued -> sent
(one short transaction), the meter is reached over its association, and the command ends acknowledged or failed
with what the meter answered. A meter that cannot be reached puts the command back to queued and the outbox tries
again after its backoff, until the command's deadline: then it ends expired, reported, never retried again (a vend's
customer still has the tokens on the receipt).

Tokens go in the order the vend made them (a key change set first). A token the meter answers ``used`` was entered
before (by an earlier try that lost its connection, or from the keypad): it is on the meter, so delivery goes on,
and it never counts twice (the meter refuses it). Any other refusal stops the delivery: the command fails with
the meter's answer for each token tried. When the meter answers ``key_changed`` the pending key change is
confirmed (``via="meter"``).

An MQTT-native meter (endpoint transport ``mqtt``) is not reached here: its command, once ``sent``, is published
(:class:`mita.headend.mqttlink.Publisher`) and the outbox row is done; the meter's ack, applied by :meth:`settle`
(from :class:`mita.headend.mqttlink.AckListener`), ends it by the same rules, and :meth:`sweep` expires what got no
ack by its deadline.

A broker's PUBACK is not the meter's: a broker that restarts without persistence, or drops a session that expired,
loses a command it took, and the command would wait ``sent`` until its deadline (a day, for a vend's tokens). So
:meth:`sweep` also publishes again, with the same id and payload, a command still ``sent`` with no ack
``resend_after`` seconds after its last publish, then after twice that, four times..., until it was published
``max_sends`` times (``attempts``, which counts every publish) or its deadline. A meter answers a repeated id with
its first outcome and does nothing again (``mita.sim.mqttmeter``, ``docs/telemetry.md``), so a re-send is safe; the
back-off and the bound keep an offline meter, whose persistent session queues every copy, from a storm.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Collection, Mapping
from typing import Any

from psycopg.rows import namedtuple_row
from sqlalchemy import Engine, and_, bindparam, exists, false, or_, select, update
from sqlalchemy.exc import DBAPIError

from mita.outbox.senders import Message, SendError
from mita.sts import StsError
from mita.telemetry.payload import Ack
from mita.vend.lifecycles import COMMAND, CommandKind, CommandStatus, Transport
from mita.vend.schema import meter_commands, meter_endpoints, meters

from . import mqttlink, operations, registry
from .link import Association, LinkError, associate
from .mqttclient import MqttError

log = logging.getLogger("mita.headend")

S = CommandStatus
FINAL = frozenset({S.ACKNOWLEDGED, S.FAILED, S.EXPIRED})
#: The event logs a ``read_events`` command reads, by the name it gives them.
LOG_OBIS = {
    "standard": operations.STANDARD_LOG,
    "fraud": operations.FRAUD_LOG,
    "disconnector": operations.DISCONNECTOR_LOG,
    "token": operations.TOKEN_LOG,
}


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What a command did at the meter: ``error`` is None when the meter did what was asked."""

    result: dict[str, Any]
    error: str | None = None


def jsonable(value: Any) -> Any:
    """A meter's answer as JSON: value types as objects, times as ISO text, octet-strings as hex."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dt.datetime | dt.date):
        return value.isoformat()
    if isinstance(value, bytes | bytearray):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


# ---------------------------------------------------------------------- what each kind does


def deliver(assoc: Association, params: Mapping[str, Any], encoding: str, at: dt.datetime) -> Outcome:
    statuses: list[dict[str, Any]] = []
    for digits in params["tokens"]:
        status = operations.enter_token(assoc, digits, encoding)
        statuses.append({"token": digits, "status": status.code, "result": status.result})
        if status.accepted or status.code == operations.VALIDATION_OK:  # a key change section, kept by the meter
            continue
        if status.result == "used":  # entered before: it is on the meter
            continue
        return Outcome({"tokens": statuses}, f"token_refused: {status.result or status.code}")
    return Outcome({"tokens": statuses, "credit": operations.read_credit(assoc)})


def _switch(connect: bool) -> Callable[[Association, Mapping[str, Any], str, dt.datetime], Outcome]:
    def run(assoc: Association, params: Mapping[str, Any], encoding: str, at: dt.datetime) -> Outcome:
        state = operations.switch(assoc, connect)
        return Outcome({"switch": jsonable(state)})

    return run


def read_registers(assoc: Association, params: Mapping[str, Any], encoding: str, at: dt.datetime) -> Outcome:
    readings: dict[str, Any] = {}
    for name, obis in (("energy", operations.ACTIVE_ENERGY_IMPORT), ("volume", operations.WATER_VOLUME)):
        try:
            readings[name] = jsonable(operations.read_register(assoc, obis))
        except LinkError as exc:
            if exc.code != "denied":  # a water meter has no energy register, and the other way round
                raise
    return Outcome(
        {
            "registers": readings,
            "credit": operations.read_credit(assoc),
            "switch": jsonable(operations.switch_state(assoc)),
            "power_limit": operations.read_power_limit(assoc),
            "clock": jsonable(operations.read_clock(assoc)),
        }
    )


def read_events(assoc: Association, params: Mapping[str, Any], encoding: str, at: dt.datetime) -> Outcome:
    return Outcome({"logs": {name: jsonable(operations.read_log(assoc, LOG_OBIS[name])) for name in params["logs"]}})


def set_clock(assoc: Association, params: Mapping[str, Any], encoding: str, at: dt.datetime) -> Outcome:
    before = operations.read_clock(assoc)
    operations.set_clock(assoc, at)
    return Outcome({"before": jsonable(before), "clock": jsonable(operations.read_clock(assoc))})


Action = Callable[[Association, Mapping[str, Any], str, dt.datetime], Outcome]
#: The one table of what each command kind does at the meter.
ACTIONS: dict[CommandKind, Action] = {
    CommandKind.DELIVER_TOKENS: deliver,
    CommandKind.SET_POWER_LIMIT: deliver,  # an STS management token, issued when the command was queued
    CommandKind.SET_TARIFF_RATE: deliver,
    CommandKind.DISCONNECT: _switch(False),
    CommandKind.RECONNECT: _switch(True),
    CommandKind.READ_REGISTERS: read_registers,
    CommandKind.READ_EVENTS: read_events,
    CommandKind.SET_CLOCK: set_clock,
}

# ---------------------------------------------------------------------- the sender

_C = meter_commands.c
#: The command, its meter and how to reach it, locked: one statement (the endpoint outer-joined: a meter whose
#: endpoint was removed comes back with none). Statements are built once, with bound parameters: building them
#: anew for every command cost the sender more than PostgreSQL took to run them.
_ROW = (
    select(_C.id, _C.kind, _C.params, _C.status, _C.meter_id, _C.expires_at, _C.attempts, meters.c.drn, *registry.REACH)
    .join(meters, meters.c.id == _C.meter_id)
    .outerjoin(meter_endpoints, meter_endpoints.c.meter_id == _C.meter_id)
    .where(_C.id == bindparam("command"))
    .with_for_update(of=meter_commands)
)
_SENT = (
    update(meter_commands)
    .where(_C.id == bindparam("command"), _C.status == bindparam("was"))
    .values(status=S.SENT.value, attempts=_C.attempts + 1, sent_at=bindparam("at"))
)
#: The statuses a command may be sent from (the lifecycle's one table).
_SENDABLE = tuple(s.value for s, after in COMMAND.moves.items() if S.SENT in after)
#: PostgreSQL: the common case in one statement committed alone (BEGIN, SELECT ... FOR UPDATE, UPDATE and COMMIT
#: were four round trips): a command still to send, not expired, whose meter has an endpoint, moved to sent,
#: answering what :data:`_ROW` answers (its status the new one). Anything else goes the way of :data:`_ROW`.
_TAKE = (
    update(meter_commands)
    .where(
        _C.id == bindparam("command"),
        or_(*(_C.status == status for status in _SENDABLE)),  # not IN: SA expands an IN list on every execution
        _C.expires_at > bindparam("at"),
        meters.c.id == _C.meter_id,
        meter_endpoints.c.meter_id == _C.meter_id,
    )
    .values(status=S.SENT.value, attempts=_C.attempts + 1, sent_at=bindparam("at"))
    .returning(_C.id, _C.kind, _C.params, _C.status, _C.meter_id, _C.expires_at, _C.attempts, meters.c.drn,
               *registry.REACH)
)  # fmt: skip
_MOVE = update(meter_commands).where(_C.id == bindparam("command"), _C.status == bindparam("was"))
_END = _MOVE.values(
    status=bindparam("status"), result=bindparam("result"), error=bindparam("error"), finished_at=bindparam("at")
)


#: An MQTT meter's ack: its command and the command's meter, locked.
_ACKED = (
    select(_C.id, _C.kind, _C.status, meters.c.drn)
    .join(meters, meters.c.id == _C.meter_id)
    .where(_C.id == bindparam("command"))
    .with_for_update(of=meter_commands)
)
#: Commands sent and past their deadline with no answer, on meters not reached over DLMS (a DLMS command in
#: ``sent`` is its worker's, or its outbox row's once the lease runs out): expired.
_SWEEP = (
    update(meter_commands)
    .where(
        _C.status == S.SENT.value,
        _C.expires_at <= bindparam("at"),
        ~exists().where(meter_endpoints.c.meter_id == _C.meter_id, meter_endpoints.c.transport == Transport.DLMS),
    )
    .values(status=S.EXPIRED.value, error="expired: no acknowledgement by its deadline", finished_at=bindparam("at"))
)
COMMAND.check(S.SENT, S.EXPIRED)  # what the sweep does, allowed (checked once, at import)
COMMAND.check(S.SENT, S.SENT)  # and a re-send
#: Most commands one sweep re-sends (the rest wait for the next sweep, seconds later).
RESEND_BATCH = 100
#: An MQTT command re-sent: one more publish counted, claimed by the sweep that saw it (several workers sweep).
_RESENT = (
    update(meter_commands)
    .where(_C.id == bindparam("command"), _C.status == S.SENT.value, _C.attempts == bindparam("was"))
    .values(attempts=_C.attempts + 1, sent_at=bindparam("at"))
)


def resend_due(at: dt.datetime, after: float, max_sends: int) -> Any:
    """Whether a ``sent`` command's last publish (``sent_at``) is old enough to publish it again: ``after`` seconds
    after its first publish, twice that after its second, and so on; never once it was published ``max_sends``
    times. One clause per count of publishes, its time computed here (no date arithmetic in SQL, which SQLite and
    PostgreSQL spell differently)."""
    waits = [
        and_(_C.attempts == n, _C.sent_at <= at - dt.timedelta(seconds=after * 2 ** (n - 1)))
        for n in range(1, max_sends)
    ]
    return or_(*waits) if waits else false()


def _resendable(at: dt.datetime, after: float, max_sends: int) -> Any:
    """The MQTT commands to publish again now, oldest first (module docstring)."""
    return (
        select(_C.id, _C.kind, _C.params, _C.expires_at, _C.attempts, meters.c.drn)
        .join(meters, meters.c.id == _C.meter_id)
        .where(
            _C.status == S.SENT.value,
            _C.expires_at > at,
            exists().where(meter_endpoints.c.meter_id == _C.meter_id, meter_endpoints.c.transport == Transport.MQTT),
            resend_due(at, after, max_sends),
        )
        .order_by(_C.id)
        .limit(RESEND_BATCH)
    )


def _ended(
    command: int, was: CommandStatus, status: CommandStatus, result: Any, error: str | None, at: dt.datetime
) -> dict[str, Any]:
    """:data:`_END`'s parameters for a move the lifecycle allows."""
    COMMAND.check(was, status)
    return {"command": command, "was": was.value, "status": status.value, "result": result,
            "error": None if error is None else error[:200], "at": at}  # fmt: skip


class _Direct:
    """A prebuilt one-statement write run by psycopg itself in autocommit (PostgreSQL on psycopg 3): SQLAlchemy's
    rendering of the statement (compiled once, with its own bind processors), pool and error types, without its
    work on every execution (the execution context, and the result's metadata read from the cursor's description:
    0.15 ms of the worker's CPU per statement, twice per command, more than PostgreSQL spends running it)."""

    def __init__(self, engine: Engine, statement: Any, names: Collection[str]) -> None:
        dialect = engine.dialect
        compiled = statement.compile(dialect=dialect)
        self.engine, self.sql = engine, str(compiled)
        self.fixed = compiled.construct_params(dict.fromkeys(names))  # the statement's own values among them
        self.processors = {
            name: process
            for name, bind in compiled.binds.items()
            if (process := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }

    def first(self, params: Mapping[str, Any]) -> Any:
        """The first row the statement returns, or None."""
        return self._run(params, returning=True)

    def run(self, params: Mapping[str, Any]) -> int:
        """How many rows the statement changed."""
        return int(self._run(params, returning=False))

    def _run(self, params: Mapping[str, Any], returning: bool) -> Any:
        values = {**self.fixed, **params}
        for name, process in self.processors.items():
            values[name] = process(values[name])
        dbapi = self.engine.dialect.loaded_dbapi
        with self.engine.connect() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            driver.autocommit = True  # one statement: its own transaction, as durable
            try:
                with driver.cursor(row_factory=namedtuple_row) as cursor:
                    cursor.execute(self.sql, values)
                    return cursor.fetchone() if returning else cursor.rowcount
            except dbapi.Error as exc:  # as SQLAlchemy raises it: wrapped, a lost connection invalidated
                lost = self.engine.dialect.is_disconnect(exc, driver, None)
                if lost:
                    conn.invalidate(exc)
                raise DBAPIError.instance(
                    self.sql, values, exc, dbapi.Error, connection_invalidated=lost, dialect=self.engine.dialect
                ) from exc
            finally:
                if not driver.closed:
                    driver.autocommit = False


class CommandSender:
    """Runs the command an outbox row of the ``headend`` channel names.

    ``confirm_key_change(drn)`` is the vending service's confirmation (the shell composes it, since the vending
    service's job sits beside, not below, this one); ``clock`` is the utility's wall clock, as the rows are.
    ``resend_after`` and ``max_sends`` (``MITA_MQTT_RESEND_AFTER``, ``MITA_MQTT_MAX_SENDS``): when :meth:`sweep`
    publishes an unanswered MQTT command again, and how often at most; None: never (it needs ``publisher`` too).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], dt.datetime],
        confirm_key_change: Callable[[str], None] | None = None,
        timeout: float = 5.0,
        publisher: mqttlink.Publisher | None = None,
        resend_after: float | None = None,
        max_sends: int = 6,
    ) -> None:
        self.engine, self.clock, self.timeout = engine, clock, timeout
        self.resend_after, self.max_sends = resend_after, max_sends
        self.confirm_key_change = confirm_key_change
        self.publisher = publisher  # MQTT-native meters' commands; None: such a command waits, queued
        # PostgreSQL on psycopg: the two writes of every command run by the driver, each its own transaction.
        # Otherwise (SQLite: its engine issues BEGIN IMMEDIATE itself, mita.vend.database) SQLAlchemy's way.
        direct = engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
        self.take = _Direct(engine, _TAKE, ("command", "at")) if direct else None
        self.end = _Direct(engine, _END, ("command", "was", "status", "result", "error", "at")) if direct else None

    def send(self, message: Message) -> None:
        try:
            command_id = int(message.payload["command"])
        except (KeyError, TypeError, ValueError):
            raise SendError("malformed command row", permanent=True) from None
        now = self.clock()
        row = self._take(command_id, now)
        if row is None:
            return
        if row.transport == Transport.MQTT:
            self._publish(row, now)
            return
        endpoint, encoding = registry.reach(row, row.drn, self.timeout)
        kind = CommandKind(row.kind)
        try:
            with associate(endpoint) as assoc:
                outcome = ACTIONS[kind](assoc, row.params, encoding, now)
        except LinkError as exc:
            with self.engine.begin() as conn:
                if exc.transient:
                    self._move(conn, row.id, S.QUEUED, error=f"{exc.code}: {exc}"[:200])
                else:
                    self._end(conn, row, S.FAILED, None, f"{exc.code}: {exc}", self.clock(), current=S.SENT)
            if exc.transient:
                raise SendError(exc.code) from None  # the outbox tries again after its backoff
            return
        status = S.ACKNOWLEDGED if outcome.error is None else S.FAILED
        ended = _ended(row.id, S.SENT, status, outcome.result, outcome.error, self.clock())
        if self.end is not None:
            self.end.run(ended)
        else:
            with self.engine.begin() as conn:
                conn.execute(_END, ended)
        # an acknowledged command at DEBUG: the outbox logs each batch's counts, the row keeps the outcome, and a
        # line per command written at INFO cost the worker 0.1 ms of CPU per delivery (8 %)
        log.log(logging.INFO if outcome.error else logging.DEBUG, "command %s (%s) at meter %s: %s", row.id,
                kind.value, row.drn, outcome.error or status.value)  # fmt: skip
        if self.confirm_key_change and any(t.get("result") == "key_changed" for t in outcome.result.get("tokens", [])):
            try:
                self.confirm_key_change(row.drn)
            except StsError as exc:  # confirmed already (by an operator): the command's answer stands
                log.warning("command %s: key change of meter %s not confirmed: %s", row.id, row.drn, exc.code)

    def _publish(self, row: Any, now: dt.datetime) -> None:
        """An MQTT meter's command, sent: published (QoS 1, until the broker's PUBACK); it stays ``sent`` until the
        meter's ack (:meth:`settle`) or its deadline (:meth:`sweep`). No broker: back to queued, tried again."""
        try:
            if self.publisher is None:
                raise MqttError("mqtt_unconfigured", "this worker publishes no MQTT commands")
            topic, payload, props = mqttlink.command_message(row.drn, row.id, row.kind, row.params or {},
                                                             row.expires_at, now)  # fmt: skip
            self.publisher.publish(topic, payload, props)
        except MqttError as exc:
            with self.engine.begin() as conn:
                self._move(conn, row.id, S.QUEUED, error=f"{exc.code}: {exc.message}"[:200])
            raise SendError(exc.code) from None
        log.debug("command %s (%s) published to meter %s", row.id, row.kind, row.drn)

    def settle(self, drn: str, ack: Ack) -> CommandStatus | None:
        """An MQTT meter's ack, on the topic of meter ``drn``, applied in one transaction: the command's final
        status (:func:`mita.headend.mqttlink.outcome`), or None when it changes nothing (an unknown command,
        another meter's, or one already ended: a repeated ack). A key change the meter executed is confirmed, as
        over DLMS."""
        now = self.clock()
        with self.engine.begin() as conn:
            row = conn.execute(_ACKED, {"command": ack.id}).first()
            if row is None or row.drn != drn:
                log.warning("ack on meter %s's topic for command %s, which is not one of its commands", drn, ack.id)
                return None
            was = S(row.status)
            if was in FINAL:
                log.log(logging.INFO if was is S.EXPIRED else logging.DEBUG, "command %s (%s): ack after it ended",
                        row.id, was.value)  # fmt: skip
                return None
            done = mqttlink.outcome(CommandKind(row.kind), ack)
            if was is S.QUEUED:  # its publish timed out here, yet reached the meter: sent, then ended
                COMMAND.check(was, S.SENT)
                conn.execute(_SENT, {"command": row.id, "was": was.value, "at": now})
                was = S.SENT
            conn.execute(_END, _ended(row.id, was, done.status, done.result, done.error, now))
        log.log(logging.INFO if done.error else logging.DEBUG, "command %s (%s) at meter %s: %s", row.id, row.kind,
                drn, done.error or done.status.value)  # fmt: skip
        if self.confirm_key_change and mqttlink.key_changed(done.result):
            try:
                self.confirm_key_change(drn)
            except StsError as exc:
                log.warning("command %s: key change of meter %s not confirmed: %s", row.id, drn, exc.code)
        return done.status

    def sweep(self) -> int:
        """Commands sent to MQTT meters and past their deadline with no ack, ended ``expired``; how many. Then the
        unanswered ones due a re-send are published again (:meth:`resend`)."""
        with self.engine.begin() as conn:
            expired = int(conn.execute(_SWEEP, {"at": self.clock()}).rowcount)
        self.resend()
        return expired

    def resend(self) -> int:
        """Publish again, with the same id and payload, the MQTT commands still ``sent`` with no ack and due a
        re-send (module docstring); how many the broker took. Each is claimed first (``attempts`` + 1 and
        ``sent_at``, on the count read: another worker's sweep that claimed it first wins), then published. A
        broker that cannot be reached ends the pass: the claimed publish counts as a try, and its next re-send
        waits twice as long, as any other's."""
        if self.publisher is None or self.resend_after is None or self.max_sends < 2:
            return 0
        now = self.clock()
        with self.engine.connect() as conn:
            due = conn.execute(_resendable(now, self.resend_after, self.max_sends)).all()
        sent = 0
        for row in due:
            with self.engine.begin() as conn:
                if conn.execute(_RESENT, {"command": row.id, "was": row.attempts, "at": now}).rowcount != 1:
                    continue  # answered, ended or re-sent by another worker meanwhile
            try:
                topic, payload, props = mqttlink.command_message(row.drn, row.id, row.kind, row.params or {},
                                                                 row.expires_at, now)  # fmt: skip
                self.publisher.publish(topic, payload, props)
            except MqttError as exc:
                log.warning("re-sending MQTT commands stopped at command %s: %s", row.id, exc.code)
                break
            sent += 1
            log.debug("command %s (%s) to meter %s re-sent: publish %d", row.id, row.kind, row.drn, row.attempts + 1)
        if sent:
            log.info("%d MQTT command(s) re-sent: the broker had them, no meter answered", sent)
        return sent

    def _take(self, command_id: int, now: dt.datetime) -> Any:
        """The command moved to sent, with its meter and how to reach it; None when there is nothing to send (it
        ended, now or before)."""
        if self.take is not None:
            row = self.take.first({"command": command_id, "at": now})
            if row is not None:
                return row
        with self.engine.begin() as conn:
            row = conn.execute(_ROW, {"command": command_id}).first()
            if row is None:
                raise SendError(f"no command {command_id}", permanent=True)
            if row.status in FINAL:  # settled by an earlier try whose outbox row was not
                return None
            if now >= row.expires_at:
                self._end(conn, row, S.EXPIRED, None, f"expired: not reached by {row.expires_at.isoformat()}", now)
                return None
            if row.host is None:
                self._end(conn, row, S.FAILED, None, "not_connected: the meter's endpoint was removed", now)
                return None
            COMMAND.check(row.status, S.SENT)
            conn.execute(_SENT, {"command": row.id, "was": row.status, "at": now})
        return row

    @staticmethod
    def _move(conn: Any, command_id: int, status: CommandStatus, **values: Any) -> None:
        conn.execute(_MOVE.values(status=status.value, **values), {"command": command_id, "was": S.SENT.value})

    @staticmethod
    def _end(
        conn: Any,
        row: Any,
        status: CommandStatus,
        result: dict[str, Any] | None,
        error: str | None,
        at: dt.datetime,
        current: CommandStatus | None = None,
    ) -> None:
        conn.execute(_END, _ended(row.id, current or S(row.status), status, result, error, at))
