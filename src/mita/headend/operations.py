"""What a head-end command does at a meter: functions over an open :class:`~mita.headend.link.Association`.

Each function is a few GET/SET/ACTION calls on the prepayment objects below, decoded by :mod:`.cosem`. Every
failure is a :class:`~mita.headend.link.LinkError`: the link's own, and ``protocol`` for an answer that does not
decode as the object's attribute should (never a codec exception).

=====================  ==================  ====  ================================================================
object                 OBIS                IC    used
=====================  ==================  ====  ================================================================
token gateway          0.0.19.40.0.255     115   method 1 enter (octet-string token), attr 6 token_status
disconnect control     0.0.96.3.10.255     70    methods 1 disconnect / 2 reconnect (integer 0); attrs 2 output
                                                 state, 3 control state
clock                  0.0.1.0.0.255       8     attr 2 time (12-octet date-time octet-string), GET and SET
active energy import   1.0.1.8.0.255       3     attr 2 value, attr 3 scaler_unit
water volume           8.0.1.0.0.255       3     the same, on a water meter
credit                 0.0.19.10.0.255     112   attr 2 current credit amount
account                0.0.19.0.0.255      111   (named for callers; not read here)
limiter                0.0.17.0.0.255      71    attr 3 threshold_active (read), attr 4 threshold_normal (SET)
event logs             0.0.99.98.{0,1,2}   7     attr 3 capture objects, attr 2 buffer: standard, fraud detection,
                       .255                      disconnector control
token transfer log     0.0.99.17.0.255     7     the same
=====================  ==================  ====  ================================================================

The token's octet-string is packed here (:func:`pack_token`), independently of the simulated meter's carrier
module: two ends, two codecs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Any, Final, Literal, TypeVar

from mita.meter.profiles import RESULTS

from . import cosem
from .link import Association, LinkError

TOKEN_GATEWAY: Final = "0.0.19.40.0.255"
DISCONNECT_CONTROL: Final = "0.0.96.3.10.255"
CLOCK: Final = "0.0.1.0.0.255"
ACTIVE_ENERGY_IMPORT: Final = "1.0.1.8.0.255"
WATER_VOLUME: Final = "8.0.1.0.0.255"
CREDIT: Final = "0.0.19.10.0.255"
ACCOUNT: Final = "0.0.19.0.0.255"
LIMITER: Final = "0.0.17.0.0.255"
STANDARD_LOG: Final = "0.0.99.98.0.255"
FRAUD_LOG: Final = "0.0.99.98.1.255"
DISCONNECTOR_LOG: Final = "0.0.99.98.2.255"
TOKEN_LOG: Final = "0.0.99.17.0.255"


class IC(IntEnum):
    """Interface classes used here."""

    DATA = 1
    REGISTER = 3
    PROFILE_GENERIC = 7
    CLOCK = 8
    DISCONNECT_CONTROL = 70
    LIMITER = 71
    ACCOUNT = 111
    CREDIT = 112
    TOKEN_GATEWAY = 115


# Attributes and methods, by name.
TOKEN_ENTER, TOKEN_STATUS = 1, 6
REMOTE_DISCONNECT, REMOTE_RECONNECT = 1, 2
OUTPUT_STATE, CONTROL_STATE = 2, 3
VALUE, SCALER_UNIT = 2, 3
CLOCK_TIME = 2
CURRENT_CREDIT = 2
THRESHOLD_ACTIVE, THRESHOLD_NORMAL = 3, 4
BUFFER, CAPTURE_OBJECTS = 2, 3

# ------------------------------------------------------------------------------------------------ tokens

#: token_status_code (IEC 62056-6-2 IC 115, as gurux enumerates it; the Blue Book text was not at hand).
STATUS_MEANINGS: Final[dict[int, str]] = {
    0: "token format result OK",
    1: "authentication result OK",
    2: "validation result OK",
    3: "token execution result OK",
    4: "token format failure",
    5: "authentication failure",
    6: "validation result failure",
    7: "token execution result failure",
    8: "token received and not yet processed",
}
VALIDATION_OK: Final = 2  # a key change section the meter kept, waiting for its other half
EXECUTION_OK: Final = 3

TokenEncoding = Literal["bcd", "ascii"]
TOKEN_DIGITS = 20


@dataclass(frozen=True)
class TokenStatus:
    """The token gateway's answer: the standard's status ``code`` and the ``data`` bit-string ('0'/'1').

    Mita's meters put their own result in ``data``: 8 bits, its index in :data:`mita.meter.profiles.RESULTS`
    (mita.sim.status), so ``used`` and ``old`` (both code 6) are told apart. Another meter's bits give no result.
    """

    code: int
    data: str

    @property
    def result(self) -> str | None:
        if len(self.data) != 8:
            return None
        index = int(self.data, 2)
        return RESULTS[index] if index < len(RESULTS) else None

    @property
    def accepted(self) -> bool:
        return self.code == EXECUTION_OK

    @property
    def meaning(self) -> str:
        return STATUS_MEANINGS.get(self.code, f"status code {self.code} (not in the standard)")


def pack_token(digits: str, encoding: TokenEncoding = "bcd") -> bytes:
    """The octet-string that carries a 20-digit token: packed BCD (10 octets, the first digit in the high nibble)
    or the 20 ASCII digits."""
    if len(digits) != TOKEN_DIGITS or not digits.isascii() or not digits.isdigit():
        raise ValueError(f"a token is {TOKEN_DIGITS} decimal digits")
    if encoding == "ascii":
        return digits.encode("ascii")
    if encoding != "bcd":
        raise ValueError(f"token encoding is 'bcd' or 'ascii', not {encoding!r}")
    return bytes.fromhex(digits)  # two decimal digits an octet, high nibble first: exactly their hex reading


def enter_token(assoc: Association, digits: str, encoding: str = "bcd") -> TokenStatus:
    """Enter one token (ACTION 115/1) and read the status it left (GET attr 6)."""
    if encoding not in ("bcd", "ascii"):
        raise ValueError(f"token encoding is 'bcd' or 'ascii', not {encoding!r}")
    data = cosem.encode_octet_string(pack_token(digits, "ascii" if encoding == "ascii" else "bcd"))
    assoc.action(IC.TOKEN_GATEWAY, TOKEN_GATEWAY, TOKEN_ENTER, data)
    return token_status(assoc)


def token_status(assoc: Association) -> TokenStatus:
    raw = assoc.get(IC.TOKEN_GATEWAY, TOKEN_GATEWAY, TOKEN_STATUS)
    code, bits = _decoded("token_status", cosem.parse_token_status, raw)
    return TokenStatus(code, bits)


# ------------------------------------------------------------------------------------------------ the switch


class ControlState(StrEnum):
    DISCONNECTED = "disconnected"
    CONNECTED = "connected"
    READY_FOR_RECONNECTION = "ready_for_reconnection"


CONTROL_STATES: Final[dict[int, ControlState]] = dict(enumerate(ControlState))


@dataclass(frozen=True)
class SwitchState:
    """Disconnect control: ``output`` is the supply (True: on), ``control`` the control state machine."""

    output: bool
    control: ControlState


def switch(assoc: Association, connect: bool) -> SwitchState:
    """Remote reconnect (method 2) or disconnect (method 1), then the state the meter reports. A reconnect does not
    promise supply: a meter without credit stays off (``output`` False)."""
    method = REMOTE_RECONNECT if connect else REMOTE_DISCONNECT
    assoc.action(IC.DISCONNECT_CONTROL, DISCONNECT_CONTROL, method, cosem.encode_integer(0))
    return switch_state(assoc)


def switch_state(assoc: Association) -> SwitchState:
    output = _decoded("output_state", cosem.decode_bool, assoc.get(IC.DISCONNECT_CONTROL, DISCONNECT_CONTROL, 2))
    code = _decoded("control_state", cosem.decode_integer, assoc.get(IC.DISCONNECT_CONTROL, DISCONNECT_CONTROL, 3))
    if code not in CONTROL_STATES:
        raise LinkError("protocol", f"control_state {code} is not one of 0, 1, 2")
    return SwitchState(output, CONTROL_STATES[code])


# ------------------------------------------------------------------------------------------------ registers

#: Physical units (IEC 62056-6-2 unit enumeration, the Blue Book's table) -> the name given for them.
UNITS: Final[dict[int, str]] = {
    1: "a", 2: "mo", 3: "wk", 4: "d", 5: "h", 6: "min", 7: "s", 8: "°", 9: "°C", 10: "currency", 11: "m",
    12: "m/s", 13: "m3", 14: "m3 (corrected)", 15: "m3/h", 16: "m3/h (corrected)", 17: "m3/d",
    18: "m3/d (corrected)", 19: "l", 20: "kg", 21: "N", 22: "Nm", 23: "Pa", 24: "bar", 25: "J", 26: "J/h",
    27: "W", 28: "VA", 29: "var", 30: "Wh", 31: "VAh", 32: "varh", 33: "A", 34: "C", 35: "V", 36: "V/m",
    37: "F", 38: "ohm", 39: "ohm m2/m", 40: "Wb", 41: "T", 42: "A/m", 43: "H", 44: "Hz", 45: "1/(Wh)",
    46: "1/(varh)", 47: "1/(VAh)", 48: "V2h", 49: "A2h", 50: "kg/s", 51: "S", 52: "K", 53: "1/(V2h)",
    54: "1/(A2h)", 55: "1/m3", 56: "%", 57: "Ah", 60: "Wh/m3", 61: "J/m3", 62: "mol %", 63: "g/m3",
    64: "Pa s", 65: "J/kg", 70: "dBm", 71: "dBuV", 72: "dB", 254: "other", 255: "count",
}  # fmt: skip


@dataclass(frozen=True)
class Reading:
    """A register's value as the meter scales it: ``value`` = ``raw`` * 10**``scaler`` in ``unit``.

    ``value`` is an int when the scaler is not negative, else the float nearest the exact decimal
    (:attr:`exact` gives the Decimal)."""

    value: int | float
    unit: str
    raw: int | float
    scaler: int

    @property
    def exact(self) -> Decimal:
        return Decimal(self.raw).scaleb(self.scaler)


def unit_name(code: int) -> str:
    return UNITS.get(code, f"unit {code}")


def read_register(assoc: Association, obis: str) -> Reading:
    """A register (IC 3): attr 2 value, attr 3 scaler_unit."""
    raw = _decoded("register value", cosem.decode, assoc.get(IC.REGISTER, obis, VALUE))
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        raise LinkError("protocol", f"register {obis} value is not a number")
    scaler, unit = _decoded("scaler_unit", cosem.decode_scaler_unit, assoc.get(IC.REGISTER, obis, SCALER_UNIT))
    exact = Decimal(raw).scaleb(scaler)
    value: int | float = int(exact) if scaler >= 0 and isinstance(raw, int) else float(exact)
    return Reading(value, unit_name(unit), raw, scaler)


def read_credit(assoc: Association) -> int:
    """The credit object's current credit amount (IC 112 attr 2), in the meter's own unit."""
    return _decoded("current credit", cosem.decode_integer, assoc.get(IC.CREDIT, CREDIT, CURRENT_CREDIT))


# ------------------------------------------------------------------------------------------------ clock


def read_clock(assoc: Association) -> dt.datetime:
    """The meter's time: aware when it gives its deviation from UTC, naive when it does not."""
    return _decoded("clock", cosem.decode_datetime, assoc.get(IC.CLOCK, CLOCK, CLOCK_TIME))


