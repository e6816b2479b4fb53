"""Bulk key change sets (mita.sts.bulk.key_change_sets, layout_data) against the single-token path.

A campaign makes every meter's key change set with :func:`mita.sts.bulk.key_change_sets`; a vend that
carries a key change makes it with :func:`mita.sts.key_change_set` then :func:`mita.sts.encode`. A meter
may get either, so the two must give the same 20 digits, bit for bit, for every old algorithm (EA07, EA09,
EA11), both key sizes (2- and 4-token sets) and every field value; and where the single path refuses an
input with a typed error, the bulk path must refuse it too (a campaign must never emit a set the single
path would not make). :func:`mita.sts.bulk.layout_data` is checked against ``Token.data_bits``, and the
bulk path is run over the key change conformance vectors (mita/conformance/vectors/key_change.json).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import key_change_groups, vector_params
from mita import sts
from mita.sts import EA, bulk
from mita.sts.errors import FormatError, RangeError, StsError, UnsupportedError
from mita.sts.tokens import KEY_CHANGE_TYPES

PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
M64 = (1 << 64) - 1
M128 = (1 << 128) - 1
OLD_EAS = (EA.STA, EA.DEA, EA.MISTY1)
OLD = 0x0123456789ABCDEF  # an EA07 decoder key for the error tests
SUB_ORDER = {64: [3, 4], 128: [3, 4, 8, 9]}

keys64 = st.integers(0, M64)
keys128 = st.integers(0, M128)
sgcs = st.integers(0, 999_999).map(lambda v: f"{v:06d}")
kens = st.integers(0, 255)
krns = st.integers(1, 9)
kts = st.integers(0, 3)
tis = st.integers(0, 99)
ros = st.integers(0, 1)


def key_array(keys: list[int], bits: int, form: str) -> Any:
    """The same keys in one of the layouts the bulk path documents."""
    if form == "ints":
        return list(keys)
    if bits == 64:
        return np.array(keys, dtype=np.uint64)
    if form == "bytes":
        return np.frombuffer(b"".join(k.to_bytes(16, "big") for k in keys), dtype=np.uint8).reshape(-1, 16)
    return np.array([[k >> 64, k & M64] for k in keys], dtype=np.uint64).reshape(-1, 2)  # (high, low) halves


def single_set(new_key: int, old_key: int, old_ea: EA, bits: int, **cfg: Any) -> list[str]:
    """What a vend gives one meter: the single path's sections, each encoded under the meter's old key."""
    return [sts.encode(s, old_ea, old_key) for s in sts.key_change_set(new_key, key_bits=bits, **cfg)]


def as_str(sets: npt.NDArray[np.bytes_]) -> list[list[str]]:
    return np.char.decode(sets, "ascii").tolist()  # type: ignore[no-any-return]


@st.composite
def fleets(draw: st.DrawFn, bits: int) -> dict[str, Any]:
    """A handful of meters with their old keys and algorithm, and one key change configuration for all."""
    n = draw(st.integers(1, 6))
    old_ea = draw(st.sampled_from(OLD_EAS))
    old_keys = draw(st.lists(keys128 if old_ea is EA.MISTY1 else keys64, min_size=n, max_size=n))
    new_keys = draw(st.lists(keys128 if bits == 128 else keys64, min_size=n, max_size=n))
    per_meter_ti = draw(st.booleans())
    ti = draw(st.lists(tis, min_size=n, max_size=n)) if per_meter_ti else draw(tis)
    return {
        "n": n,
        "old_ea": old_ea,
        "old_keys": old_keys,
        "new_keys": new_keys,
        "old_form": draw(
            st.sampled_from(["ints", "array", "halves", "bytes"] if old_ea is EA.MISTY1 else ["ints", "array"])
        ),
        "new_form": draw(st.sampled_from(["ints", "bytes"] if bits == 128 else ["ints", "array"])),
        "cfg": {
            "ken": draw(kens),
            "krn": draw(krns),
            "kt": draw(kts),
            "ti": ti,
            "ro": draw(ros),
            "sgc": draw(sgcs) if bits == 128 else draw(st.none() | sgcs),
        },
    }


def check_fleet(f: dict[str, Any], bits: int) -> None:
    n, old_ea, cfg = f["n"], f["old_ea"], f["cfg"]
    old_bits = 128 if old_ea is EA.MISTY1 else 64
    sets = bulk.key_change_sets(
        key_array(f["new_keys"], bits, f["new_form"]),
        key_array(f["old_keys"], old_bits, f["old_form"]),
        old_ea,
        n,
        key_bits=bits,
        **cfg,
    )
    assert sets.shape == (n, bits // 32) and sets.dtype == np.dtype("S20")
    got = as_str(sets)
    for i in range(n):
        ti = cfg["ti"][i] if isinstance(cfg["ti"], list) else cfg["ti"]
        meter_cfg = {**cfg, "ti": ti}
        assert got[i] == single_set(f["new_keys"][i], f["old_keys"][i], old_ea, bits, **meter_cfg), f"meter {i}"
        # and the meter reads back exactly the configuration the set was made for
        sections = [sts.decode(d, old_ea, f["old_keys"][i]) for d in got[i]]
        assert [s.subclass for s in sections] == SUB_ORDER[bits]
        new = sts.assemble(sections)  # type: ignore[arg-type]
        assert (new.key, new.key_bits, new.ken, new.krn, new.kt, new.ti, new.ro) == (
            f["new_keys"][i], bits, cfg["ken"], cfg["krn"], cfg["kt"], ti, cfg["ro"],
        )  # fmt: skip
        if bits == 128:
            assert new.sgc == cfg["sgc"]


@PROPS
@given(fleets(64))
def test_two_token_sets_equal_the_single_path(f: dict[str, Any]) -> None:
    check_fleet(f, 64)


@PROPS
@given(fleets(128))
def test_four_token_sets_equal_the_single_path(f: dict[str, Any]) -> None:
    check_fleet(f, 128)


@PROPS
@given(new=keys64, old=keys64, cfg=st.fixed_dictionaries({"ken": kens, "krn": krns, "kt": kts, "ti": tis, "ro": ros}))
def test_one_old_key_for_every_meter_broadcasts(new: int, old: int, cfg: dict[str, Any]) -> None:
    """One ``int`` old key stands for every meter (a common key, KT 3), as the docstring says."""
    sets = as_str(bulk.key_change_sets([new, new ^ 1], old, EA.STA, 2, key_bits=64, **cfg))
    assert sets[0] == single_set(new, old, EA.STA, 64, **cfg)
    assert sets[1] == single_set(new ^ 1, old, EA.STA, 64, **cfg)


def test_no_meters_gives_an_empty_array() -> None:
    assert bulk.key_change_sets([], OLD, EA.STA, 0, key_bits=64, ken=1, krn=1, kt=2, ti=1, ro=0).shape == (0, 2)
    four = bulk.key_change_sets([], OLD, EA.STA, 0, key_bits=128, ken=1, krn=1, kt=2, ti=1, ro=0, sgc="123456")
    assert four.shape == (0, 4)


# ---------------------------------------------------------------- refusals: typed errors, like the single path

GOOD: dict[str, Any] = {"ken": 255, "krn": 2, "kt": 2, "ti": 1, "ro": 1, "sgc": "123456"}


def bulk_error(bits: int, new: int = 5, **change: Any) -> type[StsError] | None:
    """The typed error class the bulk path raises for this input (None: accepted); anything else fails."""
    try:
        bulk.key_change_sets([new], OLD, EA.STA, 1, key_bits=bits, **{**GOOD, **change})
    except StsError as exc:
        return type(exc)
    except Exception as exc:  # an untyped error: a caller handling StsError would crash instead
        pytest.fail(f"bulk.key_change_sets raised untyped {type(exc).__name__}: {exc} for {change} (new={new})")
    return None


def single_error(bits: int, new: int = 5, **change: Any) -> type[StsError] | None:
    try:
        single_set(new, OLD, EA.STA, bits, **{**GOOD, **change})
    except StsError as exc:
        return type(exc)
    return None


@pytest.mark.parametrize("bits", [64, 128])
@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"ken": 256}, RangeError),
        ({"ken": -1}, RangeError),
        ({"ti": 256}, RangeError),
        ({"ti": -1}, RangeError),
        ({"ro": 2}, RangeError),
        ({"kt": 4}, RangeError),
        ({"kt": -1}, RangeError),
    ],
    ids=lambda x: str(x),
)
def test_out_of_range_fields_raise_range_errors(bits: int, change: dict[str, int], error: type[StsError]) -> None:
    assert single_error(bits, **change) is error
    assert bulk_error(bits, **change) is error


@pytest.mark.parametrize("sgc", [None, "", "12345", "1234567", "12345a", " 12345", "-12345"])
def test_a_four_token_set_needs_a_six_digit_sgc(sgc: str | None) -> None:
    assert single_error(128, sgc=sgc) is FormatError
    assert bulk_error(128, sgc=sgc) is FormatError


def test_non_ascii_digits_are_no_sgc() -> None:
    """``str.isdigit`` takes these; the single path (``identity.is_digits``) refuses them with a FormatError.

    BUG (src/mita/sts/bulk/keys.py, key_change_sets): it checks ``sgc.isdigit()``, so Arabic-Indic or full-width
    digits pass and are silently read by ``int()`` as SGC 123456, and "12345²" escapes as a ValueError.
    """
    wrong = {}
    for sgc in ("\u0661\u0662\u0663\u0664\u0665\u0666", "12345\u00b2", "\uff11\uff12\uff13\uff14\uff15\uff16"):
        assert single_error(128, sgc=sgc) is FormatError
        try:
            bulk.key_change_sets([5], OLD, EA.STA, 1, key_bits=128, **{**GOOD, "sgc": sgc})
            wrong[sgc] = "accepted"
        except FormatError:
            pass
        except Exception as exc:
            wrong[sgc] = f"{type(exc).__name__}: {exc}"
    assert not wrong, f"bulk.key_change_sets did not refuse these SGCs with a FormatError: {wrong}"


def test_fields_the_single_path_refuses_are_refused_in_bulk() -> None:
    """KRN is 1..9 and TI 0..99 (SPEC.md §1.3, check_key_params); they fit their 4 and 8 bits beyond that.

    BUG (src/mita/sts/bulk/keys.py, key_change_sets): only the bit widths are checked, so a set the single path
    refuses (KRN 0 or 10..15, TI 100..255) is made in bulk.
    """
    made = []
    for bits in (64, 128):
        for change in ({"krn": 0}, {"krn": 10}, {"krn": 15}, {"ti": 100}, {"ti": 255}):
            assert single_error(bits, **change) is RangeError
            if bulk_error(bits, **change) is not RangeError:
                made.append((bits, change))
    assert not made, f"bulk.key_change_sets made sets the single path refuses (key bits, field): {made}"


@pytest.mark.parametrize(("bits", "new"), [(64, 1 << 64), (64, -1)])
def test_a_new_64_bit_key_too_wide_is_refused(bits: int, new: int) -> None:
    assert single_error(bits, new=new) is RangeError
    assert bulk_error(bits, new=new) in (RangeError, FormatError)


def test_a_new_128_bit_key_too_wide_is_refused() -> None:
    """BUG (src/mita/sts/bulk/keys.py, _key_words): a 128-bit key out of range escapes as OverflowError."""
    untyped = {}
    for new in (1 << 128, -1):
        assert single_error(128, new=new) is RangeError
        try:
            bulk.key_change_sets([new], OLD, EA.STA, 1, key_bits=128, **GOOD)
            untyped[new] = "accepted"
        except (RangeError, FormatError):
            pass
        except Exception as exc:
            untyped[new] = f"{type(exc).__name__}: {exc}"
    assert not untyped, f"out-of-range 128-bit keys not refused with a typed error: {untyped}"


def test_the_key_size_is_64_or_128_bits() -> None:
    assert bulk_error(96) is FormatError
    assert single_error(96) is FormatError


def test_keys_and_meters_must_agree_in_number() -> None:
    with pytest.raises(FormatError):
        bulk.key_change_sets([1, 2, 3], [OLD, OLD], EA.STA, 3, key_bits=64, **GOOD)


def test_per_meter_arrays_of_the_wrong_length_are_a_format_error() -> None:
    """BUG (src/mita/sts/bulk, layout_data and _key_words): a per-meter TI array, or a list of 128-bit
    new keys, of the wrong length escapes as NumPy's ValueError instead of a FormatError (as the old keys do)."""
    untyped = []
    for bits, new, ti in ((64, [1, 2, 3], [1, 2]), (128, [1, 2, 3], [1, 2]), (128, [1, 2], 1)):
        try:
            bulk.key_change_sets(new, OLD, EA.STA, 3, key_bits=bits, **{**GOOD, "ti": ti})
            untyped.append((bits, len(new), ti, "accepted"))
        except FormatError:
            pass
        except Exception as exc:
            untyped.append((bits, len(new), ti, type(exc).__name__))
    assert not untyped, f"(key bits, new keys, ti, error) for 3 meters, not a FormatError: {untyped}"


