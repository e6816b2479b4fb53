"""Small things every vend makes, made the quick way and held to the slow way: its id (a version 4 UUID), its
tokens' RND, its quantities, its month and its time with the utility's offset (``with_offset``, which remembers
the last second's offset)."""

from __future__ import annotations

import datetime as dt
import os
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import zone_kept
from mita.vend.answers import month_of, new_vend_id, quantity, random_rnd
from mita.vend.walltime import with_offset

# zones with daylight saving (an hour, and Lord Howe's half hour), without it, and a past with odd offsets
ZONES = ["Europe/London", "Australia/Lord_Howe", "America/Sao_Paulo", "Africa/Johannesburg", "Africa/Monrovia", "UTC"]


@given(st.binary(min_size=16, max_size=16))
def test_a_vend_id_is_the_uuid_module_s_version_4_text(raw: bytes) -> None:
    assert new_vend_id(raw) == str(uuid.UUID(bytes=raw, version=4))


def test_vend_ids_are_random_version_4_uuids() -> None:
    ids = {new_vend_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(uuid.UUID(i).version == 4 and uuid.UUID(i).variant == uuid.RFC_4122 for i in ids)


@given(st.one_of(st.integers(min_value=0, max_value=10**8), st.integers()))
def test_a_quantity_is_decimal_s_text(units: int) -> None:
    assert quantity(units) == str(Decimal(units) / 10)


def test_rnds_are_4_bit_and_all_come() -> None:
    drawn = [random_rnd() for _ in range(2000)]
    assert set(drawn) == set(range(16))


@given(st.datetimes(min_value=dt.datetime(1000, 1, 1)))
def test_a_month_is_strftime_s(at: dt.datetime) -> None:
    assert month_of(at) == f"{at:%Y-%m}"


@pytest.fixture
def zone_restored() -> Iterator[None]:
    with zone_kept():
        yield


def _in(zone: str) -> None:
    os.environ["TZ"] = zone
    time.tzset()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    zones=st.lists(st.sampled_from(ZONES), min_size=1, max_size=3),
    at=st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2100, 1, 1)),
    fold=st.sampled_from([0, 1]),
    steps=st.lists(st.integers(min_value=-7200, max_value=7200), max_size=4),
)
def test_the_offset_is_astimezone_s_whatever_was_asked_before(
    zone_restored: None, zones: list[str], at: dt.datetime, fold: int, steps: list[int]
) -> None:
    """Each zone in turn (the remembered second belongs to the zone it was asked in), times around ``at`` (around a
    change of offset too), both folds of a repeated hour."""
    for zone in zones:
        _in(zone)
        for step in [0, 0, *steps]:
            t = (at + dt.timedelta(seconds=step)).replace(fold=fold)
            assert with_offset(t) == t.astimezone().isoformat()


@pytest.mark.parametrize(
    ("zone", "at", "fold", "expected"),
    [
        ("Europe/London", dt.datetime(2026, 10, 25, 1, 30), 0, "2026-10-25T01:30:00+01:00"),  # the hour, twice
        ("Europe/London", dt.datetime(2026, 10, 25, 1, 30), 1, "2026-10-25T01:30:00+00:00"),
        ("Australia/Lord_Howe", dt.datetime(2026, 4, 5, 1, 45), 0, "2026-04-05T01:45:00+11:00"),
        ("Australia/Lord_Howe", dt.datetime(2026, 4, 5, 1, 45), 1, "2026-04-05T01:45:00+10:30"),
        ("Africa/Johannesburg", dt.datetime(2026, 12, 5, 9, 0, 0, 250), 0, "2026-12-05T09:00:00.000250+02:00"),
    ],
)
def test_repeated_hours_and_half_hours(
    zone_restored: None, zone: str, at: dt.datetime, fold: int, expected: str
) -> None:
    _in(zone)
    assert with_offset(at.replace(fold=fold)) == expected
    assert with_offset(at.replace(fold=1 - fold)) == at.replace(fold=1 - fold).astimezone().isoformat()
    assert with_offset(at.replace(fold=fold)) == expected  # asked again, after the other fold


def test_a_time_with_a_zone_keeps_it() -> None:
    at = dt.datetime(2026, 3, 10, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=3)))
    assert with_offset(at) == "2026-03-10T09:30:00+03:00"
