"""The service's bounds on money and tariffs (mita.vend.bounds), whoever calls it: typed errors, nothing stored."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine
from test_vend_service import engine, pg_template, sqlite_template  # noqa: F401 - the per-database fixtures

from mita.vend import bounds, registry
from vend_fixtures import TARIFF_SPEC, World, build_world, refused

FROM = dt.datetime(2030, 1, 1)


@pytest.fixture
def w(engine: Engine) -> World:  # noqa: F811 - the imported fixture
    return build_world(engine)


OUT_OF_BOUNDS: list[tuple[dict[str, Any], str]] = [
    ({"vat_rate": "1.10"}, "invalid_vat_rate"),  # 110 %: accepted before this check
    ({"vat_rate": "-0.01"}, "invalid_vat_rate"),
    ({"vat_rate": "NaN"}, "invalid_vat_rate"),
    ({"vat_rate": "fifteen"}, "invalid_vat_rate"),
    ({"fixed_monthly": -1}, "invalid_amount"),
    ({"fixed_monthly": 10**15 + 1}, "invalid_amount"),
    ({"fixed_monthly": True}, "invalid_amount"),
    ({"fixed_monthly": "2000"}, "invalid_amount"),
    ({"fbe_kwh": "-1"}, "invalid_tariff"),
    ({"fbe_kwh": "1000000001"}, "invalid_tariff"),
    ({"minor_units": 0}, "invalid_tariff"),
    ({"blocks": [{"up_to": None, "price": "0"}]}, "invalid_tariff"),
    ({"blocks": [{"up_to": None, "price": "1000001"}]}, "invalid_tariff"),
    ({"blocks": [{"up_to": "0", "price": "1"}, {"up_to": None, "price": "2"}]}, "invalid_tariff"),
    ({"blocks": [{"up_to": "Infinity", "price": "1"}, {"up_to": None, "price": "2"}]}, "invalid_tariff"),
    ({"blocks": []}, "invalid_tariff"),
]


def test_a_tariff_out_of_bounds_is_refused(w: World) -> None:
    reg = w.svc.registry
    for change, code in OUT_OF_BOUNDS:
        spec = {**TARIFF_SPEC, **change}
        refused(code, reg.create_tariff, w.admin, name="bad", currency="ZAR", spec=spec, effective_from=FROM)
        refused(code, reg.add_tariff_version, w.admin, "domestic", spec, FROM)
    refused("not_found", registry.get_tariff, w.engine, "bad")  # nothing was stored
    assert len(registry.get_tariff(w.engine, "domestic")["versions"]) == 1


def test_the_bounds_themselves_are_accepted(w: World) -> None:
    spec = {**TARIFF_SPEC, "vat_rate": "1", "fixed_monthly": 10**15, "fbe_kwh": "0", "minor_units": 10**6,
            "blocks": [{"up_to": "1000000000", "price": "1000000"}, {"up_to": None, "price": "0.0001"}]}  # fmt: skip
    out = w.svc.registry.create_tariff(w.admin, name="edges", currency="ZAR", spec=spec, effective_from=FROM)
    assert out["versions"][0]["spec"]["vat_rate"] == "1"
    assert bounds.vat_rate("0") == 0 and bounds.vat_rate(0.15) == bounds.vat_rate("0.15")


def test_money_on_vendors_and_customers(w: World) -> None:
    reg = w.svc.registry
    for bad in (-1, 10**15 + 1, True, 1.5):
        refused("invalid_amount", reg.create_vendor, w.admin, "Shop", bad)
        refused("invalid_amount", reg.create_customer, w.admin, account="X-1", name="X", debt=bad)
    assert reg.create_vendor(w.admin, "Big shop", 10**15)["credit_limit"] == 10**15
    for rate in ("1.01", "-0.1", "NaN", "x"):
        refused("invalid_debt_rate", reg.create_customer, w.admin, account="X-2", name="X", debt_rate=rate)
    assert reg.create_customer(w.admin, account="X-3", name="X", debt=10**15, debt_rate="1")["debt"] == 10**15
