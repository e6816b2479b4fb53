"""An MQTT-native simulated meter: the meter model on a clock, publishing its telemetry and taking commands.

:class:`MeterSim` is one meter without a network (the broker's side is :mod:`mita.sim.mqttfleet`): it turns time
into consumption, readings and events, and a command into an acknowledgement, each as the message of the
``mita/v1`` format (:mod:`mita.telemetry`, ``docs/telemetry.md``) to publish.

Time
    The simulation's true time ``t`` (epoch seconds) is the caller's (a clock that may run faster than real time).
    The meter's own clock is ``t`` plus its error (an injected drift, :mod:`mita.sim.mqttload`) plus what a
    ``set_clock`` command moved it by; readings and events carry the meter's clock, as a real meter's do, and the
    model is given it as local wall time (naive, as ``mita meter`` gives it). A command's ``expires`` is judged
    by ``wall``, the meter's communication module's clock (real UTC time by default): a simulation running a
    hundred times faster than the head-end would otherwise find every command stale.

Consumption
    Every ``interval`` seconds of true time the load (:class:`mita.sim.mqttload.Load`: what the meter registers
    with the supply on) is drawn through the model (:meth:`mita.meter.Meter.run`), so credit falls and the relay
    opens at zero credit (or on a remote disconnect, a trip, a tamper), as a prepaid meter's does. A reading is
    taken at each interval's end; every ``push_every`` readings are published as one ``readings`` block.

Events
    Taken by difference, as :class:`mita.sim.events.Watcher` does for the DLMS meter's logs (the model has no
    event stream): after each change the tamper kinds, the relay and the credit against the low-credit level are
    compared with what was seen last (``meter_cover_removed``..., ``relay_opened``/``relay_closed``,
    ``low_credit`` when credit falls under :data:`LOW_CREDIT`); a token entered (remotely or on the keypad of
    the shared file) is ``token_accepted`` or ``token_rejected``; ``power_up`` at start, ``power_down`` at a
    clean stop, ``clock_adjusted`` on a ``set_clock``; the faults' sensor events as the load reports them.
    Events are published at once, not batched. The DLMS logs' rows are kept too (``read_events``).

Sequence numbers
    One counter per meter, only going up, persisted **beside the meter file** in ``.NAME.mqtt`` (:class:`SideFile`,
    JSON, written atomically): the counter is reserved a block of :data:`SEQ_BLOCK` at a time (the file holds the
    end of the reserved block, written and fsynced before any number of it is used), so a restart, even after a
    crash, starts after every number ever used and writes the file once per block, not once per message. The
    meter file itself (``mita meter``'s format) has no place for it and is not changed.

Commands
    Executed through the model as the DLMS meter's objects execute them: ``deliver_tokens``, ``set_power_limit``
    and ``set_tariff_rate`` enter each token (``via="remote"``), answering each token's status as the DLMS token
    gateway does (``{"token", "status": token_status_code, "result": the model's result}``) and stopping at the
    first refusal other than ``used`` (``token_refused: <result>``); ``disconnect``/``reconnect`` the remote
    switch; ``read_registers``, ``read_events``, ``set_clock`` (to the command's ``params.t``). Each answer is
    an :class:`~mita.telemetry.payload.Ack` shaped as the head-end stores a DLMS command's result. A command past
    its ``expires`` answers ``expired`` and does nothing. Outcomes are remembered by command id (the last
    :data:`ACKS_KEPT`, in the side file): a command delivered again answers its first outcome again, without
    acting twice, across restarts too.

The meter file is shared with ``mita meter`` as the DLMS meter shares it (:class:`mita.sim.meterfile.MeterFile`):
the file's lock is held for each change, and a save by the keypad meanwhile is taken first.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from mita.meter import Meter, Result
from mita.meter.errors import MeterError
from mita.meter.model import ACCEPTED, UTILITY_REGISTERS
from mita.meter.state import KEYPAD, REMOTE
from mita.telemetry.errors import TelemetryError
from mita.telemetry.obis import Medium
from mita.telemetry.payload import Ack, Command, Event, Events, Reading, Readings, Status
from mita.telemetry.topics import Kind

from . import status as gateway
from .events import TAMPER_EVENTS, EventLogs, Log, Watcher
from .meterfile import MeterFile
from .mqttload import Load

log = logging.getLogger("mita.sim.mqtt")

#: Internal units of the model's registers (W·s, L·s/h) per Wh or litre.
PER_UNIT = 3600
#: The meter's own low-credit alarm level, in its register's unit (the simulated fleet's, mita.sim.loads).
LOW_CREDIT = {Medium.ELECTRICITY: 3_000, Medium.WATER: 300}
#: Sequence numbers reserved (and persisted) at a time.
SEQ_BLOCK = 1000
#: Command outcomes remembered, by id.
ACKS_KEPT = 256
#: Tokens one command may carry (a key change set and credit is five).
MAX_TOKENS = 50
#: The command kinds that enter tokens (the head-end issues set_power_limit and set_tariff_rate as STS tokens).
TOKEN_KINDS = frozenset({"deliver_tokens", "set_power_limit", "set_tariff_rate"})
#: The model's results by value (a newer model's result is not shown in the token log).
_RESULTS = frozenset(r.value for r in Result)
#: Which event logs ``read_events`` may name.
LOGS = tuple(log.value for log in Log)


class Message(NamedTuple):
    """One message to publish on the meter's topic of ``kind`` (QoS 1)."""

    kind: Kind
    payload: bytes
    retain: bool = False


