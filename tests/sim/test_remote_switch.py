"""The meter model's remote switch (Meter.remote_switch), the disconnect control's backing: supply stops and stays
off until a reconnect; a reconnect does not override the meter's own reasons."""

from __future__ import annotations

import datetime as dt

from mita import sts

from .sim_fixtures import KEY, T0, make_meter


def test_a_remote_disconnect_stops_the_supply_until_a_reconnect() -> None:
    meter = make_meter()
    token = sts.encode(
        sts.TransferCredit(sts.tid_from_datetime(T0), 100, 5, sts.CreditKind.ELECTRICITY), sts.EA.STA, KEY
    )
    assert meter.enter(token, T0).result.value == "accept"
    assert meter.remote_switch(False, T0) is False
    ran = meter.run(60, 1000, T0)
    assert ran.consumed == 0 and "remote disconnect" in ran.events[0]
    assert meter.remote_switch(True, T0 + dt.timedelta(minutes=1)) is True
    assert meter.run(60, 1000).consumed == 60 * 1000


def test_a_reconnect_without_credit_leaves_the_switch_open() -> None:
    meter = make_meter()
    assert meter.remote_switch(True, T0) is False
    assert meter.status(T0)["open_reasons"] == ["no credit"]
