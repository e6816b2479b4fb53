"""The meter's firmware rules: token entry, key change, registers and the load switch.

Token entry follows SPEC.md §9, one step after another; the first step that
fails gives the result, and nothing in the state changes except the keypad's
reject counter (and ``last_entry``, the record of every entry, taken or not):

====  ===================================================  ======================
step  check                                                result when it fails
====  ===================================================  ======================
1     keypad not locked (profile lockout rule)             ``locked_out``
2     20 digits, below 2^66                                ``format_error``
3     class 1: CRC, then manufacturer code (own or 0)      ``crc_error``
3     class 0/2: decrypt with the current key, CRC/CRC_C   ``crc_error``
4     class/subclass supported by the standard and profile ``unsupported``
5     TID tokens: ``TID >> 16 <= KEN`` (not for KT 0)      ``key_expired``
6     TID tokens: TID not in the TID store                 ``used``
7     TID tokens: TID not below the store's smallest       ``old``
8     credit tokens: the key is not a DDTK (KT 1)          ``ddtk``
9     the function's own checks (register, overflow)       ``range_error`` /
                                                           ``unsupported`` /
                                                           ``overflow``
10    execute; remember the TID (replacing the smallest)   ``accept``
====  ===================================================  ======================

Key change sections (no TID) skip steps 5-9: they wait in a pending set, in
any order, for the profile's window; the complete set is checked against the
key-type rules and installed at once (``key_changed``). A set is four sections
when the meter's key is 128-bit or when a 3rd or 4th section has been entered
(the EA07 to EA11 migration), otherwise two.
"""

from __future__ import annotations

import datetime as dt
from enum import StrEnum

from mita import sts
from mita.sts.ea import check_key, encrypt
from mita.sts.identity import check_key_params
from mita.sts.keychange import KeySection
from mita.sts.values import Value, field

from .errors import MeterError
from .profiles import Profile, get_profile
from .state import KEYPAD, PER_BASE_UNIT, REGISTER_NAMES, SECRET_FIELDS, TYPED_MAX, VIAS, LastEntry, MeterState

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time of mita meter enter)
if TYPE_CHECKING:
    from typing import Any


class Result(StrEnum):
    ACCEPT = "accept"
    KCT_PENDING = "kct_pending"
    KEY_CHANGED = "key_changed"
    CRC_ERROR = "crc_error"
    USED = "used"
    OLD = "old"
    KEY_EXPIRED = "key_expired"
    DDTK = "ddtk"
    FORMAT_ERROR = "format_error"
    RANGE_ERROR = "range_error"
    UNSUPPORTED = "unsupported"
    OVERFLOW = "overflow"
    KEY_TYPE_ERROR = "key_type_error"
    LOCKED_OUT = "locked_out"


ACCEPTED = frozenset({Result.ACCEPT, Result.KCT_PENDING, Result.KEY_CHANGED})
TAMPER_KINDS = ("cover", "magnetic", "bypass")
UTILITY_REGISTERS = {"electricity": (0, 4), "water": (1, 5), "gas": (2, 6)}
TIME_REGISTER = 3
_TIME_RATE = PER_BASE_UNIT // 6  # 0.1 minute of time credit lasts 6 seconds

#: What class 1 control bits ask the meter to do (bit -> function). The
#: standard's Table 27 is not public; this order follows a public firmware [I].
TEST_FUNCTIONS = ("test all", "relay", "display", "total energy", "KRN", "TI", "MPL", "tamper", "power", "version")


class _Reject(Exception):
    """A rejected entry: internal control flow, never escapes the model."""

    def __init__(self, result: Result, detail: str) -> None:
        self.result, self.detail = result, detail


class EntryResult(Value):
    result: Result
    display: str
    detail: str = ""
    token: dict[str, Any] = field(default_factory=dict)
    lines: tuple[str, ...] = ()  # what a class 1 test/display token shows


class RunResult(Value):
    seconds: int
    consumed: int  # internal units of the utility's load (W·s, L·s/h)
    events: tuple[str, ...]