class SimError(Exception):
    """A meter this simulation cannot run, or a side file it cannot use; ``code`` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def medium_of(meter: Meter) -> Medium:
    """The telemetry medium of a meter's profile (electricity or water; a gas meter has no MQTT register)."""
    try:
        return Medium(meter.profile.utility)
    except ValueError:
        raise SimError("unsupported_medium", f"meter {meter.state.drn}: no MQTT telemetry for "
                       f"{meter.profile.utility} meters") from None  # fmt: skip


# ---------------------------------------------------------------------- the side file


class SideFile:
    """What the MQTT meter keeps beside the meter file, ``.NAME.mqtt``: the end of the reserved block of sequence
    numbers, and the last command outcomes by id. ``path`` None: kept in memory only (tests)."""

    FORMAT = "mita-mqtt-meter/1"

    def __init__(self, path: str | None, drn: str, *, sync: bool = True, block: int = SEQ_BLOCK) -> None:
        self.path, self.drn, self.sync, self.block = path, drn, sync, block
        self.next_seq, self.reserved = 1, 1
        self.acks: dict[int, dict[str, Any]] = {}
        if path is not None and os.path.exists(path):
            self._read(path)

    @classmethod
    def beside(
        cls, meter_path: str | os.PathLike[str], drn: str, *, sync: bool = True, block: int = SEQ_BLOCK
    ) -> SideFile:
        """The side file of a meter file: ``.NAME.mqtt`` in its folder (hidden, as its lock ``.NAME.lock``)."""
        target = os.path.abspath(meter_path)
        path = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.mqtt")
        return cls(path, drn, sync=sync, block=block)

    def _read(self, path: str) -> None:
        try:
            with open(path) as f:
                data = json.load(f)
            if data.get("format") != self.FORMAT or data.get("drn") != self.drn:
                raise ValueError("another meter's or format")
            reserved = int(data["seq"])
            acks = {int(k): dict(v) for k, v in data.get("acks", {}).items()}
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SimError("corrupt_side_file", f"{path}: not this meter's MQTT state ({exc})") from None
        self.next_seq = self.reserved = max(reserved, 1)  # the first number never handed out
        self.acks = acks

    def seq(self) -> int:
        """The next sequence number; a new block is written down before its first number is used."""
        if self.next_seq >= self.reserved:
            self.reserved = self.next_seq + self.block
            self._write()
        value = self.next_seq
        self.next_seq += 1
        return value

    def recalled(self, command_id: int) -> Ack | None:
        kept = self.acks.get(command_id)
        if kept is None:
            return None
        return Ack(command_id, bool(kept["ok"]), kept.get("result"), kept.get("error"))

    def remember(self, ack: Ack) -> None:
        self.acks[ack.id] = {"ok": ack.ok, "result": None if ack.result is None else dict(ack.result),
                             "error": ack.error}  # fmt: skip
        while len(self.acks) > ACKS_KEPT:
            self.acks.pop(next(iter(self.acks)))
        self._write()

    def _write(self) -> None:
        if self.path is None:
            return
        body = {"format": self.FORMAT, "drn": self.drn, "seq": self.reserved,
                "acks": {str(k): v for k, v in self.acks.items()}}  # fmt: skip
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            json.dump(body, f, separators=(",", ":"))
            f.flush()
            if self.sync:
                os.fsync(f.fileno())
        os.replace(tmp, self.path)


