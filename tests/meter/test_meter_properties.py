"""Property tests of the virtual meter: no sequence of keypad entries and load runs corrupts its state.

Hypothesis draws a meter (profile, algorithm, key type, key expiry) and a sequence of operations: credit tokens
(valid, replayed, under a wrong key, of subclasses the profile may not take, big enough to overflow), garbage
digits, management tokens, class 1 test tokens, key change sections of several sets (some that must be refused),
runs with random loads and durations, time passing, and tamper events.

After every operation the test checks the result against the rules table of ``mita.meter.model`` (an oracle
that decodes the same digits with the key the meter held), and checks the state:

* credit changes only by what an accepted credit token carried, by a clear-credit token, or by consumption,
  and every run's ``consumed`` is exactly what left the registers (in internal units);
* the TID store keeps its size and changes only by an accepted token replacing its smallest TID (or RO = 1);
* a rejected entry changes nothing but the reject counter and the keypad lock;
* every entry, taken or not, from the keypad or delivered remotely, is the state's ``last_entry`` (its digits as
  typed, but none of a key change section's);
* the state survives ``to_dict`` / JSON / ``from_dict`` unchanged.

Any exception fails the test: ``enter`` documents none, ``run`` only ``RangeError`` for negative inputs.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mita import sts
from mita.meter import PROFILES, Meter, MeterState, Profile, Result
from mita.meter.model import ACCEPTED, TAMPER_KINDS, TEST_FUNCTIONS, TIME_REGISTER, UTILITY_REGISTERS
from mita.meter.state import KEYPAD, PER_BASE_UNIT, REMOTE, TYPED_MAX, LastEntry
from mita.sts.keychange import KeySection

T0 = dt.datetime(2024, 3, 1, 12, 0)
KEN_EDGE = sts.tid_from_datetime(T0) >> 16  # 250
BASE_TID = (KEN_EDGE << 16) - 80  # TIDs BASE_TID + 0..119 straddle a KEN boundary at offset 80
KEY64 = (0x0123456789ABCDEF, 0xFEDCBA9876543210, 0x0F1E2D3C4B5A6978)
KEY128 = (0x00112233445566778899AABBCCDDEEFF, 0xF0E1D2C3B4A5968778695A4B3C2D1E0F)
DRN = "47500150231"
MFR = 47
TIME_RATE = PER_BASE_UNIT // 6  # time credit: 0.1 minute lasts 6 seconds
TEST_MASK = (1 << len(TEST_FUNCTIONS)) - 1

#: Key change sets the operations draw sections from (encrypted, at entry, under the meter's current key).
KEY_SETS: tuple[dict[str, Any], ...] = (
    {"new_key": KEY64[1], "key_bits": 64, "kt": 2, "ro": 0, "ken": 255},
    {"new_key": KEY64[2], "key_bits": 64, "kt": 1, "ro": 0, "ken": 255},  # to a DDTK
    {"new_key": KEY64[0], "key_bits": 64, "kt": 2, "ro": 1, "ken": 255},  # roll-over: clears the TID store
    {"new_key": KEY64[1], "key_bits": 64, "kt": 0, "ro": 0, "ken": 255},  # to KT 0: refused unless KT 0
    {"new_key": KEY64[2], "key_bits": 64, "kt": 3, "ro": 0, "ken": KEN_EDGE - 1},  # common key, earlier expiry
    {"new_key": KEY128[1], "key_bits": 128, "kt": 2, "ro": 0, "ken": 255, "sgc": "654321"},
    {"new_key": KEY128[0], "key_bits": 128, "kt": 2, "ro": 1, "ken": 255, "sgc": "111111"},
)
FOUR_TOKEN_SET = 5  # where 3rd and 4th sections come from when a 2-token set is drawn


def sections_of(index: int) -> dict[int, sts.Token]:
    cfg = dict(KEY_SETS[index])
    new_key = cfg.pop("new_key")
    return {s.subclass: s for s in sts.key_change_set(new_key, krn=3, ti=9, **cfg)}


SECTIONS = [sections_of(i) for i in range(len(KEY_SETS))]

# ---------------------------------------------------------------- strategies

tid_offsets = st.integers(0, 119)
# (size, n): "small" is n base units, "half" half the profile's register maximum plus n, "max" the largest token.
amounts = st.tuples(st.sampled_from(["small", "small", "half", "max"]), st.integers(0, 3000))
credit_kinds = st.sampled_from(["unit", "unit", 0, 1, 2, 3])  # "unit": the profile's utility
credits = st.tuples(st.just("credit"), tid_offsets, amounts, credit_kinds, st.sampled_from(["ok", "ok", "wrong"]))
operations = st.one_of(
    credits,
    credits,
    credits,
    st.tuples(st.just("currency"), tid_offsets, st.integers(0, 10**8), st.integers(4, 7), st.booleans()),
    st.tuples(st.just("replay"), st.integers(0, 10**6)),
    st.tuples(st.just("garbage"), st.one_of(st.from_regex(r"[0-9]{20}", fullmatch=True), st.text(max_size=24))),
    st.tuples(st.just("mgmt"), st.integers(0, 5), tid_offsets, st.integers(0, 0xFFFF), st.booleans()),
    st.tuples(st.just("kct"), st.integers(0, len(KEY_SETS) - 1), st.sampled_from([3, 4, 8, 9])),
    st.tuples(st.just("kct_set"), st.integers(0, len(KEY_SETS) - 1), st.permutations([3, 4, 8, 9])),
    st.tuples(st.just("test"), st.integers(0, (1 << 14) - 1), st.sampled_from(["zero", "own", "other"])),
    st.tuples(st.just("run"), st.integers(0, 3600), st.integers(0, 20_000)),
    st.tuples(st.just("wait"), st.integers(0, 2000)),
    st.tuples(st.just("tamper"), st.sampled_from(TAMPER_KINDS)),
    st.tuples(st.just("remote"), credits),  # the same token delivered by a head-end (DLMS token gateway)
)


@st.composite
def meter_specs(draw: st.DrawFn) -> dict[str, Any]:
    profile = draw(st.sampled_from(sorted(PROFILES)))
    ea = draw(st.sampled_from(sorted(int(a) for a in PROFILES[profile].algorithms)))
    return {
        "profile": profile,
        "ea": ea,
        "decoder_key": KEY128[0] if ea == 11 else KEY64[0],
        "kt": draw(st.sampled_from([0, 1, 2, 2, 3])),
        "ken": draw(st.sampled_from([255, KEN_EDGE - 1])),
        "fill": draw(st.booleans()),
    }


# ---------------------------------------------------------------- the oracle


@dataclass
class Reference:
    """What the test itself knows: expected credit and the key change sections it has entered."""

    registers: dict[int, int] = field(default_factory=dict)
    pending: dict[int, KeySection] = field(default_factory=dict)
    pending_since: dt.datetime | None = None


def decoded(state: MeterState, digits: str) -> sts.Token | Result:
    """The token as the meter holding ``state``'s key reads it, or the result of failing to read it."""
    try:
        return sts.decode(digits, sts.EA(state.ea), state.decoder_key)
    except sts.CrcError:
        return Result.CRC_ERROR
    except sts.UnsupportedError:
        return Result.UNSUPPORTED
    except sts.StsError:
        return Result.FORMAT_ERROR


