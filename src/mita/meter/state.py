"""Everything a meter remembers, as one plain value that round-trips through JSON.

Credit registers are kept in *internal units* of 1/360,000 of the token's base
unit: a load of 1 W (or 1 L/h) for one second uses exactly one internal unit
of an electricity (or water, gas) register, so consumption is integer
arithmetic with no rounding to lose or invent credit.

The decoder key is part of the state but never of :meth:`MeterState.to_dict`
unless asked: it is a secret, and the storage layer encrypts it.
"""

from __future__ import annotations

import datetime as dt

from mita.sts.values import Value, field, fields

from .errors import MeterError

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time of mita meter enter)
if TYPE_CHECKING:
    from typing import Any

#: Internal units per base unit (0.1 kWh = 360,000 W·s; 0.1 m3 = 360,000 L·s/h).
PER_BASE_UNIT = 360_000

#: Fields of a key change section that carry parts of the new key.
SECRET_FIELDS = frozenset({"nkho", "nklo", "nkmo1", "nkmo2"})

REGISTER_NAMES = {
    0: "electricity",
    1: "water",
    2: "gas",
    3: "time",
    4: "electricity_currency",
    5: "water_currency",
    6: "gas_currency",
    7: "time_currency",
}


def _time(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat(timespec="seconds")


def _parse_time(value: Any) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


#: How a token reached the meter: typed on its keypad, or delivered by a head-end (DLMS token gateway).
KEYPAD, REMOTE = "keypad", "remote"
VIAS = (KEYPAD, REMOTE)
#: What the meter keeps of what was typed: enough for a token (20 digits) and a mistyped one, never a megabyte.
TYPED_MAX = 40


class LastEntry(Value):
    """The meter's last token entry, whatever its result: what a token gateway shows as the last token (IEC
    62056-6-2 IC 115: token, time, delivery method, status), and how a simulated meter serving the same file tells
    that a token was typed on the keypad since it last looked.

    ``token`` is the digits as typed (spaces and dashes removed, at most :data:`TYPED_MAX` characters), or None for
    a key change section: its digits carry part of the new key, which the meter file keeps only sealed."""

    token: str | None
    at: dt.datetime
    result: str  # a mita.meter.model.Result value (the model imports this module, not the other way round)
    via: str  # KEYPAD or REMOTE

    def to_dict(self) -> dict[str, Any]:
        return {"token": self.token, "at": _time(self.at), "result": self.result, "via": self.via}

    @classmethod
    def from_dict(cls, data: Any) -> LastEntry | None:
        """None for ``None`` (a meter that never took a token, or a file older than the field)."""
        if data is None:
            return None
        token, at = data["token"], dt.datetime.fromisoformat(data["at"])
        result, via = data["result"], data["via"]
        if (token is not None and not isinstance(token, str)) or not isinstance(result, str) or via not in VIAS:
            raise ValueError(f"last_entry is not a token entry: {data!r}")
        return cls(token, at, result, via)


class MeterState(Value, frozen=False):
    profile: str
    drn: str
    iin: str
    mfr_code: int
    ea: int
    decoder_key: int = field(repr=False)
    sgc: str
    ti: int
    krn: int
    kt: int
    ken: int
    tids: list[int]
    registers: dict[int, int] = field(default_factory=dict)  # subclass -> internal units
    consumed: int = 0  # cumulative, internal units of the utility's register
    mpl: int | None = None  # watts; None = no limit
    mppul: int | None = None
    tariff_rate: int | None = None
    wm_factor: int | None = None
    tamper: list[str] = field(default_factory=list)
    tripped_until: dt.datetime | None = None
    pending_kct: dict[int, dict[str, int]] = field(default_factory=dict)
    pending_since: dt.datetime | None = None
    failures: int = 0
    locked_until: dt.datetime | None = None
    lock_delay_s: int = 0
    clock: dt.datetime | None = None
    display: str = ""
    remote_open: bool = False  # the head-end opened the switch (DLMS disconnect control); only a reconnect closes it
    last_entry: LastEntry | None = None  # the last token entered, keypad or remote; None: never one

    def to_dict(self, include_key: bool = False) -> dict[str, Any]:
        """A JSON-ready copy. Without ``include_key`` it holds no secrets: no decoder key, and no parts
        of a pending new key (the storage layer seals those, see :meth:`secrets`)."""
        out: dict[str, Any] = {}
        for name in fields(self):
            value = getattr(self, name)
            if name == "decoder_key":
                if include_key:
                    out["decoder_key"] = f"{value:0{32 if self.ea == 11 else 16}x}"
                continue
            if isinstance(value, dt.datetime):
                value = _time(value)
            elif isinstance(value, LastEntry):
                value = value.to_dict()
            elif name == "registers":
                value = {str(k): v for k, v in value.items()}
            elif name == "pending_kct":
                value = {
                    str(k): {n: v for n, v in sec.items() if include_key or n not in SECRET_FIELDS}
                    for k, sec in value.items()
                }
            elif isinstance(value, list):
                value = list(value)
            out[name] = value
        return out

    def secrets(self) -> dict[str, Any]:
        """What :meth:`to_dict` leaves out, for the storage layer to seal."""
        pending = {str(k): {n: v for n, v in sec.items() if n in SECRET_FIELDS} for k, sec in self.pending_kct.items()}
        return {"decoder_key": self.decoder_key, "pending": pending}

    @classmethod
    def from_dict(
        cls, data: dict[str, Any], decoder_key: int, pending_secrets: dict[str, Any] | None = None
    ) -> MeterState:
        """Rebuild a state from :meth:`to_dict` (and the sealed parts of a pending key); nothing is shared."""
        try:
            values = {name: data[name] for name in fields(cls) if name != "decoder_key" and name in data}
            for name in ("tripped_until", "pending_since", "locked_until", "clock"):
                values[name] = _parse_time(values.get(name))
            values["registers"] = {int(k): int(v) for k, v in values.get("registers", {}).items()}
            hidden = pending_secrets or {}
            values["pending_kct"] = {
                int(k): {**v, **hidden.get(str(k), {})} for k, v in values.get("pending_kct", {}).items()
            }
            values["tids"] = [int(t) for t in values["tids"]]
            values["tamper"] = list(values.get("tamper", []))
            values["last_entry"] = LastEntry.from_dict(values.get("last_entry"))
            state = cls(decoder_key=decoder_key, **values)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise MeterError("corrupt_state", f"saved meter state is not valid: {exc}") from None
        state._check_types()
        return state

    def _check_types(self) -> None:
        """Each field of the kind :data:`KINDS` says: a file edited by hand (``"failures": null``) is refused when it
        is read, not when a token entry trips over it later with an untyped error."""
        for name, kind in KINDS.items():
            value = getattr(self, name)
            if not _is(value, kind):
                raise MeterError("corrupt_state", f"saved meter state is not valid: {name} is not {kind}")
        for k, v in self.registers.items():
            if not (_is(k, "int") and _is(v, "int")):
                raise MeterError("corrupt_state", "saved meter state is not valid: a register is not a number")
        for sec in self.pending_kct.values():
            if not isinstance(sec, dict) or not all(isinstance(n, str) and _is(v, "int") for n, v in sec.items()):
                raise MeterError("corrupt_state", "saved meter state is not valid: a pending key change section")
        if not all(isinstance(t, str) for t in self.tamper):
            raise MeterError("corrupt_state", "saved meter state is not valid: tamper is a list of names")


#: The kind of each plain field of a saved state (the others are rebuilt by from_dict, or checked after it).
KINDS = {
    "profile": "str", "drn": "str", "iin": "str", "sgc": "str", "display": "str",
    "mfr_code": "int", "ea": "int", "decoder_key": "int", "ti": "int", "krn": "int", "kt": "int", "ken": "int",
    "consumed": "int", "failures": "int", "lock_delay_s": "int",
    "mpl": "int or None", "mppul": "int or None", "tariff_rate": "int or None", "wm_factor": "int or None",
    "remote_open": "bool",
}  # fmt: skip


def _is(value: Any, kind: str) -> bool:
    if kind.endswith(" or None") and value is None:
        return True
    if kind.startswith("int"):
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, {"str": str, "bool": bool}[kind])
