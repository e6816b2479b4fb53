"""The COSEM objects of one simulated meter, and what its methods and settable attributes do to the meter model.

=====================  ===================  ====  ==================================================================
object                 OBIS                 IC    backed by
=====================  ===================  ====  ==================================================================
token gateway          0.0.19.40.0.255      115   method 1 *enter* runs :meth:`Meter.enter`; attrs 2-6 the meter's
                                                  last entry: token, time, description, delivery method (REMOTE;
                                                  MANUAL for a token typed on the keypad), token_status from
                                                  :mod:`mita.sim.status`
disconnect control     0.0.96.3.10.255      70    methods 1/2 remote disconnect/reconnect: :meth:`Meter.remote_switch`;
                                                  output_state is the model's switch (or valve)
clock                  0.0.1.0.0.255        8     the server's clock (the model's clock is only an input); the
                                                  management client may SET attr 2 (an offset kept by the server)
active energy import   1.0.1.8.0.255        3     electricity and gas profiles: consumption in Wh
water volume           8.0.1.0.0.255        3     water profile: IEC 62056-6-1 medium A=8 (water), C=1 volume,
                                                  D=0 current value, E=0 total; in litres (m³ with scaler -3).
                                                  Not 1.0.1.8.0.255: A=1 is electricity, and a head-end that reads
                                                  "energy" off a water meter would be wrong by kind, not by scale
active power import    1.0.1.7.0.255        3     W; always 0: the model has no present load (it is an argument of
                                                  :meth:`Meter.run`, not a state)
limiter                0.0.17.0.0.255       71    monitors 1.0.1.7.0.255 attr 2; threshold_active (3) and
                                                  threshold_normal (4) are the model's power limit ``state.mpl``
                                                  (the STS set-maximum-power-limit token's), 0 = no limit; a SET of
                                                  attr 4 by the management client sets ``mpl`` (0 clears it)
credit                 0.0.19.10.0.255      112   current_credit_amount: the utility's unit register (Wh or litres)
account                0.0.19.0.0.255       111   available_credit: the same figure
event logs             0.0.99.98.{0,1,2}.255 7    standard, fraud detection, disconnector control: rows of
                                                  (clock attr 2, event code object attr 2); :mod:`mita.sim.events`
token transfer log     0.0.99.17.0.255      7     (clock attr 2, token gateway attr 2, token gateway attr 6 element 1):
                                                  remote entries, and the keypad's the sim learns of from the file
event code objects     0.0.96.11.{0,1,2}.255 1    the last event code of each event log (unsigned)
=====================  ===================  ====  ==================================================================

The model gets time passed in (sans-IO): every handler takes ``now`` from the server. After each change the state
file is saved by the ``save`` callback, the one :mod:`mita.meter.storage` gives ``mita meter``. When that callback
is a :class:`~mita.sim.meterfile.MeterFile`, the file is shared with ``mita meter``: before each request the server
calls :meth:`MeterObjects.catch_up`, which takes the file's meter if another program saved it since (a token typed
on the keypad, a tamper, a run), logs what changed, and shows a keypad token in the token gateway (delivery method
MANUAL: IEC 62056-6-2 names a keypad "manual entry", 2; "local communication", 1, is an optical or local port).

The logs' buffers (attr 2) are encoded here, not by gurux: its encoder types each column by the captured
attribute's type, so the status-code column (one element of the token_status structure) would be encoded as a
structure. Rows are written as A-XDR ``array of structure``, date-times as the clock writes its own attr 2.
Selective access (by range or entry) is not offered: a read with a selector is refused (read-write denied), not
answered with the whole buffer; gurux's own by-entry selection returns no rows (research note §1.1).
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from gurux_dlms import GXByteBuffer, GXDateTime
from gurux_dlms.enums import DataType, ErrorCode, Unit
from gurux_dlms.internal._GXCommon import _GXCommon
from gurux_dlms.objects import (
    GXDLMSAccount,
    GXDLMSClock,
    GXDLMSCredit,
    GXDLMSData,
    GXDLMSDisconnectControl,
    GXDLMSLimiter,
    GXDLMSProfileGeneric,
    GXDLMSRegister,
    GXDLMSTokenGateway,
)
from gurux_dlms.objects.enums import ControlMode, ControlState, SortMethod, TokenDelivery

from mita.meter import Meter, Result
from mita.meter.errors import MeterError
from mita.meter.model import UTILITY_REGISTERS
from mita.meter.state import KEYPAD, PER_BASE_UNIT, REMOTE, LastEntry

from . import carrier, status
from .events import EventLogs, Log, Watcher
from .meterfile import MeterFile

log = logging.getLogger("mita.sim")

TOKEN_GATEWAY = "0.0.19.40.0.255"
DISCONNECT_CONTROL = "0.0.96.3.10.255"
CLOCK = "0.0.1.0.0.255"
ACTIVE_ENERGY_IMPORT = "1.0.1.8.0.255"
WATER_VOLUME = "8.0.1.0.0.255"
ACTIVE_POWER_IMPORT = "1.0.1.7.0.255"
LIMITER = "0.0.17.0.0.255"
CREDIT = "0.0.19.10.0.255"
ACCOUNT = "0.0.19.0.0.255"
#: Profile generic objects of the logs (IDIS numbering for the event logs; the payment-metering token transfer log).
LOG_OBIS: dict[Log, str] = {
    Log.STANDARD: "0.0.99.98.0.255",
    Log.FRAUD: "0.0.99.98.1.255",
    Log.DISCONNECTOR: "0.0.99.98.2.255",
    Log.TOKEN: "0.0.99.17.0.255",
}
#: Data objects holding the last event code of each event log.
EVENT_CODE_OBIS: dict[Log, str] = {
    Log.STANDARD: "0.0.96.11.0.255",
    Log.FRAUD: "0.0.96.11.1.255",
    Log.DISCONNECTOR: "0.0.96.11.2.255",
}

#: Internal units (W·s, L·s/h) per Wh or litre: the unit of the registers and credit shown over DLMS.
PER_WH_OR_LITRE = 3600
#: Wh (or litres) per token base unit (0.1 kWh, 0.1 m³).
PER_BASE_UNIT_SHOWN = PER_BASE_UNIT // PER_WH_OR_LITRE
#: Limiter attributes: threshold_active (what is compared now), threshold_normal (what a client sets).
THRESHOLD_ACTIVE, THRESHOLD_NORMAL = 3, 4
#: The thresholds are double-long-unsigned watts, the monitored register's type.
MAX_WATTS = 2**32 - 1

#: How the meter's last entry came (:data:`mita.meter.state.VIAS`) -> the token gateway's delivery method (attr 5).
#: A keypad is IEC 62056-6-2's "manual entry" (2); "local communication" (1) is an optical or local port.
DELIVERY: dict[str, TokenDelivery] = {REMOTE: TokenDelivery.REMOTE, KEYPAD: TokenDelivery.MANUAL}

#: A COSEM date-time with nothing specified (IEC 62056-6-2 §4.1.6.1): the time of a token never entered.
NO_TIME = bytes.fromhex("ffffffffffffffffff8000ff")

#: One column of a log: (object, attribute, data index, the A-XDR type its values are written as).
Column = tuple[Any, int, int, int]


class LogObject(GXDLMSProfileGeneric):  # type: ignore[misc]
    """A profile generic whose buffer is the sim's rows (:class:`mita.sim.events.EventLogs`), encoded here."""

    def __init__(self, ln: str, logs: EventLogs, log: Log, columns: Sequence[Column]) -> None:
        super().__init__(ln)
        self._logs, self._log = logs, log
        self._types = [kind for *_, kind in columns]
        for obj, attribute, data_index, _ in columns:
            self.addCaptureObject(obj, attribute, data_index)
        self.capturePeriod = 0  # asynchronous: a row per event
        self.sortMethod = SortMethod.FIFO
        self.profileEntries = logs.capacity

    def getValue(self, settings: Any, e: Any) -> Any:
        if e.index == 2:
            e.byteArray = True  # raw bytes; and a refusal must append none (gurux sends them after the error)
            if e.selector:
                e.error = ErrorCode.READ_WRITE_DENIED
                return b""
            return self.encode(settings)
        if e.index == 7:
            return len(self._logs.rows(self._log))
        return super().getValue(settings, e)

    def encode(self, settings: Any) -> bytes:
        """The buffer: ``array`` of ``structure`` rows, each value of its column's type."""
        rows = self._logs.rows(self._log)
        out = GXByteBuffer()
        out.setUInt8(DataType.ARRAY)
        _GXCommon.setObjectCount(len(rows), out)
        for row in rows:
            out.setUInt8(DataType.STRUCTURE)
            _GXCommon.setObjectCount(len(self._types), out)
            for kind, value in zip(self._types, row, strict=True):
                _GXCommon.setData(settings, out, kind, GXDateTime(value) if isinstance(value, dt.datetime) else value)
        return bytes(out.array())