# ---------------------------------------------------------------- layout_data


def field_values(token_type: type[sts.Token]) -> st.SearchStrategy[dict[str, int]]:
    return st.fixed_dictionaries({name: st.integers(0, (1 << width) - 1) for name, _, width, _ in token_type.LAYOUT})


@PROPS
@given(data=st.data(), token_type=st.sampled_from(KEY_CHANGE_TYPES), n=st.integers(1, 5))
def test_layout_data_is_data_bits(data: st.DataObject, token_type: type[sts.Token], n: int) -> None:
    rows = [data.draw(field_values(token_type)) for _ in range(n)]
    names = [name for name, *_ in token_type.LAYOUT]
    scalar = data.draw(st.sampled_from([*names, None]))  # one field given once for all tokens
    fields: dict[str, Any] = {name: [r[name] for r in rows] for name in names}
    if scalar is not None:
        for r in rows:
            r[scalar] = rows[0][scalar]
        fields[scalar] = rows[0][scalar]
    got = bulk.layout_data(token_type, n, **fields)
    assert got.dtype == np.uint64 and got.shape == (n,)
    assert [int(x) for x in got] == [token_type(**r).data_bits() for r in rows]


@PROPS
@given(data=st.data(), token_type=st.sampled_from(KEY_CHANGE_TYPES))
def test_layout_data_leaves_fields_not_given_zero(data: st.DataObject, token_type: type[sts.Token]) -> None:
    values = data.draw(field_values(token_type))
    given_names = data.draw(st.sets(st.sampled_from(sorted(values))))
    got = int(bulk.layout_data(token_type, 1, **{k: values[k] for k in given_names})[0])
    assert got == token_type(**{k: (v if k in given_names else 0) for k, v in values.items()}).data_bits()