def expected_tid_result(state: MeterState, prof: Profile, token: Any) -> Result:
    """Steps 4-9 of the rules table for a token that carries a TID."""
    if token.token_class == 0 and token.subclass not in prof.credit_subclasses:
        return Result.UNSUPPORTED
    if isinstance(token, sts.SetWaterMeterFactor) and not prof.supports_water_factor:
        return Result.UNSUPPORTED
    if state.kt != 0 and token.tid >> 16 > state.ken:
        return Result.KEY_EXPIRED
    if token.tid in state.tids:
        return Result.USED
    if token.tid < min(state.tids):
        return Result.OLD
    if token.token_class == 0 and state.kt == 1:
        return Result.DDTK
    if isinstance(token, sts.CurrencyCredit) and token.negative:
        return Result.UNSUPPORTED
    if token.token_class == 0:
        total = state.registers.get(token.subclass, 0) + token.amount * PER_BASE_UNIT
        cap = prof.currency_register_max if isinstance(token, sts.CurrencyCredit) else prof.register_max
        if total > cap * PER_BASE_UNIT:
            return Result.OVERFLOW
    if isinstance(token, sts.ClearCredit) and token.register not in prof.clear_credit_registers:
        return Result.UNSUPPORTED
    return Result.ACCEPT


def expected_test_result(state: MeterState, prof: Profile, token: sts.MeterTest | sts.MeterTestWide) -> Result:
    if token.mfr_code not in (0, state.mfr_code):
        return Result.CRC_ERROR
    if token.subclass not in prof.test_formats or not token.control & TEST_MASK:
        return Result.UNSUPPORTED
    return Result.ACCEPT