def set_clock(assoc: Association, when: dt.datetime) -> None:
    """Set the meter's time. An aware ``when`` is sent with its deviation; a naive one as local time with the
    deviation "not specified". (The simulated meter ignores the deviation: it keeps local time.)"""
    try:
        data = cosem.encode_datetime(when)
    except ValueError as exc:
        raise ValueError(f"cannot send this time to a meter: {exc}") from None
    assoc.set(IC.CLOCK, CLOCK, CLOCK_TIME, data)


# ------------------------------------------------------------------------------------------------ power limit


def read_power_limit(assoc: Association) -> int | None:
    """The limiter's threshold in force (IC 71 attr 3 threshold_active), in watts; None when it is 0 (no limit)."""
    watts = _decoded("threshold_active", cosem.decode_integer, assoc.get(IC.LIMITER, LIMITER, THRESHOLD_ACTIVE))
    return watts or None


def set_power_limit(assoc: Association, watts: int | None) -> None:
    """Set the limiter's threshold_normal (attr 4; None or 0: no limit). The standard types a threshold as its
    monitored value is typed, so the current value is read first and the new one sent in the same A-XDR type."""
    watts = watts or 0
    current = assoc.get(IC.LIMITER, LIMITER, THRESHOLD_NORMAL)
    kind = cosem.KIND_OF_TAG.get(current[0] if current else -1, "double_long_unsigned")
    try:
        data = cosem.encode_integer(watts, kind)
    except ValueError as exc:
        raise ValueError(f"{watts} W does not fit the meter's threshold ({kind}): {exc}") from None
    assoc.set(IC.LIMITER, LIMITER, THRESHOLD_NORMAL, data)


