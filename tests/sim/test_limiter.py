"""The limiter (IC 71, 0.0.17.0.0.255) over the model's power limit, through dlms-cosem 21.3.2; and the SET path of
gurux, which needs bug 8's shim (mita.sim.shims; its canary is in test_shims.py)."""

from __future__ import annotations

import pytest
from dlms_cosem import dlms_data
from dlms_cosem import enumerations as en

from mita import sts
from mita.sim import carrier
from mita.sim.objects import MAX_WATTS

from .cosem_calls import (
    ACTIVE_POWER,
    CLOCK,
    DISCONNECTOR_LOG,
    IC,
    LIMITER,
    STANDARD_LOG,
    date_time,
    enter,
    get,
    rows,
    session,
    set_,
    status_code,
)
from .sim_fixtures import KEY, SECRET, T0, Sim

OK, DENIED, UNMATCHED = en.DataAccessResult.SUCCESS, en.DataAccessResult.READ_WRITE_DENIED, en.DataAccessResult(12)
THRESHOLD_CHANGED = 67


def watts(value: int) -> bytes:
    return dlms_data.DoubleLongUnsignedData(value).to_bytes()


def thresholds(client: object) -> tuple[int, int]:
    return get(client, IC.LIMITER, LIMITER, 3), get(client, IC.LIMITER, LIMITER, 4)  # type: ignore[arg-type]


def test_the_limiter_monitors_active_power_and_shows_no_limit_as_zero(sim: Sim) -> None:
    with session(sim.port) as c:
        assert get(c, IC.LIMITER, LIMITER, 2) == [3, bytearray(bytes([1, 0, 1, 7, 0, 255])), 2]
        assert thresholds(c) == (0, 0)
        assert get(c, IC.LIMITER, LIMITER, 7) == 60  # min under-threshold duration: the profile's trip reconnect
        assert get(c, IC.LIMITER, LIMITER, 10) is False  # no emergency profile active
        assert get(c, IC.REGISTER, ACTIVE_POWER, 2) == 0  # the model has no present load
        assert list(get(c, IC.REGISTER, ACTIVE_POWER, 3)) == [0, 27]  # 10^0 W


def test_a_power_limit_token_entered_remotely_is_the_limiters_threshold(sim: Sim) -> None:
    token = sts.encode(sts.SetMaximumPowerLimit(sts.tid_from_datetime(T0), 5000), sts.EA.STA, KEY)
    with session(sim.port, SECRET) as c:
        enter(c, carrier.pack(token))
        assert status_code(c) == 3
        assert thresholds(c) == (5000, 5000)
        assert rows(c, DISCONNECTOR_LOG)[-1][1] == THRESHOLD_CHANGED


def test_the_management_client_sets_the_power_limit_without_a_token(sim: Sim) -> None:
    with session(sim.port, SECRET) as c:
        assert set_(c, IC.LIMITER, LIMITER, 4, watts(3500)) == OK
        assert thresholds(c) == (3500, 3500)
        assert sim.load().state.mpl == 3500  # the model's limit, saved in the meter file
        assert rows(c, DISCONNECTOR_LOG)[-1][1] == THRESHOLD_CHANGED
        assert set_(c, IC.LIMITER, LIMITER, 4, watts(0)) == OK  # 0: no limit
        assert thresholds(c) == (0, 0)
    assert sim.load().state.mpl is None


def test_the_public_client_cannot_set_the_limit(sim: Sim) -> None:
    with session(sim.port) as c:
        assert set_(c, IC.LIMITER, LIMITER, 4, watts(100)) == DENIED
        assert thresholds(c) == (0, 0)
    assert sim.load().state.mpl is None


@pytest.mark.parametrize(
    ("interface", "obis", "index", "data"),
    [
        (IC.LIMITER, LIMITER, 3, watts(100)),  # threshold_active follows threshold_normal: not set directly
        (IC.LIMITER, LIMITER, 6, watts(100)),
        (IC.REGISTER, ACTIVE_POWER, 2, watts(100)),
        (IC.CREDIT, "0.0.19.10.0.255", 2, dlms_data.DoubleLongData(10**6).to_bytes()),
        (IC.PROFILE_GENERIC, STANDARD_LOG, 2, bytes([0x01, 0x00])),
    ],
)
def test_every_other_set_is_refused_even_to_the_management_client(
    sim: Sim, interface: en.CosemInterface, obis: str, index: int, data: bytes
) -> None:
    with session(sim.port, SECRET) as c:
        assert set_(c, interface, obis, index, data) == DENIED
        assert thresholds(c) == (0, 0)
    assert sim.load().registers() == {}


@pytest.mark.parametrize(
    "data", [dlms_data.OctetStringData(b"1000").to_bytes(), dlms_data.DoubleLongData(-5).to_bytes()]
)
def test_a_limit_that_is_not_a_number_of_watts_is_a_type_mismatch(sim: Sim, data: bytes) -> None:
    with session(sim.port, SECRET) as c:
        assert set_(c, IC.LIMITER, LIMITER, 4, data) == UNMATCHED
    assert sim.load().state.mpl is None


def test_the_limit_shown_is_capped_at_the_attributes_range(sim: Sim) -> None:
    sim.call(lambda: setattr(sim.objects.meter.state, "mpl", 2**40))
    with session(sim.port) as c:
        assert thresholds(c) == (MAX_WATTS, MAX_WATTS)


def test_the_management_client_sets_the_clock_and_the_standard_log_shows_both_times(sim: Sim) -> None:
    new = (2024, 5, 6, 7, 8, 9)
    raw = bytes([*(2024).to_bytes(2, "big"), 5, 6, 0xFF, 7, 8, 9, 0, 0x80, 0, 0xFF])
    with session(sim.port, SECRET) as c:
        assert set_(c, IC.CLOCK, CLOCK, 2, dlms_data.OctetStringData(raw).to_bytes()) == OK
        assert date_time(get(c, IC.CLOCK, CLOCK, 2)) == new
        old_row, new_row = rows(c, STANDARD_LOG)[-2:]
    assert (old_row[1], new_row[1]) == (4, 5)  # clock adjusted: old, new
    assert date_time(old_row[0]) == (2024, 3, 1, 12, 0, 0) and date_time(new_row[0]) == new
    with session(sim.port) as c:  # the offset stays while the sim runs; the public client cannot set it
        assert set_(c, IC.CLOCK, CLOCK, 2, dlms_data.OctetStringData(raw).to_bytes()) == DENIED
        assert date_time(get(c, IC.CLOCK, CLOCK, 2)) == new


def test_an_unspecified_clock_is_refused(sim: Sim) -> None:
    raw = bytes([0xFF, 0xFF, 5, 6, 0xFF, 7, 8, 9, 0, 0x80, 0, 0xFF])
    with session(sim.port, SECRET) as c:
        assert set_(c, IC.CLOCK, CLOCK, 2, dlms_data.OctetStringData(raw).to_bytes()) == UNMATCHED


def test_the_object_list_carries_no_access_rights(sim: Sim) -> None:
    """gurux builds the rights from ``e.server``, which its ValueEventArgs never sets: every entry's rights are two
    empty arrays, so a client cannot learn from the list what it may write (docs/notes/dlms-sim.md)."""
    with session(sim.port, SECRET) as c:
        objects = get(c, IC.ASSOCIATION_LN, "0.0.40.0.0.255", 2)
    (limiter,) = [entry for entry in objects if entry[0] == 71]
    assert limiter[3] == [[], []]