class TokenGatewayObject(GXDLMSTokenGateway):  # type: ignore[misc]
    """gurux's token gateway, readable before the meter took any token: attr 2 is then an empty octet-string and
    attr 3 the unspecified date-time (every field 0xFF, deviation 0x8000), which gurux cannot encode (its date-time
    needs a value: a GET of it was answered hardware-fault)."""

    def getValue(self, settings: Any, e: Any) -> Any:
        if e.index == 3 and self.time is None:
            e.byteArray = True
            return bytes([DataType.OCTET_STRING, len(NO_TIME)]) + NO_TIME
        return super().getValue(settings, e)


class LimiterObject(GXDLMSLimiter):  # type: ignore[misc]
    """gurux's limiter, its thresholds (attrs 3-5) encoded here as double-long-unsigned. Their declared type stays
    unset because gurux's SET path converts a received octet-string to the declared type: an octet-string sent as a
    threshold would become a number of watts; unconverted, :mod:`mita.sim.server` refuses it as type-unmatched."""

    THRESHOLDS = (THRESHOLD_ACTIVE, THRESHOLD_NORMAL, 5)

    def getValue(self, settings: Any, e: Any) -> Any:
        if e.index not in self.THRESHOLDS:
            return super().getValue(settings, e)
        out = GXByteBuffer()
        _GXCommon.setData(settings, out, DataType.UINT32, super().getValue(settings, e))
        e.byteArray = True
        return bytes(out.array())