# ---------------------------------------------------------------------- what the meter saw last


@dataclass
class _Seen:
    """The model as the telemetry last saw it: a change since is an event."""

    tamper: frozenset[str]
    closed: bool
    low: bool


# ---------------------------------------------------------------------- the meter


class MeterSim:
    """One MQTT meter (module docstring). Call :meth:`start` once, then :meth:`advance` as time goes and
    :meth:`command` for each command received; each returns the messages to publish."""

    def __init__(
        self,
        meter: Meter,
        load: Load,
        *,
        push_every: int = 1,
        file: MeterFile | None = None,
        save: Callable[[Meter], None] | None = None,
        side: SideFile | None = None,
        low_credit: int | None = None,
    ) -> None:
        if push_every < 1:
            raise ValueError("push_every is at least 1")
        self.meter, self.load, self.file = meter, load, file
        self.drn = meter.state.drn
        self.medium = medium_of(meter)
        self.interval, self.push_every = load.interval, push_every
        self.save: Callable[[Meter], None] = save or (file.save if file is not None else _no_save)
        self.side = side or SideFile(None, self.drn)
        self.low_credit = LOW_CREDIT[self.medium] if low_credit is None else low_credit
        self.pending: list[Reading] = []
        self.clock_adjust = 0  # seconds a set_clock moved the meter's clock by
        self.last_end: int | None = None  # the last interval end run
        self.dead = False
        self.logs = EventLogs()
        self._watcher: Watcher | None = None
        self._seen: _Seen | None = None
        self._carry = 0  # internal units not yet drawn (the load in whole W or L/h per interval)

    # ------------------------------------------------------------ time

    def meter_time(self, t: int) -> int:
        """The meter's clock at true time ``t`` (epoch seconds)."""
        return t + self.load.clock_error(t) + self.clock_adjust

    def local(self, t: int) -> dt.datetime:
        """The meter's clock at ``t`` as the model takes it: local wall time, naive, whole seconds."""
        return dt.datetime.fromtimestamp(self.meter_time(t))

    # ------------------------------------------------------------ views

    def credit(self) -> int:
        """The utility's unit credit register in Wh or litres, rounded down (as the DLMS meter shows it)."""
        unit_register, _ = UTILITY_REGISTERS[self.meter.profile.utility]
        return self.meter.state.registers.get(unit_register, 0) // PER_UNIT

    def register(self) -> int:
        return self.meter.state.consumed // PER_UNIT

    def status(self, t: int) -> Message:
        online = Status(True, self.meter_time(t), self.medium, self.meter.profile.name)
        return Message(Kind.STATUS, online.encode(), True)

    @staticmethod
    def will() -> bytes:
        """The last will: offline, ``t`` 0 (written at connect time, sent by the broker later)."""
        return Status(False).encode()

    # ------------------------------------------------------------ life

    def start(self, t: int) -> list[Message]:
        """The meter powers up at ``t``: the model as it is now is what later changes are compared with."""
        self.last_end = t - t % self.interval
        now = self.local(t)
        self._watcher = Watcher(self.meter, self.logs, now)
        self.logs.record("power_up", now)
        self._seen = self._look(now)
        return self._events([self._event("power_up", t)])

    def stop(self, t: int) -> list[Message]:
        """A clean stop: the readings not yet pushed, ``power_down``, the status offline (retained)."""
        if self.dead:
            return []
        out = self.flush()
        out += self._events([self._event("power_down", t)])
        out.append(Message(Kind.STATUS, Status(False, self.meter_time(t), self.medium, self.meter.profile.name)
                           .encode(), True))  # fmt: skip
        return out

    def flush(self) -> list[Message]:
        """The readings taken and not yet pushed, as one block (none: nothing)."""
        if not self.pending:
            return []
        block = Readings(self.interval, tuple(self.pending))
        self.pending = []
        return [Message(Kind.READINGS, block.encode())]

    def advance(self, t: int) -> list[Message]:
        """Run every interval that ended by ``t``: events first (published at once), then a readings block each
        ``push_every`` readings. A meter that dies stops there (:attr:`dead`: the caller ends its connection so
        that the broker sends its last will)."""
        if self.dead or self.last_end is None or t < self.last_end + self.interval:
            return []
        events: list[Event] = []
        blocks: list[Message] = []
        with self._locked():
            self._catch_up(self.last_end, events)
            while self.last_end + self.interval <= t:
                start, end = self.last_end, self.last_end + self.interval
                events.extend(self._event(name, at) for at, name in self.load.sensor_events(start, end))
                if self.load.dead(end):
                    self.dead = True
                    break
                self._run(start, end, events)
                self.last_end = end
                if len(self.pending) >= self.push_every:
                    blocks += self.flush()
            self.save(self.meter)
        return self._events(events) + blocks

    def _run(self, start: int, end: int, events: list[Event]) -> None:
        total = self.load.energy(end) * PER_UNIT + self._carry
        load, self._carry = divmod(total, self.interval)  # W or L/h over the interval, the rest carried
        self.meter.run(self.interval, load, self.local(start))
        now = self.local(end)
        closed = self.meter.switch_closed(now)
        if not closed:
            self._carry = 0  # nothing flows
        self._observe(end, events, consumed=True)
        reading = Reading(self.side.seq(), self.meter_time(end), self.medium, self.register(), load if closed else 0,
                          self.credit(), closed)  # fmt: skip
        self.pending.append(reading)

    # ------------------------------------------------------------ commands

    def command(
        self, data: bytes, t: int, wall: int, correlation: bytes | None = None
    ) -> tuple[Ack | None, list[Message]]:
        """A command received at true time ``t`` (``wall``: the communication module's clock, Unix seconds): its
        acknowledgement (None: nothing to answer: a message without an id, or a dead meter) and the events it
        caused. A repeated id answers the first outcome again and does nothing."""
        try:
            cmd = Command.decode(data)
        except TelemetryError as exc:
            cid = _correlation_id(correlation)
            return (None if cid is None else Ack(cid, False, error=f"bad_command: {exc.code}")), []
        known = self.side.recalled(cmd.id)
        if known is not None:
            return known, []
        if self.dead:
            return None, []
        events: list[Event] = []
        if cmd.expires <= wall:
            ack = Ack(cmd.id, False, error="expired")
        else:
            with self._locked():
                self._catch_up(t, events)
                try:
                    ack = self._execute(cmd, t, events)
                finally:
                    self.save(self.meter)
        self.side.remember(ack)
        return ack, self._events(events)

    def _execute(self, cmd: Command, t: int, events: list[Event]) -> Ack:
        now = self.local(t)
        params = cmd.params
        if cmd.kind in TOKEN_KINDS:
            tokens = params.get("tokens")
            if not isinstance(tokens, list) or not tokens or len(tokens) > MAX_TOKENS:
                return Ack(cmd.id, False, error=f"bad_params: tokens is a list of 1 to {MAX_TOKENS} tokens")
            if not all(isinstance(x, str) for x in tokens):
                return Ack(cmd.id, False, error="bad_params: a token is a string of digits")
            return self._tokens(cmd.id, tokens, t, now, events)
        if cmd.kind in ("disconnect", "reconnect"):
            on = self.meter.remote_switch(cmd.kind == "reconnect", now)
            self._observe(t, events)
            return Ack(cmd.id, True, {"switch": _switch(on)})
        if cmd.kind == "read_registers":
            return Ack(cmd.id, True, self._registers(now))
        if cmd.kind == "read_events":
            logs = params.get("logs", list(LOGS))
            if not isinstance(logs, list) or not logs or any(x not in LOGS for x in logs):
                return Ack(cmd.id, False, error=f"bad_params: logs is a list of {', '.join(LOGS)}")
            return Ack(cmd.id, True, {"logs": {name: self._rows(Log(name)) for name in dict.fromkeys(logs)}})
        if cmd.kind == "set_clock":
            when = params.get("t")
            if type(when) is not int or when <= 0:
                return Ack(cmd.id, False, error="bad_params: t is the time to set, Unix seconds")
            before = now
            self.clock_adjust += when - self.meter_time(t)
            after = self.local(t)
            self.logs.record("clock_adjusted_old", before)
            self.logs.record("clock_adjusted_new", after)
            events.append(self._event("clock_adjusted", t))
            return Ack(cmd.id, True, {"before": before.isoformat(), "clock": after.isoformat()})
        return Ack(cmd.id, False, error=f"unsupported: {cmd.kind[:40]}")

    def _tokens(self, cid: int, tokens: Sequence[str], t: int, now: dt.datetime, events: list[Event]) -> Ack:
        statuses: list[dict[str, Any]] = []
        for digits in tokens:
            entry = self.meter.enter(digits, now, via=REMOTE)
            code = gateway.STATUS_CODE[entry.result]
            statuses.append({"token": digits, "status": code, "result": entry.result.value})
            self.logs.token(now, _octets(digits), code)
            events.append(self._event("token_accepted" if entry.result in ACCEPTED else "token_rejected", t))
            if entry.result in ACCEPTED or entry.result is Result.USED:  # used: it is on the meter already
                continue
            self._observe(t, events)
            return Ack(cid, False, {"tokens": statuses}, f"token_refused: {entry.result.value}")
        self._observe(t, events)
        return Ack(cid, True, {"tokens": statuses, "credit": self.credit()})

    def _registers(self, now: dt.datetime) -> dict[str, Any]:
        """As the head-end's DLMS ``read_registers`` stores it: the register (Wh; water in m³ with scaler -3, as
        the DLMS meter's object scales it), credit, the switch, the power limit, the clock."""
        raw = self.register()
        if self.medium is Medium.WATER:
            registers = {"volume": {"value": raw / 1000, "unit": "m3", "raw": raw, "scaler": -3}}
        else:
            registers = {"energy": {"value": raw, "unit": "Wh", "raw": raw, "scaler": 0}}
        return {
            "registers": registers,
            "credit": self.credit(),
            "switch": _switch(self.meter.switch_closed(now)),
            "power_limit": self.meter.state.mpl or None,
            "clock": now.isoformat(),
        }

    def _rows(self, which: Log) -> list[list[Any]]:
        rows = self.logs.rows(which)
        return [[row[0].isoformat(), *(v.hex() if isinstance(v, bytes) else v for v in row[1:])] for row in rows]

    # ------------------------------------------------------------ changes, by difference

    def _look(self, now: dt.datetime) -> _Seen:
        return _Seen(frozenset(self.meter.state.tamper), self.meter.switch_closed(now), self.credit() < self.low_credit)

    def _observe(self, t: int, events: list[Event], *, consumed: bool = False) -> None:
        """What changed in the model since it was last seen, as events at ``t`` (and the DLMS logs' rows).

        ``consumed``: after an interval's consumption, where the DLMS logs' watcher (whose look at the model, its
        full status, was 55% of a meter's CPU per interval) runs only when the relay, the tamper kinds or the
        low-credit state changed: what consumption changes (credit running out, a trip) opens the relay. A reason
        added while the relay is open already (no credit during a remote disconnect) is then logged at the next
        command, not at once."""
        now = self.local(t)
        seen = self._look(now)
        before = self._seen or seen
        if self._watcher is not None and (not consumed or seen != before):
            self._watcher.observe(now)
        for kind, (appeared, went) in TAMPER_EVENTS.items():
            if kind in seen.tamper and kind not in before.tamper:
                events.append(self._event(appeared, t))
            elif kind in before.tamper and kind not in seen.tamper:
                events.append(self._event(went, t))
        if seen.closed != before.closed:
            events.append(self._event("relay_closed" if seen.closed else "relay_opened", t))
        if seen.low and not before.low:
            events.append(self._event("low_credit", t))
        self._seen = seen

    def _catch_up(self, t: int, events: list[Event]) -> None:
        """Take the meter file if ``mita meter`` saved it since (a keypad token, a tamper): as the DLMS meter's
        :meth:`~mita.sim.objects.MeterObjects.catch_up`, without its objects."""
        file = self.file
        if file is None or not file.changed():
            return
        try:
            meter = file.load()
        except MeterError as exc:
            log.warning("meter file %s changed but does not load (%s): the meter goes on as it was", file.path,
                        exc.code)  # fmt: skip
            file.signature = file.current()
            return
        if (meter.state.drn, meter.profile.name) != (self.drn, self.meter.profile.name):
            log.warning("meter file %s now holds meter %s, not %s: not taken", file.path, meter.state.drn, self.drn)
            return
        entry, seen = meter.state.last_entry, self.meter.state.last_entry
        self.meter = meter
        if self._watcher is not None:
            self._watcher.meter = meter
        if entry is not None and entry.via == KEYPAD and entry != seen:
            accepted = entry.result in {r.value for r in ACCEPTED}
            events.append(self._event("token_accepted" if accepted else "token_rejected", t))
            if entry.token is not None and entry.result in _RESULTS:
                self.logs.token(entry.at, _octets(entry.token), gateway.STATUS_CODE[Result(entry.result)])
        self._observe(t, events)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        if self.file is None:
            yield
            return
        with self.file.lock():
            yield

    # ------------------------------------------------------------ messages

    def _event(self, name: str, t: int) -> Event:
        return Event(self.side.seq(), self.meter_time(t), name)

    def _events(self, events: list[Event]) -> list[Message]:
        return [Message(Kind.EVENTS, Events(tuple(events)).encode())] if events else []


