"""Answers of the staff's routes: lists of vends and API keys, a revoked key, imports and the sales report.

Like :mod:`.models`, allow-lists with every field described (with its unit) and examples that are real answers.
Times are RFC 3339 with the utility's offset (:func:`mita.vend.walltime.with_offset`); money is in minor units
of the tariff's currency; units are token base units (0.1 kWh, or 0.1 m³ for water and gas meters).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Query
from pydantic import AwareDatetime, BaseModel, Field

from . import models as m

Time = Annotated[
    str,
    Field(
        description="RFC 3339 time with the utility's offset",
        examples=["2026-03-10T09:30:00+02:00"],
        json_schema_extra={"format": "date-time"},
    ),
]
MinorUnits = Annotated[int, Field(description="minor units of the tariff's currency (cents)", examples=[5000])]
BaseUnits = Annotated[int, Field(description="token base units: 0.1 kWh (0.1 m³ for water and gas)", examples=[245])]
Count = Annotated[int, Field(ge=0, description="how many", examples=[3])]
VendKind = Literal["purchase", "engineering", "key_change"]
VendStatus = Literal["completed", "reversed"]

# query parameters
#: The keyset cursor of a page of vends (opaque text, as the previous page's ``next`` gave it).
Cursor = Annotated[str | None, Query(max_length=200, description="the `next` cursor of the previous page, unchanged")]
Since = Annotated[
    AwareDatetime | None,
    Query(description="from this time on, included (RFC 3339 with offset)", examples=["2026-03-10T00:00:00+02:00"]),
]
Until = Annotated[
    AwareDatetime | None,
    Query(description="up to this time, excluded (RFC 3339 with offset)", examples=["2026-03-11T00:00:00+02:00"]),
]


# ---------------------------------------------------------------------- vends


class VendItem(BaseModel):
    """One vend in a list: a purchase, an engineering token or a key change, with its tokens."""

    id: str = Field(description="the vend's UUID", examples=["5b0c7d36-1f1e-4d7c-9a53-2f0f4c1f9d2e"])
    kind: VendKind = Field(description="purchase (credit sold), engineering (an operator's token) or key_change")
    status: VendStatus = Field(description="completed, or reversed (a purchase undone: see reversed_at)")
    meter: str = Field(description="meter number (DRN)", examples=["47500150231"])
    utility: str = Field(description="what the meter measures: electricity, water or gas", examples=["electricity"])
    customer: str | None = Field(description="the customer's account when the vend was made; null: none")
    vendor_id: int | None = Field(description="the vendor that sold it; null: sold or sent by the utility's staff")
    api_key_id: int | None = Field(description="the API key that made it; null: the system itself (CLI, demo)")
    amount: MinorUnits = Field(description="paid, in minor units of the tariff's currency (0 for tokens not sold)")
    units: BaseUnits = Field(description="credit issued, in token base units (0.1 kWh or 0.1 m³), free units included")
    currency: str | None = Field(description="ISO 4217 currency of amount (purchases only)", examples=["ZAR"])
    created_at: Time = Field(description="when it was made: RFC 3339 with the utility's offset")
    reversed_at: Time | None = Field(description="when it was reversed (RFC 3339); null: not reversed")
    tokens: list[m.TokenOut] = Field(description="its tokens, in the order they are entered")
    receipt: dict[str, Any] = Field(
        description="a purchase's itemised receipt (as in POST /v1/vends); {engineering, value} for an engineering "
        "token; {key_change: {from, to}} for a key change"
    )
    delivery: m.RemoteDelivery | None = Field(
        description="a connected meter's: how the tokens went to it; null: keypad only (the receipt is the delivery)"
    )


class VendPage(BaseModel):
    """A page of vends, newest first."""

    items: list[VendItem] = Field(description="the vends of this page, newest first")
    next: str | None = Field(
        description="pass as ?after= for the next (older) page, unchanged; null on the last page",
        examples=["MjAyNi0wMy0xMFQwOTozMTowMHxhNzg3YWRmOA"],
    )


# ---------------------------------------------------------------------- API keys


class ApiKeyOut(BaseModel):
    """An API key as the admin sees it: never the key itself, nor its hash."""

    id: int = Field(description="the key's id", examples=[3])
    name: str = Field(description="who or what uses it", examples=["shop till"])
    role: Literal["admin", "operator", "vendor"] = Field(description="what it may do: admin, operator or vendor")
    vendor_id: int | None = Field(description="the vendor a vendor key sells for; null for other roles")
    created_at: Time = Field(description="when the key was made: RFC 3339 with the utility's offset")
    revoked_at: Time | None = Field(description="when it was revoked (RFC 3339); null: it works")
    last4: str | None = Field(
        description="the key's last four characters, to tell keys apart; null for keys made before they were kept",
        examples=["x9Qa"],
    )


class ApiKeyPage(BaseModel):
    """A page of API keys, in id order."""

    items: list[ApiKeyOut] = Field(description="the keys of this page, revoked ones included")
    next: int | None = Field(description="pass as ?after= for the next page; null on the last page", examples=[50])


class RevokedKeyOut(ApiKeyOut):
    """The key after its revocation."""

    revoked_self: bool = Field(
        description="true when the key revoked itself: this was its last request, every later one is a 401"
    )
    already_revoked: bool = Field(description="true when it had been revoked before (nothing changed)")


# ---------------------------------------------------------------------- imports


class ImportOut(BaseModel):
    """Every row was imported."""

    imported: Count = Field(description="rows imported (customers or meters created)")
    entity: Literal["customers", "meters"] = Field(description="what was created")


# ---------------------------------------------------------------------- the sales report


class SalesFigures(BaseModel):
    vends: Count = Field(description="purchases sold in the period")
    reversals: Count = Field(description="purchases reversed in the period (whenever they were sold)")
    amount: int = Field(description="net paid: sales minus reversals, minor units of the currency", examples=[12000])
    vat: int = Field(description="net VAT in amount: sales minus reversals, minor units", examples=[1565])
    units: int = Field(description="net credit issued, token base units (0.1 kWh or 0.1 m³), free units included")
    fbe_units: int = Field(description="net free basic electricity issued, token base units (0.1 kWh)")


class SalesRow(SalesFigures):
    """One vendor's sales under one tariff."""

    vendor_id: int | None = Field(description="the vendor; null: sold with a staff key (direct)")
    vendor: str | None = Field(description="the vendor's name; null: direct", examples=["Corner shop"])
    tariff: str | None = Field(description="the meters' tariff", examples=["domestic"])
    currency: str | None = Field(description="ISO 4217 currency of the money figures", examples=["ZAR"])
    sales_amount: MinorUnits = Field(description="paid in the purchases sold in the period, minor units")
    reversed_amount: MinorUnits = Field(description="paid in the purchases reversed in the period, minor units")


class SalesTotal(SalesFigures):
    """All vendors and tariffs in one currency."""

    currency: str | None = Field(description="ISO 4217 currency of the money figures", examples=["ZAR"])


class SalesReport(BaseModel):
    """Sales per vendor and tariff in a period of the utility's wall clock, reversals netted out on the day
    they were made."""

    since: Time = Field(description="start of the period (included), RFC 3339 with the utility's offset")
    until: Time = Field(description="end of the period (excluded), RFC 3339 with the utility's offset")
    time_zone: str = Field(description="the utility's time zone, as the server names it", examples=["SAST"])
    rows: list[SalesRow] = Field(description="one per vendor and tariff that sold or reversed in the period")
    totals: list[SalesTotal] = Field(description="the rows summed, one per currency")