def rejected_view(state: MeterState, result: Result) -> dict[str, Any]:
    """The state without what a rejected entry may change."""
    view = state.to_dict(include_key=True)
    for name in ("failures", "locked_until", "lock_delay_s", "display", "clock", "last_entry"):
        view.pop(name)
    if result == Result.KEY_TYPE_ERROR:  # the refused set is thrown away
        view.pop("pending_kct")
        view.pop("pending_since")
    return view


def nonzero(registers: dict[int, int]) -> dict[int, int]:
    return {k: v for k, v in registers.items() if v}


def snapshot(state: MeterState) -> MeterState:
    return MeterState.from_dict(json.loads(json.dumps(state.to_dict())), state.decoder_key, state.secrets()["pending"])


# ---------------------------------------------------------------- one step


class Keypad:
    """Drives one meter through the operations, checking each step against the oracle."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter
        self.prof = meter.profile
        self.now = T0
        self.ref = Reference()
        self.entered: list[str] = []

    # -- making tokens as the vending system would (it knows the meter's current key)

    def encode(self, token: sts.Token, wrong: bool = False) -> str:
        s = self.meter.state
        key = s.decoder_key
        if wrong:
            key = next(k for k in (KEY128 if s.ea == 11 else KEY64) if k != s.decoder_key)
        return sts.encode(token, sts.EA(s.ea), key)

    def token_for(self, op: tuple[Any, ...]) -> str | None:
        kind = op[0]
        if kind == "credit":
            _, off, (size, n), sub, how = op
            amount = {"small": n, "half": self.prof.register_max // 2 + n, "max": sts.amount.MAX_UNITS}[size]
            if sub == "unit":
                sub = UTILITY_REGISTERS[self.prof.utility][0]
            return self.encode(sts.TransferCredit(BASE_TID + off, amount, 5, sts.CreditKind(sub)), how == "wrong")
        if kind == "currency":
            _, off, amount, sub, negative = op
            return self.encode(sts.CurrencyCredit(BASE_TID + off, amount, negative, sts.CreditKind(sub)))
        if kind == "replay":
            return self.entered[op[1] % len(self.entered)] if self.entered else None
        if kind == "garbage":
            return op[1]
        if kind == "mgmt":
            _, which, off, value, wrong = op
            tid = BASE_TID + off
            registers = [0, 1, 3, 4, 7, 8, sts.ALL_REGISTERS, value]
            token: sts.Token = [
                sts.SetMaximumPowerLimit(tid, value % 30_000),
                sts.ClearCredit(tid, registers[value % len(registers)]),
                sts.SetTariffRate(tid, value % 500),
                sts.ClearTamperCondition(tid),
                sts.SetMaximumPhasePowerUnbalanceLimit(tid, value),
                sts.SetWaterMeterFactor(tid, value),
            ][which]
            return self.encode(token, wrong)
        if kind == "kct":
            _, index, sub = op
            sections = SECTIONS[index] if sub in SECTIONS[index] else SECTIONS[FOUR_TOKEN_SET]
            return self.encode(sections[sub])
        if kind == "test":
            _, control, mfr = op
            code = {"zero": 0, "own": MFR, "other": MFR + 1}[mfr]
            if 1 in self.prof.test_formats:
                return sts.encode(sts.MeterTestWide(control & ((1 << 28) - 1), code), sts.EA.STA, 0)
            return sts.encode(sts.MeterTest(control, code), sts.EA.STA, 0)
        return None

    # -- the checks

    def enter(self, digits: str, via: str = KEYPAD) -> None:
        meter, prof, ref, now = self.meter, self.prof, self.ref, self.now
        before = snapshot(meter.state)
        token = decoded(before, digits)
        locked = before.locked_until is not None and now < before.locked_until
        new_key: sts.NewKeyConfig | None = None
        if locked:
            expected = Result.LOCKED_OUT
        elif isinstance(token, Result):
            expected = token
        elif isinstance(token, sts.MeterTest | sts.MeterTestWide):
            expected = expected_test_result(before, prof, token)
        elif isinstance(token, KeySection):
            expected, new_key = self.expected_key_section(before, token)
        else:
            expected = expected_tid_result(before, prof, token)

        entry = meter.enter(digits, now, via=via)
        event(f"result: {entry.result.value}")
        self.entered.append(digits)
        state = meter.state
        assert entry.result == expected, (digits, token, entry)
        section = isinstance(token, KeySection) and not locked  # its digits carry the new key: not kept
        typed = None if section else digits.replace(" ", "").replace("-", "")[:TYPED_MAX]
        assert state.last_entry == LastEntry(typed, now, entry.result.value, via)
        assert entry.display == prof.display[entry.result]
        assert len(state.tids) == prof.tid_store_size
        assert not {"nkho", "nklo", "nkmo1", "nkmo2"} & set(entry.token)

        if entry.result not in ACCEPTED:
            assert rejected_view(state, entry.result) == rejected_view(before, entry.result)
            if entry.result == Result.LOCKED_OUT:
                assert (state.failures, state.locked_until) == (before.failures, before.locked_until)
            else:
                assert state.failures == before.failures + 1
                lock = prof.lockout
                if lock is not None and state.failures >= lock.failures:
                    previous = before.lock_delay_s
                    assert state.lock_delay_s == (min(2 * previous, lock.max_s) if previous else lock.first_s)
                    assert state.locked_until == now + dt.timedelta(seconds=state.lock_delay_s)
                else:
                    assert state.locked_until == before.locked_until
            assert nonzero(state.registers) == ref.registers
            return

        assert (state.failures, state.lock_delay_s) == (0, 0)
        if isinstance(token, KeySection):
            self.check_key_section(before, state, entry.result, new_key)
        elif isinstance(token, sts.MeterTest | sts.MeterTestWide):
            assert entry.lines and len(entry.lines) == bin(token.control & TEST_MASK).count("1")
            assert rejected_view(state, entry.result) == rejected_view(before, entry.result)
        else:
            self.check_tid_token(before, state, token)
        assert nonzero(state.registers) == ref.registers

    def expected_key_section(self, before: MeterState, token: KeySection) -> tuple[Result, sts.NewKeyConfig | None]:
        ref, prof, now = self.ref, self.prof, self.now
        if token.subclass in (8, 9) and sts.EA.MISTY1 not in prof.algorithms:
            return Result.UNSUPPORTED, None
        window = dt.timedelta(seconds=prof.key_change_window_s)
        if ref.pending_since is not None and now - ref.pending_since > window:
            ref.pending.clear()
        if not ref.pending:
            ref.pending_since = now
        ref.pending[token.subclass] = token
        four = before.ea == sts.EA.MISTY1 or 8 in ref.pending or 9 in ref.pending
        needed = {3, 4, 8, 9} if four else {3, 4}
        if not needed <= ref.pending.keys():
            return Result.KCT_PENDING, None
        new = sts.assemble([ref.pending[sub] for sub in needed])
        ref.pending.clear()
        ref.pending_since = None
        if (new.kt == 0 and before.kt != 0) or (new.kt == 3 and prof.refuse_kt3):
            return Result.KEY_TYPE_ERROR, None
        return Result.KEY_CHANGED, new

    def check_key_section(
        self, before: MeterState, state: MeterState, result: Result, new: sts.NewKeyConfig | None
    ) -> None:
        assert sorted(state.pending_kct) == sorted(self.ref.pending)
        if result == Result.KCT_PENDING:
            assert state.decoder_key == before.decoder_key
            assert state.tids == before.tids
            return
        assert new is not None
        assert (state.decoder_key, state.ken, state.krn, state.kt, state.ti) == (
            new.key,
            new.ken,
            new.krn,
            new.kt,
            new.ti,
        )
        if new.key_bits == 128:
            assert (state.ea, state.sgc) == (11, new.sgc)
        else:
            assert (state.ea, state.sgc) == (before.ea, before.sgc)
        assert state.tids == ([0] * self.prof.tid_store_size if new.ro else before.tids)

    def check_tid_token(self, before: MeterState, state: MeterState, token: Any) -> None:
        ref = self.ref
        expected_tids = list(before.tids)
        expected_tids[expected_tids.index(min(expected_tids))] = token.tid
        assert sorted(state.tids) == sorted(expected_tids)
        assert min(state.tids) >= min(before.tids)
        if isinstance(token, sts.TransferCredit | sts.CurrencyCredit):
            ref.registers[token.subclass] = ref.registers.get(token.subclass, 0) + token.amount * PER_BASE_UNIT
            ref.registers = nonzero(ref.registers)
        elif isinstance(token, sts.ClearCredit):
            if token.register == sts.ALL_REGISTERS:
                ref.registers.clear()
            else:
                ref.registers.pop(token.register, None)
        elif isinstance(token, sts.SetMaximumPowerLimit):
            assert state.mpl == token.mpl
        elif isinstance(token, sts.SetTariffRate):
            assert state.tariff_rate == token.rate
        elif isinstance(token, sts.ClearTamperCondition):
            assert state.tamper == []
        elif isinstance(token, sts.SetMaximumPhasePowerUnbalanceLimit):
            assert state.mppul == token.mppul
        elif isinstance(token, sts.SetWaterMeterFactor):
            assert state.wm_factor == token.wm_factor

    def run(self, seconds: int, load: int) -> None:
        meter, prof = self.meter, self.prof
        before = snapshot(meter.state)
        result = meter.run(seconds, load, self.now)
        state = meter.state
        self.now += dt.timedelta(seconds=seconds)
        assert state.clock is not None and state.clock >= self.now
        unit, currency = UTILITY_REGISTERS[prof.utility]
        drawn = {}
        for reg in set(before.registers) | set(state.registers):
            drawn[reg] = before.registers.get(reg, 0) - state.registers.get(reg, 0)
            assert drawn[reg] >= 0, f"register {reg} rose during a run"
            assert state.registers.get(reg, 0) >= 0
            if reg not in (unit, currency, TIME_REGISTER):
                assert drawn[reg] == 0, f"register {reg} is not the utility's, but was drawn"
        rate = before.tariff_rate
        if not rate:
            assert drawn.get(currency, 0) == 0
        from_currency = drawn.get(currency, 0) // (rate * 100) if rate else 0
        from_time = load * math.ceil(drawn.get(TIME_REGISTER, 0) / TIME_RATE)
        assert result.consumed == drawn.get(unit, 0) + from_currency + from_time
        assert 0 <= result.consumed <= load * seconds
        assert state.consumed == before.consumed + result.consumed
        if before.mpl is not None and load > before.mpl:
            assert result.consumed == 0 and not any(drawn.values())
        if before.tamper and prof.tamper_opens_switch:
            assert result.consumed == 0 and not any(drawn.values())
        self.ref.registers = nonzero(state.registers)
        assert rejected_view(state, Result.ACCEPT) == {
            **rejected_view(before, Result.ACCEPT),
            "registers": {str(k): v for k, v in state.registers.items()},
            "consumed": state.consumed,
            "tripped_until": state.to_dict()["tripped_until"],
        }

    def step(self, op: tuple[Any, ...]) -> None:
        kind = op[0]
        if kind == "run":
            self.run(op[1], op[2])
        elif kind == "wait":
            self.now += dt.timedelta(seconds=op[1])
        elif kind == "tamper":
            self.meter.tamper(op[1], self.now)
            assert op[1] in self.meter.state.tamper
        elif kind == "kct_set":
            _, index, order = op
            for sub in order:
                if sub in SECTIONS[index]:
                    self.step(("kct", index, sub))
        elif kind == "remote":
            digits = self.token_for(op[1])
            assert digits is not None
            self.enter(digits, REMOTE)
            self.now += dt.timedelta(seconds=1)
        else:
            digits = self.token_for(op)
            if digits is not None:
                self.enter(digits)
            self.now += dt.timedelta(seconds=1)
        self.check_state()

    def fill(self) -> None:
        """Fill the TID store with accepted tokens (TID offsets 20 and up: 0..19 are then old)."""
        for i in range(self.prof.tid_store_size):
            self.step(("mgmt", 3, 20 + i, 0, False))  # ClearTamperCondition: even a DDTK meter takes it

    def check_state(self) -> None:
        state = self.meter.state
        assert len(state.tids) == self.prof.tid_store_size
        assert all(isinstance(v, int) and v >= 0 for v in state.registers.values())
        assert nonzero(state.registers) == self.ref.registers
        assert snapshot(state) == state
        status = self.meter.status(self.now)
        assert "decoder_key" not in status
        assert status["switch"] in ("open", "closed")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=meter_specs(), ops=st.lists(operations, min_size=20, max_size=60))
def test_no_sequence_of_entries_and_runs_corrupts_the_meter(spec: dict[str, Any], ops: list[tuple[Any, ...]]) -> None:
    fill = spec.pop("fill")
    meter = Meter.create(drn=DRN, sgc="123456", ti=1, krn=1, **spec)
    keypad = Keypad(meter)
    if fill:
        keypad.fill()
    for op in ops:
        keypad.step(op)
    # The whole life of the meter also survives a round trip, key included.
    text = json.dumps(meter.state.to_dict(include_key=True))
    data = json.loads(text)
    assert MeterState.from_dict(data, int(data["decoder_key"], 16)) == meter.state
    restored = Meter(
        MeterState.from_dict(meter.state.to_dict(), meter.state.decoder_key, meter.state.secrets()["pending"])
    )
    assert restored.status(keypad.now) == meter.status(keypad.now)


@settings(max_examples=100, deadline=None)
@given(
    profile=st.sampled_from(sorted(PROFILES)),
    credits=st.lists(st.tuples(st.integers(1, 5000), st.integers(0, 7200), st.integers(0, 20_000)), max_size=12),
)
def test_credit_is_conserved(profile: str, credits: list[tuple[int, int, int]]) -> None:
    """Everything vended is either still in the register or was consumed: no unit is lost or invented."""
    meter = Meter.create(drn=DRN, ea=7, decoder_key=KEY64[0], sgc="123456", ti=1, krn=1, kt=2, profile=profile)
    kind = sts.CreditKind(UTILITY_REGISTERS[PROFILES[profile].utility][0])
    now, vended, consumed = T0, 0, 0
    for i, (amount, seconds, load) in enumerate(credits):
        digits = sts.encode(sts.TransferCredit(BASE_TID + i, amount, 0, kind), sts.EA.STA, KEY64[0])
        entry = meter.enter(digits, now)
        assert entry.result == Result.ACCEPT
        vended += entry.token["amount"] * PER_BASE_UNIT
        run = meter.run(seconds, load, now)
        consumed += run.consumed
        now += dt.timedelta(seconds=seconds)
        assert meter.state.registers[int(kind)] == vended - consumed
        assert meter.state.consumed == consumed
        assert meter.switch_closed(now) == (vended > consumed)


@settings(max_examples=100, deadline=None)
@given(
    profile=st.sampled_from(sorted(PROFILES)),
    tids=st.lists(st.integers(1, 5000), min_size=1, max_size=120),
)
def test_tid_store_semantics(profile: str, tids: list[int]) -> None:
    """Accepted iff not remembered and not older than the smallest remembered TID; the store keeps its size."""
    meter = Meter.create(drn=DRN, ea=7, decoder_key=KEY64[0], sgc="123456", ti=1, krn=1, kt=2, profile=profile)
    size = PROFILES[profile].tid_store_size
    kind = sts.CreditKind(UTILITY_REGISTERS[PROFILES[profile].utility][0])
    store = [0] * size
    for tid in tids:
        digits = sts.encode(sts.TransferCredit(tid, 1, 0, kind), sts.EA.STA, KEY64[0])
        result = meter.enter(digits, T0 + dt.timedelta(days=1)).result
        if tid in store:
            assert result == Result.USED
        elif tid < min(store):
            assert result == Result.OLD
        else:
            assert result == Result.ACCEPT
            store[store.index(min(store))] = tid
        assert sorted(meter.state.tids) == sorted(store)
        meter.state.failures = 0  # lockout is not what this test is about


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_key_change_sets_complete_in_any_order_with_noise(data: st.DataObject) -> None:
    """Sections of a set, interleaved with other tokens in any order, install the key exactly when complete."""
    meter = Meter.create(
        drn=DRN, ea=11, decoder_key=KEY128[0], sgc="123456", ti=1, krn=1, kt=2, profile="edition2-ea11"
    )
    sections = {
        s.subclass: sts.encode(s, sts.EA.MISTY1, KEY128[0])
        for s in sts.key_change_set(KEY128[1], key_bits=128, ken=255, krn=2, kt=2, ti=3, sgc="654321")
    }
    order = data.draw(st.permutations([3, 4, 8, 9]))
    noise = data.draw(st.lists(st.integers(0, 59), max_size=6, unique=True))
    now = T0
    for i, sub in enumerate(order):
        for off in noise[i::4]:
            credit = sts.TransferCredit(BASE_TID + off, 1, 0, sts.CreditKind.ELECTRICITY)
            meter.enter(sts.encode(credit, sts.EA.MISTY1, KEY128[0]), now)
            now += dt.timedelta(seconds=11)  # past any lockout
        result = meter.enter(sections[sub], now).result
        now += dt.timedelta(seconds=1)
        assert result == (Result.KEY_CHANGED if i == 3 else Result.KCT_PENDING)
        assert meter.state.decoder_key == (KEY128[1] if i == 3 else KEY128[0])