@pytest.mark.parametrize("token_type", KEY_CHANGE_TYPES, ids=lambda t: t.__name__)
def test_layout_data_range_checks_each_field(token_type: type[sts.Token]) -> None:
    zero = {name: 0 for name, *_ in token_type.LAYOUT}
    for name, _, width, _ in token_type.LAYOUT:
        for bad in (1 << width, -1):
            with pytest.raises(RangeError):
                token_type(**{**zero, name: bad}).data_bits()
            with pytest.raises(RangeError, match=name):
                bulk.layout_data(token_type, 2, **{name: [0, bad]})


def test_layout_data_encodes_amount_and_currency_fields_as_the_single_path() -> None:
    """Every codec of the layout table, class 0 credit included: amounts are base units, rounded up."""
    amounts = [0, 1, 16383, 16384, 180215, 180224, sts.amount.MAX_UNITS]
    got = bulk.layout_data(sts.TransferCredit, len(amounts), tid=7, amount=amounts, rnd=3)
    assert [int(x) for x in got] == [sts.TransferCredit(7, a, 3).data_bits() for a in amounts]
    got = bulk.layout_data(sts.SetMaximumPowerLimit, len(amounts), mpl=amounts)
    assert [int(x) for x in got] == [sts.SetMaximumPowerLimit(0, a).data_bits() for a in amounts]
    currency = [0, 1, 16383, 16384, 10**9 + 1, 10**15, M64]
    for negative in (0, 1):
        got = bulk.layout_data(sts.CurrencyCredit, len(currency), tid=9, amount=currency, negative=negative)
        assert [int(x) for x in got] == [sts.CurrencyCredit(9, a, bool(negative)).data_bits() for a in currency]