# ------------------------------------------------------------------------------------------------ logs


def read_log(assoc: Association, obis: str) -> list[tuple[Any, ...]]:
    """A profile generic's whole buffer (IC 7 attr 2), one tuple per row in the meter's order. The capture
    objects (attr 3) say which columns are the clock's time: those come back as datetimes."""
    columns = _decoded(
        "capture objects", cosem.decode_capture_objects, assoc.get(IC.PROFILE_GENERIC, obis, CAPTURE_OBJECTS)
    )
    clock = [i for i, c in enumerate(columns) if c.interface == IC.CLOCK and c.attribute == CLOCK_TIME]
    rows = _decoded("buffer", lambda raw: cosem.decode_rows(raw, clock), assoc.get(IC.PROFILE_GENERIC, obis, BUFFER))
    if any(len(row) != len(columns) for row in rows):
        raise LinkError("protocol", f"log {obis}: a row does not have one value per capture object")
    return rows


# ------------------------------------------------------------------------------------------------ decoding

T = TypeVar("T")


def _decoded(what: str, decode: Callable[[bytes], T], raw: bytes) -> T:
    """A decoded answer; a value that does not decode is the meter's protocol failure, not a codec exception."""
    try:
        return decode(raw)
    except cosem.CosemError as exc:
        raise LinkError("protocol", f"{what}: {exc}") from None