class MeterObjects:
    """One meter's object set. ``save`` is called after every change the meter made; a
    :class:`~mita.sim.meterfile.MeterFile` (rather than any callable) also brings in the file's changes made by
    others (:meth:`catch_up`)."""

    def __init__(self, meter: Meter, save: Callable[[Meter], None], encoding: carrier.Encoding | None = None) -> None:
        self.meter, self.save = meter, save
        self.file = save if isinstance(save, MeterFile) else None
        self.encoding: carrier.Encoding = encoding or carrier.encoding_of(meter.profile.name)
        water = meter.profile.utility == "water"
        self.token_gateway = TokenGatewayObject(TOKEN_GATEWAY)
        self.token_gateway.token, self.token_gateway.deliveryMethod = b"", TokenDelivery.REMOTE
        self.token_gateway.statusCode = status.STATUS_CODE[Result.ACCEPT]  # nothing entered yet: no failure either
        self.token_gateway.dataValue = "00000000"
        if meter.state.last_entry is not None:  # the meter remembers its last token, however it came
            self._show_entry(meter.state.last_entry)
        self.disconnect = GXDLMSDisconnectControl(DISCONNECT_CONTROL)
        self.disconnect.controlMode = ControlMode.MODE_1  # remote disconnect and reconnect both allowed
        self.clock = GXDLMSClock(CLOCK)
        self.consumption = GXDLMSRegister(WATER_VOLUME if water else ACTIVE_ENERGY_IMPORT)
        # gurux's scaler is the multiplier 10**n (research note §1.1): litres shown as m³ with n = -3
        self.consumption.scaler, self.consumption.unit = (
            (0.001, Unit.VOLUME_CUBIC_METER) if water else (1, Unit.ACTIVE_ENERGY)
        )
        self.power = GXDLMSRegister(ACTIVE_POWER_IMPORT)
        self.power.scaler, self.power.unit, self.power.value = 1, Unit.ACTIVE_POWER, 0
        self.power.setDataType(2, DataType.UINT32)
        self.limiter = self._limiter()
        self.credit = GXDLMSCredit(CREDIT)
        self.account = GXDLMSAccount(ACCOUNT)
        self.logs = EventLogs()
        self.watcher: Watcher | None = None
        self.event_codes = {log: self._event_code(obis) for log, obis in EVENT_CODE_OBIS.items()}
        self.log_objects = {log: self._log_object(log) for log in LOG_OBIS}

    def _limiter(self) -> Any:
        limiter = LimiterObject(LIMITER)
        limiter.monitoredValue, limiter.monitoredAttributeIndex = self.power, 2
        limiter.thresholdEmergency = 0  # no emergency profile
        limiter.minOverThresholdDuration = 0  # the model trips at once
        limiter.minUnderThresholdDuration = self.meter.profile.trip_reconnect_s
        limiter.emergencyProfile.activationTime = GXDateTime(dt.datetime(2000, 1, 1))
        limiter.emergencyProfileActive = False
        return limiter

    def _event_code(self, obis: str) -> Any:
        data = GXDLMSData(obis)
        data.setDataType(2, DataType.UINT8)
        data.value = 0
        return data

    def _log_object(self, log: Log) -> LogObject:
        columns: list[Column] = [(self.clock, 2, 0, DataType.OCTET_STRING)]
        if log is Log.TOKEN:
            # attr 6 element 1: the status code (the whole structure holds a bit-string many clients cannot decode)
            columns += [(self.token_gateway, 2, 0, DataType.OCTET_STRING), (self.token_gateway, 6, 1, DataType.ENUM)]
        else:
            columns.append((self.event_codes[log], 2, 0, DataType.UINT8))
        return LogObject(LOG_OBIS[log], self.logs, log, columns)

    @property
    def items(self) -> list[Any]:
        return [
            self.token_gateway,
            self.disconnect,
            self.clock,
            self.consumption,
            self.power,
            self.limiter,
            self.credit,
            self.account,
            *self.event_codes.values(),
            *self.log_objects.values(),
        ]

    # ------------------------------------------------------------ the shared file

    def locked(self) -> AbstractContextManager[object]:
        """The meter file's lock when the file is shared with ``mita meter`` (:meth:`MeterFile.lock`); else none."""
        return self.file.lock() if self.file is not None else nullcontext()

    def catch_up(self, now: dt.datetime) -> None:
        """Take the meter file if another program saved it since the sim last did (the server calls this before
        every request: one ``os.stat``). What changed is logged as events; a token typed on the keypad since
        shows in the token gateway (delivery method MANUAL) and gets a row in the token transfer log. Only the
        last keypad entry is known: several typed between two requests show as the last one.

        A file that does not load (or holds another meter or profile) is not taken; the warning names the file,
        and the sim goes on with its own meter (its next save replaces that file: restart the sim to serve another
        meter)."""
        file = self.file
        if file is None or not file.changed():
            return
        try:
            meter = file.load()
        except MeterError as exc:
            log.warning("meter file %s changed but does not load (%s): the meter served as it was", file.path, exc.code)
            file.signature = file.current()
            return
        mine = self.meter.state
        if (meter.state.drn, meter.profile.name) != (mine.drn, self.meter.profile.name):
            theirs = f"{meter.state.drn} ({meter.profile.name})"
            log.warning("meter file %s now holds meter %s, not %s (%s): not taken", file.path, theirs, mine.drn,
                        self.meter.profile.name)  # fmt: skip
            return
        entry, seen = meter.state.last_entry, mine.last_entry
        self.meter = meter
        if self.watcher is not None:
            self.watcher.meter = meter
        if entry is not None and entry.via == KEYPAD and entry != seen and self._show_entry(entry):
            self.logs.token(entry.at, self.token_gateway.token, int(self.token_gateway.statusCode))
        self.observe(now)

    def _show_entry(self, entry: LastEntry) -> bool:
        """The token gateway as the meter's last entry left it (attrs 2-6); False (left as it was) for a result
        this sim does not know (a newer model's): nothing shown rather than a wrong status."""
        try:
            result = Result(entry.result)
        except ValueError:
            return False
        tg = self.token_gateway
        tg.token, tg.time, tg.deliveryMethod = self._octets(entry.token), GXDateTime(entry.at), DELIVERY[entry.via]
        tg.statusCode, tg.dataValue = status.STATUS_CODE[result], status.data_bits(result)
        tg.descriptions = [result.value.encode()]
        return True

    def _octets(self, typed: str | None) -> bytes:
        """A remembered token as the gateway carries it: in the meter's encoding when it is 20 digits, else what was
        typed as ASCII; empty for a key change section (the meter keeps its digits only sealed)."""
        if typed is None:
            return b""
        try:
            return carrier.pack(typed, self.encoding)
        except carrier.CarrierError:
            return typed.encode("utf-8", "replace")

    # ------------------------------------------------------------ reads

    def refresh(self, now: dt.datetime) -> None:
        """Push the model's values into the objects (a plain GET never calls ``onPreRead``: shims bug 4)."""
        meter = self.meter
        self.clock.time = GXDateTime(now)
        self.consumption.value = meter.state.consumed // PER_WH_OR_LITRE
        credit = self.credit_shown()
        self.credit.currentCreditAmount = credit
        self.account.availableCredit = credit
        closed = meter.switch_closed(now)
        self.disconnect.outputState = closed
        self.disconnect.controlState = ControlState.CONNECTED if closed else ControlState.DISCONNECTED
        limit = meter.state.mpl or 0
        self.limiter.thresholdActive = self.limiter.thresholdNormal = min(limit, MAX_WATTS)
        for log, data in self.event_codes.items():
            data.value = self.logs.last_code[log]

    def credit_shown(self) -> int:
        """The utility's unit credit register in Wh (electricity, gas) or litres (water), rounded down."""
        unit_register, _ = UTILITY_REGISTERS[self.meter.profile.utility]
        return self.meter.state.registers.get(unit_register, 0) // PER_WH_OR_LITRE

    # ------------------------------------------------------------ events

    def power_up(self, now: dt.datetime) -> None:
        """The sim starts serving this meter: a power-up row, and the model as it is now is what later changes are
        compared with (a meter that starts without credit logs no "supply off" for it)."""
        self.logs.record("power_up", now)
        self.watcher = Watcher(self.meter, self.logs, now)

    def observe(self, now: dt.datetime) -> None:
        """Log what changed in the model since it was last looked at."""
        if self.watcher is None:
            self.watcher = Watcher(self.meter, self.logs, now)
        else:
            self.watcher.observe(now)

    def clock_set(self, old: dt.datetime, new: dt.datetime) -> None:
        self.logs.record("clock_adjusted_old", old)
        self.logs.record("clock_adjusted_new", new)

    # ------------------------------------------------------------ changes

    def enter(self, data: bytes, now: dt.datetime) -> int:
        """Method 1 of the token gateway: the token status code it leaves in attribute 6."""
        tg = self.token_gateway
        tg.token, tg.time, tg.deliveryMethod = bytes(data), GXDateTime(now), TokenDelivery.REMOTE
        try:
            digits = carrier.unpack(bytes(data), self.encoding)
        except carrier.CarrierError as exc:
            tg.statusCode, tg.dataValue = status.FORMAT_FAILURE, status.data_bits(Result.FORMAT_ERROR)
            tg.descriptions = [str(exc).encode()]
            self.logs.token(now, bytes(data), int(tg.statusCode))
            return int(tg.statusCode)
        entry = self.meter.enter(digits, now, via=REMOTE)
        self.save(self.meter)  # a reject changes the state too (the reject counter, the lockout)
        tg.statusCode, tg.dataValue = status.STATUS_CODE[entry.result], status.data_bits(entry.result)
        tg.descriptions = [entry.result.value.encode()]
        self.logs.token(now, bytes(data), int(tg.statusCode))
        self.observe(now)
        self.refresh(now)
        return int(tg.statusCode)

    def switch(self, closed: bool, now: dt.datetime) -> bool:
        """Methods 1 (disconnect, ``closed=False``) and 2 (reconnect) of the disconnect control: supply on after?"""
        on = self.meter.remote_switch(closed, now)
        self.save(self.meter)
        self.observe(now)
        self.refresh(now)
        return on

    def set_power_limit(self, watts: int, now: dt.datetime) -> None:
        """A SET of the limiter's threshold_normal: the model's power limit without a token (0: no limit)."""
        self.meter.state.mpl = watts or None
        self.save(self.meter)
        self.observe(now)
        self.refresh(now)

    def tamper(self, kind: str, now: dt.datetime) -> None:
        """A tamper the meter detects (the sim has no sensor: tests and the fleet API call this)."""
        self.meter.tamper(kind, now)
        self.save(self.meter)
        self.observe(now)
        self.refresh(now)