@pytest.mark.parametrize(
    ("token_type", "field", "bad"),
    [
        (sts.TransferCredit, "amount", -1),
        (sts.TransferCredit, "amount", sts.amount.MAX_UNITS + 1),
        (sts.SetMaximumPhasePowerUnbalanceLimit, "mppul", sts.amount.MAX_UNITS + 1),
        (sts.CurrencyCredit, "amount", -1),
        (sts.CurrencyCredit, "amount", 1 << 64),  # the single path takes it; the 64-bit arrays cannot
        (sts.CurrencyCredit, "negative", 2),
    ],
)
def test_layout_data_range_checks_amount_fields(token_type: type[sts.Token], field: str, bad: int) -> None:
    with pytest.raises(RangeError, match=field):
        bulk.layout_data(token_type, 2, **{field: [0, bad]})


def test_layout_data_refuses_a_field_its_type_does_not_have() -> None:
    """A misspelt field (``nkh0=`` for ``nkho=``) must not silently become zero bits.

    BUG (src/mita/sts/bulk/layout.py, layout_data): names not in the LAYOUT are ignored, so a typo in a caller
    yields tokens that install a wrong key, with no error anywhere.
    """
    ignored = []
    for token_type in KEY_CHANGE_TYPES:
        try:
            bulk.layout_data(token_type, 1, nkh0=[1])
            ignored.append(token_type.__name__)
        except (FormatError, UnsupportedError, TypeError):
            pass
    assert not ignored, f"layout_data ignored the unknown field nkh0= for {ignored}"


