"""The recipes (mita.sts.recipes): one list of key change rules, read in Python and in SQL with the same result,
and one way to make a key change set, whoever asks (the vending service, a campaign, ``mita token batch``)."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert, literal, select

from mita import sts
from mita.cli.token_ops import handle
from mita.sts import recipes
from mita.sts.recipes import KEY_CHANGE_RULES, KeyConfig, RecipeError, check_key_change

configs = st.builds(
    KeyConfig,
    sgc=st.sampled_from(["123456", "600001"]),
    krn=st.integers(1, 3),
    kt=st.integers(0, 3),
    ti=st.integers(1, 2),
    ea=st.sampled_from([7, 11]),
    base_date=st.sampled_from([1993, 2014, 2035]),
    ken=st.sampled_from([200, 255]),
)


def python_verdicts(old: KeyConfig, new: KeyConfig, dkga: int) -> list[bool]:
    return [bool(rule.broken(old, new, dkga)) for rule in KEY_CHANGE_RULES]


@settings(max_examples=60, deadline=None)
@given(olds=st.lists(configs, min_size=1, max_size=12), target=configs, dkga=st.sampled_from([2, 4]))
def test_each_rule_reads_the_same_over_values_and_over_sql_columns(
    olds: list[KeyConfig], target: KeyConfig, dkga: int
) -> None:
    """A campaign's plan check (SQL over many meters) agrees with the one-meter check (Python), rule by rule."""
    meters = Table(
        "meters", MetaData(), Column("id", Integer, primary_key=True), Column("sgc", String(6)),
        *(Column(f, Integer) for f in ("krn", "kt", "ti", "ea", "base_date", "ken")),
    )  # fmt: skip
    engine = create_engine("sqlite://")
    meters.create(engine)
    with engine.begin() as conn:
        conn.execute(insert(meters), [{"id": i, **o.as_dict()} for i, o in enumerate(olds)])
        m = meters.c
        old = SimpleNamespace(**{f: getattr(m, f) for f in KeyConfig.__dataclass_fields__})
        new = SimpleNamespace(**{f: literal(v) for f, v in target.as_dict().items()})  # SQL on both sides
        for rule in KEY_CHANGE_RULES:
            hits = set(conn.execute(select(m.id).where(rule.broken(old, new, dkga))).scalars())
            expected = {i for i, o in enumerate(olds) if rule.broken(o, target, dkga)}
            assert hits == expected, (rule.message, target, dkga)
    engine.dispose()


@given(old=configs, new=configs, dkga=st.sampled_from([2, 4]))
def test_check_key_change_refuses_exactly_what_a_rule_breaks(old: KeyConfig, new: KeyConfig, dkga: int) -> None:
    broken = [rule for rule, verdict in zip(KEY_CHANGE_RULES, python_verdicts(old, new, dkga), strict=True) if verdict]
    try:
        check_key_change(old, new, dkga)
    except RecipeError as exc:
        assert old == new or exc.code == broken[0].code
    else:
        assert not broken and old != new


OLD = KeyConfig("123456", 1, 2, 1, 7, 2014, 255)


def test_a_4_token_set_for_an_ea07_meter_starts_with_its_3rd_and_4th_sections() -> None:
    new = KeyConfig("123456", 2, 2, 1, 11, 2014, 255)
    old_key, new_key = 0x0123456789ABCDEF, 0x00112233445566778899AABBCCDDEEFF
    made = recipes.key_change_tokens(OLD, new, old_key, new_key)
    assert [s.subclass for s, _ in made] == [8, 9, 3, 4]
    batch = handle({"op": "key_change", "ea": 7, "decoder_key": f"{old_key:016x}", "new_key": f"{new_key:032x}",
                    "ken": 255, "krn": 2, "kt": 2, "ti": 1, "sgc": "123456"})  # fmt: skip
    assert batch == {"tokens": [digits for _, digits in made]}  # the command line makes the same set, same order
    bulk = recipes.key_change_sets(OLD, new, [old_key] * 3, [new_key] * 3, 3)
    assert [[str(d) for d in row] for row in bulk.astype(str)] == [[d for _, d in made]] * 3


def test_a_2_token_set_in_natural_order_and_a_rollover_sets_ro() -> None:
    for new in (KeyConfig("123456", 2, 2, 1, 7, 2014, 255), KeyConfig("123456", 2, 2, 1, 7, 2035, 255)):
        made = recipes.key_change_tokens(OLD, new, 1, 2)
        assert [s.subclass for s, _ in made] == [3, 4]
        first = sts.decode(made[0][1], sts.EA.STA, 1)
        assert isinstance(first, sts.Set1stSectionDecoderKey) and first.ro == int(new.base_date != OLD.base_date)


def test_engineering_tokens_from_one_table() -> None:
    for kind, value in itertools.product(recipes.ENGINEERING, (None, 5000)):
        needs_value = kind in ("set_power_limit", "set_phase_unbalance_limit", "set_tariff_rate")
        if needs_value and value is None:
            with pytest.raises(RecipeError) as refused:
                recipes.engineering_token(kind, 7, value, 3)
            assert refused.value.code == "invalid_request"
            continue
        token = recipes.engineering_token(kind, 7, value, 3)
        assert getattr(token, "tid", None) == (7 if recipes.engineering_needs_tid(kind) else None)
    try:
        recipes.engineering_token("unlock", 7, None, 3)
    except RecipeError as exc:
        assert exc.code == "invalid_kind"
    else:
        raise AssertionError("an unknown kind was made")
