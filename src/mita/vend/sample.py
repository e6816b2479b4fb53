"""A sample utility, for the demo and the benchmarks: one supply group and an inclining-block tariff.

The vending key is the STS 531 compliance suites' published test key: never a real utility's.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Engine

from mita import sts

from . import registry

TEST_VENDING_KEY = "abababababababab"
SGC = "123456"
DOMESTIC_TARIFF: dict[str, Any] = {
    "blocks": [
        {"up_to": "50", "price": "1.10"},
        {"up_to": "350", "price": "2.00"},
        {"up_to": None, "price": "3.15"},
    ],
    "vat_rate": "0.15",
    "fixed_monthly": 2000,
    "fbe_kwh": "50",
}


def meter_number(body: str) -> str:
    """A DRN from its manufacturer code and serial, with the Luhn check digit appended."""
    return body + str(sts.luhn_digit(body))


def create_group_and_tariff(engine: Engine, name: str) -> None:
    """Supply group ``SGC`` (DKGA02, EA07, base date 2014) and the tariff ``domestic``."""
    registry.Registry(engine).create_supply_group(
        registry.SYSTEM, sgc=SGC, name=name, vending_key=TEST_VENDING_KEY, base_date=2014
    )
    registry.Registry(engine).create_tariff(
        registry.SYSTEM,
        name="domestic",
        currency="ZAR",
        spec=DOMESTIC_TARIFF,
        effective_from=dt.datetime(2020, 1, 1),
    )