def _no_save(meter: Meter) -> None:
    """A meter kept in memory only."""


def _switch(on: bool) -> dict[str, Any]:
    """The disconnect control as the head-end's DLMS path stores it (output state, control state)."""
    return {"output": on, "control": "connected" if on else "disconnected"}


def _octets(digits: str) -> bytes:
    """A token as the DLMS token transfer log keeps it (packed BCD when it is 20 digits, else its text)."""
    if len(digits) == 20 and digits.isascii() and digits.isdigit():
        return bytes.fromhex(digits)
    return digits.encode("utf-8", "replace")[:40]


def _correlation_id(data: bytes | None) -> int | None:
    """The command id the head-end sent as correlation data (its decimal digits), if it is one."""
    if not data or len(data) > 20:
        return None
    try:
        value = int(data.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        return None
    return value if value >= 1 else None


def meter_files(paths: Sequence[str]) -> list[str]:
    """Meter files from the command line: each a file, or a folder of ``*.json`` (sorted)."""
    out: list[str] = []
    for path in paths:
        if os.path.isdir(path):
            out += sorted(os.path.join(path, name) for name in os.listdir(path) if name.endswith(".json"))
        else:
            out.append(path)
    return out


def ack_topic_ok(response_topic: str | None, own: str) -> str:
    """Where to answer: the command's response topic when it is the meter's own ack topic, else that one (a
    meter answers only on its own topics, as a broker's ACL would confine it)."""
    return response_topic if response_topic == own else own