# ---------------------------------------------------------------- conformance vectors, through the bulk path


def _complete_groups() -> list[Any]:
    return [pytest.param(g, id=g["id"]) for g in key_change_groups() if g["complete"]]


@pytest.mark.parametrize("group", vector_params(_complete_groups))
def test_bulk_reproduces_the_key_change_vectors(group: dict[str, Any]) -> None:
    f, ea = group["fields"], group["ea"]
    bits = 128 if {8, 9} <= set(group["sections"]) else 64
    assert f.get("res", 0) == 0  # the bulk path always sets RES = 0, as every vector does
    if bits == 128:
        key = f["nkho"] << 96 | f["nkmo2"] << 64 | f["nkmo1"] << 32 | f["nklo"]
        sgc: str | None = f"{f['sgcho'] << 12 | f['sgclo']:06d}"
    else:
        key, sgc = f["nkho"] << 32 | f["nklo"], None
    sets = bulk.key_change_sets(
        [key], [int(group["old_key"], 16)], ea, 1, key_bits=bits, ken=f["kenho"] << 4 | f["kenlo"], krn=f["krn"],
        kt=f["kt"], ti=f["ti"], ro=f["ro"], sgc=sgc,
    )  # fmt: skip
    expected = [group["sections"][sub]["token"] for sub in SUB_ORDER[bits]]
    assert as_str(sets)[0] == expected