class Meter:
    """One meter: its profile and its state, with the firmware's rules as methods."""

    def __init__(self, state: MeterState) -> None:
        self.state = state
        self.profile: Profile = get_profile(state.profile)

    @classmethod
    def create(
        cls,
        *,
        drn: str,
        ea: int,
        decoder_key: int,
        sgc: str,
        ti: int,
        krn: int,
        kt: int,
        ken: int = 255,
        iin: str | None = None,
        profile: str = "edition2-ea11",
        mfr_code: int | None = None,
    ) -> Meter:
        """A new meter as it leaves the factory or the utility's workshop."""
        prof = get_profile(profile)
        number = sts.MeterNumber.parse(drn, iin)
        algorithm = sts.EA.parse(ea)
        if algorithm not in prof.algorithms:
            raise MeterError("unsupported", f"profile {prof.name} does not support EA{algorithm.value:02d}")
        check_key(algorithm, decoder_key)
        check_key_params(kt, sgc, ti, krn)
        if not 0 <= ken <= 255:
            raise sts.RangeError(f"KEN must be 0..255 (got {ken})")
        code = int(number.mfr_code) if mfr_code is None else mfr_code
        if not 0 <= code < 10**prof.mfr_code_digits:
            raise sts.RangeError(f"profile {prof.name} has a {prof.mfr_code_digits}-digit manufacturer code")
        state = MeterState(
            profile=prof.name,
            drn=number.drn,
            iin=number.iin,
            mfr_code=code,
            ea=int(algorithm),
            decoder_key=decoder_key,
            sgc=sgc,
            ti=ti,
            krn=krn,
            kt=kt,
            ken=ken,
            tids=[0] * prof.tid_store_size,
        )
        return cls(state)

    # ------------------------------------------------------------ token entry

    def enter(self, token: str, now: dt.datetime, *, via: str = KEYPAD) -> EntryResult:
        """Take one token, typed on the keypad or (``via=REMOTE``) delivered by a head-end. Whatever the result, the
        entry is remembered as ``state.last_entry`` (what a token gateway shows of the last token)."""
        if via not in VIAS:
            raise MeterError("format_error", f"a token comes via one of {', '.join(VIAS)}")
        typed = str(token).replace(" ", "").replace("-", "")[:TYPED_MAX]
        out, section = self._enter(token, now)
        self.state.last_entry = LastEntry(None if section else typed, now, out.result.value, via)
        return out

    def _enter(self, token: str, now: dt.datetime) -> tuple[EntryResult, bool]:
        """The entry's result, and whether the token was a key change section (its digits are not remembered)."""
        s = self.state
        self._advance_clock(now)
        if s.locked_until is not None and now < s.locked_until:
            wait = int((s.locked_until - now).total_seconds()) + 1
            return self._answer(Result.LOCKED_OUT, f"keypad locked for {wait} s more"), False
        section = False
        try:
            decoded = self._decode(token)
            section = isinstance(decoded, KeySection)
            out = self._execute(decoded, now)
        except _Reject as rej:
            s.failures += 1
            lock = self.profile.lockout
            if lock is not None and s.failures >= lock.failures:
                s.lock_delay_s = lock.first_s if s.lock_delay_s == 0 else min(s.lock_delay_s * 2, lock.max_s)
                s.locked_until = now + dt.timedelta(seconds=s.lock_delay_s)
            return self._answer(rej.result, rej.detail), section
        s.failures = 0
        s.lock_delay_s = 0
        return out, section

    def _decode(self, token: str) -> sts.Token:
        s = self.state
        try:
            return sts.decode(token, sts.EA(s.ea), s.decoder_key)
        except sts.CrcError as exc:
            raise _Reject(Result.CRC_ERROR, exc.message) from None
        except sts.UnsupportedError as exc:
            raise _Reject(Result.UNSUPPORTED, exc.message) from None
        except sts.StsError as exc:
            raise _Reject(Result.FORMAT_ERROR, exc.message) from None

    def _execute(self, token: sts.Token, now: dt.datetime) -> EntryResult:
        s, prof = self.state, self.profile
        if isinstance(token, sts.MeterTest | sts.MeterTestWide):
            return self._meter_test(token)
        if isinstance(token, KeySection):
            return self._key_section(token, now)
        if token.token_class == 0 and token.subclass not in prof.credit_subclasses:
            raise _Reject(Result.UNSUPPORTED, f"this meter takes no {REGISTER_NAMES[token.subclass]} credit")
        if isinstance(token, sts.SetWaterMeterFactor) and not prof.supports_water_factor:
            raise _Reject(Result.UNSUPPORTED, "this meter has no water meter factor")
        tid: int = getattr(token, "tid")  # noqa: B009 - every remaining type carries one
        if s.kt != 0 and tid >> 16 > s.ken:
            raise _Reject(Result.KEY_EXPIRED, f"TID {tid} is past the key's expiry (KEN {s.ken})")
        if tid in s.tids:
            raise _Reject(Result.USED, f"TID {tid} was already used")
        if tid < min(s.tids):
            raise _Reject(Result.OLD, f"TID {tid} is older than the oldest remembered TID {min(s.tids)}")
        if token.token_class == 0 and s.kt == 1:
            raise _Reject(Result.DDTK, "the meter holds a default key (DDTK): credit is refused")
        detail = self._apply(token)
        s.tids[s.tids.index(min(s.tids))] = tid
        return self._answer(Result.ACCEPT, detail, token)

    def _apply(self, token: sts.Token) -> str:
        s = self.state
        if isinstance(token, sts.TransferCredit | sts.CurrencyCredit):
            if isinstance(token, sts.CurrencyCredit) and token.negative:
                raise _Reject(Result.UNSUPPORTED, "negative currency credit is not supported")
            currency = isinstance(token, sts.CurrencyCredit)
            limit = (self.profile.currency_register_max if currency else self.profile.register_max) * PER_BASE_UNIT
            now_credit = s.registers.get(token.subclass, 0)
            added = token.amount * PER_BASE_UNIT
            if now_credit + added > limit:
                raise _Reject(Result.OVERFLOW, "the credit register would overflow")
            s.registers[token.subclass] = now_credit + added
            return f"+{token.amount} base units of {REGISTER_NAMES[token.subclass]}"
        if isinstance(token, sts.SetMaximumPowerLimit):
            s.mpl = token.mpl
            return f"power limit {token.mpl} W"
        if isinstance(token, sts.ClearCredit):
            if token.register not in self.profile.clear_credit_registers:
                raise _Reject(Result.UNSUPPORTED, f"no credit register {token.register}")
            if token.register == sts.ALL_REGISTERS:
                s.registers.clear()
            else:
                s.registers.pop(token.register, None)
            return "credit cleared"
        if isinstance(token, sts.SetTariffRate):
            s.tariff_rate = token.rate
            return f"tariff rate {token.rate}"
        if isinstance(token, sts.ClearTamperCondition):
            s.tamper.clear()
            return "tamper cleared"
        if isinstance(token, sts.SetMaximumPhasePowerUnbalanceLimit):
            s.mppul = token.mppul
            return f"phase unbalance limit {token.mppul} W"
        if isinstance(token, sts.SetWaterMeterFactor):
            s.wm_factor = token.wm_factor
            return f"water meter factor {token.wm_factor}"
        raise _Reject(Result.UNSUPPORTED, f"class {token.token_class} subclass {token.subclass} is not supported")

    def _meter_test(self, token: sts.MeterTest | sts.MeterTestWide) -> EntryResult:
        s, prof = self.state, self.profile
        if token.mfr_code not in (0, s.mfr_code):
            raise _Reject(Result.CRC_ERROR, f"the test token is for manufacturer {token.mfr_code}")
        if token.subclass not in prof.test_formats:
            raise _Reject(Result.UNSUPPORTED, f"this meter does not take the class 1 format {token.subclass}")
        known = {
            "KRN": f"KRN {s.krn}",
            "TI": f"TI {s.ti:02d}",
            "MPL": f"MPL {s.mpl if s.mpl is not None else '-'} W",
            "tamper": f"tamper {','.join(s.tamper) or 'none'}",
            "total energy": f"used {s.consumed / PER_BASE_UNIT / 10:.1f}",
            "version": f"{prof.name} EA{s.ea:02d}",
        }
        lines = tuple(
            known.get(name, f"{name} test OK") for bit, name in enumerate(TEST_FUNCTIONS) if token.control >> bit & 1
        )
        if not lines:
            raise _Reject(Result.UNSUPPORTED, "no test or display function this meter knows is selected")
        s.display = prof.display[Result.ACCEPT]
        return EntryResult(Result.ACCEPT, s.display, "test", token.fields(), lines)

    def _key_section(self, token: KeySection, now: dt.datetime) -> EntryResult:
        s, prof = self.state, self.profile
        if token.subclass in (8, 9) and sts.EA.MISTY1 not in prof.algorithms:
            raise _Reject(Result.UNSUPPORTED, "this meter takes no 128-bit keys")
        window = dt.timedelta(seconds=prof.key_change_window_s)
        if s.pending_since is not None and now - s.pending_since > window:
            s.pending_kct.clear()
        if not s.pending_kct:
            s.pending_since = now
        s.pending_kct[token.subclass] = {k: v for k, v in token.fields().items() if k not in ("class", "subclass")}
        four = s.ea == sts.EA.MISTY1 or 8 in s.pending_kct or 9 in s.pending_kct
        needed = {3, 4, 8, 9} if four else {3, 4}
        if not needed <= s.pending_kct.keys():
            return self._answer(Result.KCT_PENDING, f"section {token.subclass} of {len(needed)} kept", token)
        sections = [sts.REGISTRY[(2, sub)](**s.pending_kct[sub]) for sub in needed]
        s.pending_kct.clear()
        s.pending_since = None
        new = sts.assemble(sections)  # type: ignore[arg-type]
        if new.kt == 0 and s.kt != 0:
            raise _Reject(Result.KEY_TYPE_ERROR, "the key may not be changed to KT 0 (DITK)")
        if new.kt == 3 and prof.refuse_kt3:
            raise _Reject(Result.KEY_TYPE_ERROR, "this meter refuses a common key (KT 3)")
        s.decoder_key, s.ken, s.krn, s.kt, s.ti = new.key, new.ken, new.krn, new.kt, new.ti
        if new.key_bits == 128:
            s.ea, s.sgc = int(sts.EA.MISTY1), new.sgc or s.sgc
        elif s.ea == sts.EA.MISTY1:
            s.ea = int(sts.EA.STA)
        if new.ro:
            s.tids = [0] * prof.tid_store_size
        reset = ", TIDs reset" if new.ro else ""
        return self._answer(Result.KEY_CHANGED, f"new key KRN {new.krn} KT {new.kt}{reset}")

    def _answer(self, result: Result, detail: str, token: sts.Token | None = None) -> EntryResult:
        text = self.profile.display[result]
        self.state.display = text
        shown = {} if token is None else {k: v for k, v in token.fields().items() if k not in SECRET_FIELDS}
        return EntryResult(result, text, detail, shown)

    # ------------------------------------------------------------ time and load

    def _advance_clock(self, now: dt.datetime) -> None:
        if self.state.clock is None or now > self.state.clock:
            self.state.clock = now

    def switch_closed(self, now: dt.datetime) -> bool:
        """Whether the load switch (or valve) is closed, i.e. supply is on."""
        return not self._open_reasons(now)

    def _open_reasons(self, now: dt.datetime) -> list[str]:
        s = self.state
        reasons = []
        if s.tripped_until is not None and now < s.tripped_until:
            reasons.append("power limit trip")
        if s.tamper and self.profile.tamper_opens_switch:
            reasons.append("tamper")
        if not any(rate for _, rate in self._draw_order(1)):
            reasons.append("no credit")
        if s.remote_open:
            reasons.append("remote disconnect")
        return reasons

    def remote_switch(self, closed: bool, now: dt.datetime) -> bool:
        """The head-end's disconnect (``closed=False``) or reconnect: whether supply is on afterwards (a
        reconnect does not override the meter's own reasons, e.g. no credit)."""
        self._advance_clock(now)
        self.state.remote_open = not closed
        return self.switch_closed(now)

    def _draw_order(self, load: int) -> list[tuple[int, int]]:
        """(register, internal units per second) with credit, in the order they are drawn."""
        s = self.state
        unit, currency = UTILITY_REGISTERS[self.profile.utility]
        order = [(unit, load)]
        if s.tariff_rate:
            order.append((currency, load * s.tariff_rate * 100))  # rate: 1/100 currency per kWh (m3)
        order.append((TIME_REGISTER, _TIME_RATE))
        return [(reg, rate) for reg, rate in order if s.registers.get(reg, 0) > 0]

    def run(self, seconds: int, load: int, now: dt.datetime | None = None) -> RunResult:
        """Supply ``load`` (W, or L/h for water and gas) for ``seconds`` from ``now``."""
        s = self.state
        if seconds < 0 or load < 0:
            raise sts.RangeError("seconds and load must not be negative")
        start = now or s.clock
        if start is None:
            raise MeterError("no_time", "the meter has no time yet: give one")
        start = start.replace(microsecond=0)  # the model counts whole seconds
        t, end = start, start + dt.timedelta(seconds=seconds)
        consumed, events = 0, []
        while t < end:
            left = int((end - t).total_seconds())
            if s.tripped_until is not None and t < s.tripped_until:
                whole = s.tripped_until.replace(microsecond=0)
                t = min(whole if whole == s.tripped_until else whole + dt.timedelta(seconds=1), end)
                continue
            if s.tamper and self.profile.tamper_opens_switch:
                events.append(f"{t:%H:%M:%S} supply off: tamper")
                break
            if s.remote_open:
                events.append(f"{t:%H:%M:%S} supply off: remote disconnect")
                break
            if s.mpl is not None and load > s.mpl:
                s.tripped_until = t + dt.timedelta(seconds=max(self.profile.trip_reconnect_s, 1))
                events.append(f"{t:%H:%M:%S} trip: {load} W over the {s.mpl} W limit")
                continue
            draw = self._draw_order(load)
            if not draw:
                events.append(f"{t:%H:%M:%S} supply off: no credit")
                break
            reg, rate = draw[0]
            if rate == 0:  # no load: nothing is used
                break
            credit = s.registers[reg]
            step = min(left, -(-credit // rate))
            used = min(credit, rate * step)
            s.registers[reg] = credit - used
            if reg == TIME_REGISTER:  # time credit: the load is supplied whatever it is
                consumed += load * step
            else:
                consumed += used if rate == load else used // (rate // load)
            t += dt.timedelta(seconds=step)
        s.consumed += consumed
        self._advance_clock(end)
        return RunResult(seconds, consumed, tuple(events))

    def tamper(self, kind: str, now: dt.datetime) -> str:
        if kind not in TAMPER_KINDS:
            raise MeterError("format_error", f"tamper kind must be one of {', '.join(TAMPER_KINDS)}")
        self._advance_clock(now)
        if kind not in self.state.tamper:
            self.state.tamper.append(kind)
        self.state.display = "Tamper"
        return "Tamper"

    # ------------------------------------------------------------ views

    def registers(self) -> dict[str, float]:
        """Credit per register, in base units (0.1 kWh, 0.1 m3, 0.1 min, 10^-5 currency)."""
        return {REGISTER_NAMES[k]: round(v / PER_BASE_UNIT, 6) for k, v in sorted(self.state.registers.items())}

    def status(self, now: dt.datetime | None = None) -> dict[str, Any]:
        """Everything a technician could read off the meter, without the key."""
        s = self.state
        at = now or s.clock
        view = s.to_dict()
        view["registers"] = self.registers()
        view["switch"] = "closed" if at is not None and self.switch_closed(at) else "open"
        view["open_reasons"] = self._open_reasons(at) if at is not None else []
        view["pending_kct"] = sorted(s.pending_kct)
        view["key_check"] = self.key_check()
        return view

    def key_check(self) -> str:
        """A key check value: the first 3 bytes of a zero block encrypted under the key."""
        value = encrypt(sts.EA(self.state.ea), 0, self.state.decoder_key)
        return f"{value >> 40:06x}"
