"""Request and response bodies of the HTTP API.

Requests refuse unknown fields and take integers strictly (``100.0``, ``"100"`` and ``true`` are not amounts).
String lengths follow the database columns, so an over-long value is a 422, not a database error. Responses
are allow-lists: a column added to a table later is not published until it is declared here, and no model
has a field for key material.

Every field says what it is and in which unit (a test walks the OpenAPI document for a field without one):
money in minor units of the tariff's currency, quantities in token base units (0.1 kWh, 0.1 m³) or as decimal
text in the unit named beside them, shares as fractions (0.15 is 15 %), times as RFC 3339 with an offset
(:func:`mita.vend.walltime.with_offset`). Each request model carries an example that the API accepts as it stands
(tests/api/test_openapi_examples.py posts them, in order, to a fresh service).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    WithJsonSchema,
)

from mita.vend import limits
from mita.vend.lifecycles import (
    CampaignStatus,
    CommandKind,
    CommandStatus,
    Delivery,
    KeyChangeStatus,
    KeyStatus,
    Keystore,
    MeterStatus,
    TokenEncoding,
    TokenKind,
    Transport,
    Utility,
    VendStatus,
    Via,
)
from mita.vend.service import MAX_AMOUNT
from mita.vend.walltime import wall_clock, with_offset

# ---------------------------------------------------------------------- field types

Amount = Annotated[
    int, Field(strict=True, gt=0, le=MAX_AMOUNT, description="minor units of the tariff's currency (cents)")
]
Money = Annotated[int, Field(strict=True, ge=0, le=10**15, description="minor units of the currency (cents)")]
SmallInt = Annotated[int, Field(strict=True, ge=0, le=9999)]
DecimalText = Annotated[str, Field(pattern=r"^[0-9]{1,12}(\.[0-9]{1,12})?$")]
Drn = Annotated[
    str,
    Field(
        min_length=1,
        max_length=limits.DRN_INPUT,
        examples=["47500150231"],
        description="meter number (DRN: 11 or 13 digits, the last a Luhn check digit)",
    ),
]
Sgc = Annotated[str, Field(pattern=r"^[0-9]{6}$", examples=["123456"], description="supply group code (6 digits)")]
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # no control characters (PostgreSQL refuses NUL in text: a 500, otherwise)
Name = Annotated[str, Field(min_length=1, max_length=limits.NAME, pattern=PRINTABLE)]
Account = Annotated[str, Field(min_length=1, max_length=limits.ACCOUNT, pattern=PRINTABLE)]
Label = Annotated[str, Field(max_length=limits.LABEL, pattern=PRINTABLE)]

_TIME_SCHEMA = {"type": "string", "format": "date-time", "examples": ["2026-11-24T09:30:00+02:00"]}
#: A time in an answer: RFC 3339 with the offset of the utility's wall clock (stored times carry no zone).
Timestamp = Annotated[dt.datetime, PlainSerializer(with_offset, return_type=str), WithJsonSchema(_TIME_SCHEMA)]
#: A time in a request: RFC 3339; without an offset it is the utility's wall clock, with one it is moved there.
WallClock = Annotated[dt.datetime, AfterValidator(wall_clock), WithJsonSchema(_TIME_SCHEMA)]

# STS key parameters, described once
Krn = Annotated[SmallInt, Field(description="key revision number (1..9)")]
Kt = Annotated[SmallInt, Field(description="STS key type (0..3)")]
Ti = Annotated[SmallInt, Field(description="tariff index (0..99): the meter's tariff slot, part of its key")]
Ea = Annotated[SmallInt, Field(description="encryption algorithm: 7 (STA) or 11 (MISTY1)")]
Dkga = Annotated[SmallInt, Field(description="decoder key generation algorithm: 2 (DKGA02) or 4 (DKGA04)")]
BaseDate = Annotated[
    SmallInt, Field(description="base date year: 1993, 2014 or 2035 (token IDs count minutes from it)")
]
Ken = Annotated[
    SmallInt,
    Field(description="key expiry number (0..255; 255: none): meters refuse tokens whose TID >> 16 is above it"),
]

#: Engineering token kinds, the one spelling across API and CLI, with what each does to the meter.
ENGINEERING_KINDS = {
    "clear_tamper": "clear the meter's tamper condition (class 2, spends a TID; no value)",
    "clear_credit": "clear the credit register (class 2); value: the register (default 65535: all registers)",
    "set_power_limit": "set the maximum power limit (class 2); value: watts (required)",
    "set_phase_unbalance_limit": "set the maximum phase power unbalance limit (class 2); value: watts (required)",
    "set_tariff_rate": "set the tariff rate the meter shows (class 2); value: 0..65535 (required)",
    "test": "initiate a meter test or display (class 1, sent in clear, no TID); value: control bits (default 1)",
}
EngineeringKind = Literal[
    "clear_tamper", "clear_credit", "set_power_limit", "set_phase_unbalance_limit", "set_tariff_rate", "test"
]
_KIND_DOC = "what the token does: " + "; ".join(f"`{k}`: {v}" for k, v in ENGINEERING_KINDS.items())


def _example(**example: Any) -> ConfigDict:
    """A model's example request body (OpenAPI ``examples``), valid as it stands."""
    return ConfigDict(extra="forbid", json_schema_extra={"examples": [example]})


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------- requests

_SPEC = {
    "blocks": [{"up_to": "50", "price": "1.10"}, {"up_to": None, "price": "2.50"}],
    "vat_rate": "0.15",
    "fixed_monthly": 1000,
    "fbe_kwh": "50",
    "minor_units": 100,
}


class SupplyGroupIn(Body):
    model_config = _example(
        sgc="123456", name="Northern supply area", vending_key="ffffffffffffffff", dkga=2, ea=7, base_date=2014
    )

    sgc: Sgc
    name: Annotated[Name, Field(description="the supply group's name, for people")]
    vending_key: SecretStr = Field(
        description="the vending key, hex: 16 digits (DKGA02) or 40 (DKGA04); stored sealed, never returned (the "
        "example's all-f key is a placeholder)",
        max_length=64,
    )
    krn: Krn = 1
    kt: Kt = 2
    ea: Ea = 7
    dkga: Dkga = 2
    base_date: BaseDate = 2014
    ken: Ken = 255
    key_expiry: WallClock | None = Field(
        default=None, description="RFC 3339: no credit is issued under the vending key after this time; null: never"
    )


class VendorIn(Body):
    model_config = _example(name="Corner shop", credit_limit=500_000)

    name: Annotated[Name, Field(description="the vendor's name (a shop, a bank, an online channel)")]
    credit_limit: Money | None = Field(
        default=None, description="minor units the vendor may owe (sell on credit); null: no limit"
    )


class CustomerIn(Body):
    model_config = _example(
        account="ACC-1001", name="Thandi Nkosi", phone="+27821234567", fbe_eligible=True, debt=15_000, debt_rate="0.1"
    )

    account: Annotated[Account, Field(description="the utility's account number; unique", examples=["ACC-1001"])]
    name: Annotated[
        str, Field(min_length=1, max_length=limits.PERSON, pattern=PRINTABLE, description="the customer's name")
    ]
    phone: Annotated[
        str | None,
        Field(max_length=limits.PHONE, pattern=PRINTABLE, description="for token SMS (E.164 advised); null: none"),
    ] = None
    fbe_eligible: bool = Field(default=False, description="receives free basic electricity each month")
    debt: Money = Field(default=0, description="arrears to recover from purchases, minor units")
    debt_rate: DecimalText = Field(
        default="0",
        description="share of each purchase that repays debt, a fraction 0..1 (0.1: 10 %)",
        examples=["0.1"],
    )


class Block(Body):
    model_config = _example(up_to="50", price="1.10")

    up_to: DecimalText | None = Field(
        default=None,
        description="kWh (m³ for water and gas) bought this calendar month up to which the price applies, "
        "cumulative; null: no limit (the last block)",
        examples=["50"],
    )
    price: DecimalText = Field(
        description="currency units per kWh (per m³ for water and gas), VAT exclusive", examples=["1.10"]
    )


class TariffSpec(Body):
    model_config = _example(**_SPEC)

    blocks: Annotated[
        list[Block],
        Field(min_length=1, max_length=20, description="inclining blocks, lowest first; the last has no up_to"),
    ]
    vat_rate: DecimalText = Field(
        default="0", description="VAT as a fraction 0..1 (0.15: 15 %), added to energy and fixed charges",
        examples=["0.15"],
    )  # fmt: skip
    fixed_monthly: Money = Field(
        default=0, description="fixed charge per calendar month, minor units, VAT exclusive; taken from the month's "
        "first purchase",
    )  # fmt: skip
    fbe_kwh: DecimalText = Field(
        default="0", description="free basic electricity per month for eligible customers, kWh", examples=["50"]
    )
    minor_units: Annotated[int, Field(strict=True, ge=1, le=10**6)] = Field(
        default=100, description="minor units per currency unit (100: cents)"
    )


class TariffIn(Body):
    model_config = _example(
        name="domestic", currency="ZAR", spec=_SPEC, effective_from="2024-01-01T00:00:00+02:00", carry_leftover=True
    )

    name: Annotated[Name, Field(description="the tariff's name; unique (meters refer to it)")]
    currency: Annotated[str, Field(pattern=r"^[A-Za-z]{3}$", examples=["ZAR"], description="ISO 4217 currency code")]
    spec: TariffSpec = Field(description="the prices of the first version")
    effective_from: WallClock | None = Field(
        default=None, description="RFC 3339: when the first version takes effect; default now"
    )
    carry_leftover: bool = Field(
        default=True,
        description="money too small for one more base unit is carried to the next purchase (true) or refunded",
    )


class TariffVersionIn(Body):
    model_config = _example(spec={**_SPEC, "fixed_monthly": 1200}, effective_from="2026-07-01T00:00:00+02:00")

    spec: TariffSpec = Field(description="the new prices")
    effective_from: WallClock = Field(description="RFC 3339: when they take effect")


class MeterIn(Body):
    model_config = _example(
        drn="47500150231",
        sgc="123456",
        customer="ACC-1001",
        tariff="domestic",
        utility="electricity",
        manufacturer="Conlog",
        area="Soweto Zone 4",
    )

    drn: Drn
    sgc: Sgc
    customer: Account | None = Field(default=None, description="the customer's account; null: none yet")
    tariff: Name | None = Field(default=None, description="the tariff's name; null: none (no vends until set)")
    utility: Literal["electricity", "water", "gas"] = Field(
        default="electricity", description="what the meter measures: kWh (electricity) or m³ (water, gas)"
    )
    manufacturer: Label = Field(default="", description="for selecting meters in campaigns")
    area: Annotated[Label, Field(description="where the meter is (campaigns select meters by it)")] = ""
    ti: Ti = 1
    krn: Krn | None = Field(default=None, description="key revision number; default the supply group's")
    kt: Kt | None = Field(default=None, description="key type; default the supply group's")
    ea: Ea | None = Field(default=None, description="encryption algorithm (7 or 11); default the supply group's")
    base_date: BaseDate | None = Field(default=None, description="1993, 2014 or 2035; default the supply group's")
    ken: Ken | None = Field(default=None, description="key expiry number; default the supply group's")


class MeterStatusIn(Body):
    model_config = _example(status="blocked")

    status: Literal["active", "blocked", "retired"] = Field(
        description="blocked: no vends until active again; retired: for good"
    )


class VendIn(Body):
    model_config = _example(meter="47500150231", amount=5000)

    meter: Drn
    amount: Amount = Field(description="money paid, minor units of the tariff's currency (cents)")
    include_key_change: bool = Field(default=False, description="sell the key change tokens first when needed")


class QuoteIn(Body):
    model_config = _example(meter="47500150231", amount=5000)

    meter: Drn
    amount: Amount = Field(description="money to be paid, minor units of the tariff's currency (cents)")


class ReversalIn(Body):
    model_config = _example(reason="paid twice by mistake; refunded at the till")

    reason: Annotated[
        str, Field(min_length=1, max_length=limits.REASON, pattern=r"^[^\x00]*$", description="why, for the audit")
    ]


class EngineeringIn(Body):
    model_config = _example(kind="set_power_limit", value=5000)

    kind: EngineeringKind = Field(
        description=_KIND_DOC, json_schema_extra={"x-enum-descriptions": list(ENGINEERING_KINDS.values())}
    )
    value: Annotated[int, Field(strict=True, ge=0, le=2**32)] | None = Field(
        default=None, description="watts for the power limits, a register for clear_credit, control bits for test"
    )


# --- vending keys, key changes and campaigns

KeyStoreName = Literal["software", "pkcs11"]
Kcv = Annotated[
    str, Field(pattern=r"^[0-9a-fA-F]{6}$", examples=["a1b2c3"], description="key check value (6 hex digits)")
]


class VendingKeyIn(Body):
    model_config = _example(krn=2, dkga=2, keystore="software", ken=255, issued_until="2031-12-31T23:59:59+02:00")

    krn: Krn
    dkga: Dkga = 2
    key: SecretStr | None = Field(
        default=None,
        max_length=64,
        description="hex: 16 digits (DKGA02) or 40 (DKGA04); stored sealed, never returned. Absent: the keystore "
        "generates the key",
    )
    kcv: Kcv | None = Field(default=None, description="the key's check value, to catch a mistyped key")
    keystore: KeyStoreName = Field(
        default="software", description="software (sealed under the master key) or pkcs11 (an HSM)"
    )
    ken: Ken = 255
    issued_until: WallClock | None = Field(
        default=None, description="RFC 3339: no credit is issued under the key after this time; null: never"
    )
    credit_limit: Money | None = Field(
        default=None, description="base units (0.1 kWh) that may be issued under the key; null: no limit"
    )


class ActivateKeyIn(Body):
    model_config = _example(base_date=2014, ea=7)

    base_date: BaseDate | None = Field(default=None, description="1993, 2014 or 2035; default the group's")
    ea: Ea | None = Field(default=None, description="7 or 11; default the group's")
    kt: Kt | None = Field(default=None, description="key type; default the group's")


class RetireKeyIn(Body):
    model_config = _example(destroy=False)

    destroy: bool = Field(default=False, strict=True, description="also destroy the key's material (irreversible)")


class KeyChangeIn(Body):
    model_config = _example(krn=2)

    sgc: Sgc | None = Field(default=None, description="the new supply group code; default unchanged")
    krn: Krn | None = Field(default=None, description="the new key revision number; default unchanged")
    kt: Kt | None = Field(default=None, description="the new key type; default unchanged")
    ti: Ti | None = Field(default=None, description="the new tariff index; default unchanged")
    ea: Ea | None = Field(default=None, description="the new encryption algorithm; default unchanged")
    base_date: BaseDate | None = Field(default=None, description="the new base date; default unchanged")
    ken: Ken | None = Field(default=None, description="the new key expiry number; default unchanged")


class CampaignTargetIn(Body):
    model_config = _example(krn=2, base_date=2014)

    krn: Krn = Field(description="the new key's KRN")
    base_date: BaseDate | None = Field(default=None, description="the new base date; default unchanged")
    ea: Ea | None = Field(default=None, description="the new encryption algorithm; default unchanged")
    kt: Kt | None = Field(default=None, description="the new key type; default unchanged")
    ken: Ken | None = Field(default=None, description="the new key expiry number; default unchanged")


class CampaignSelectionIn(Body):
    model_config = _example(krn=1, area="Soweto Zone 4")

    krn: Krn | None = Field(default=None, description="meters on this KRN only")
    base_date: BaseDate | None = Field(default=None, description="meters on this base date only")
    ea: Ea | None = Field(default=None, description="meters on this encryption algorithm only")
    manufacturer: Label | None = Field(default=None, description="meters of this manufacturer only")
    area: Label | None = Field(default=None, description="meters in this area only")


class CampaignIn(Body):
    model_config = _example(
        name="KRN 2 rollover, Soweto",
        sgc="123456",
        target={"krn": 2, "base_date": 2014},
        selection={"krn": 1, "area": "Soweto Zone 4"},
        delivery="csv",
        batch_size=5000,
    )

    name: Annotated[Name, Field(description="the campaign's name; unique")]
    sgc: Sgc
    target: CampaignTargetIn = Field(description="the key configuration the meters move to")
    selection: CampaignSelectionIn | None = Field(default=None, description="which of the group's meters; all if null")
    delivery: Literal["csv", "sms", "attach"] = Field(
        default="attach",
        description="csv: a list for field teams; sms: to the customers' phones; attach: before the credit of the "
        "customer's next purchase",
    )
    batch_size: Annotated[int, Field(strict=True, ge=1, le=1_000_000)] = Field(
        default=10_000, description="meters per batch (generation, export and SMS go batch by batch)"
    )


class MarksIn(Body):
    model_config = _example(meters=["47500150231"], status="delivered")

    meters: Annotated[list[Drn], Field(min_length=1, max_length=10_000, description="meter numbers (DRNs)")]
    status: Literal["delivered", "confirmed"] = Field(
        description="delivered: the tokens reached the meter; confirmed: the meter accepted them (its new key "
        "becomes current)"
    )


# --- connected meters: their endpoint and the commands sent to them (mita.headend)

#: The commands an operator queues, with what each does at the meter (``mita.headend.commands.OPERATOR_KINDS``, in
#: its order: a test keeps them equal).
COMMAND_KINDS = {
    "disconnect": "open the meter's supply relay (disconnect control, remote); no value",
    "reconnect": "close the supply relay again; no value",
    "set_power_limit": "an STS management token that sets the maximum power limit, delivered remotely (it is also "
    "in the meter's history, like any engineering token); value: watts (required)",
    "set_tariff_rate": "an STS management token that sets the tariff rate the meter shows; value: the rate",
    "read_registers": "read the energy (or water volume) register, the credit, the relay, the power limit and the "
    "clock",
    "read_events": "read event logs; logs: which (default all)",
    "set_clock": "set the meter's clock to the head-end's when the command runs",
}
#: The event logs a ``read_events`` command names (``mita.headend.commands.LOGS``).
LogName = Literal["standard", "fraud", "disconnector", "token"]
_COMMAND_DOC = "what to do: " + "; ".join(f"`{k}`: {v}" for k, v in COMMAND_KINDS.items())
_LLS_SECRET = re.compile(r"(?:[0-9a-fA-F]{2}){1,32}")
#: Longest a command may wait for its meter (``mita.headend.commands.MAX_EXPIRY``).
MAX_EXPIRY_S = 30 * 86400


def _lls_secret(secret: SecretStr) -> SecretStr:
    """1 to 32 octets as hex; the message never holds the value (nor does the problem: it never echoes input)."""
    if not _LLS_SECRET.fullmatch(secret.get_secret_value()):
        raise ValueError("an LLS secret is 1 to 32 octets, hex: 2 to 64 digits, an even number of them")
    return secret


class ConnectionIn(Body):
    model_config = _example(host="192.0.2.10", port=4059, secret="ffffffffffffffff", token_encoding="bcd")

    host: Annotated[
        str,
        Field(
            min_length=1,
            max_length=limits.HOST,
            pattern=r"^[^\s\x00-\x1f\x7f]+$",
            description="the meter's DNS name or IP address (no spaces)",
            examples=["192.0.2.10"],
        ),
    ]
    port: Annotated[int, Field(strict=True, ge=1, le=65535)] = Field(
        description="its TCP port (4059: the DLMS/COSEM port, IEC 62056-47 wrapper)"
    )
    secret: Annotated[SecretStr, AfterValidator(_lls_secret)] | None = Field(
        default=None,
        max_length=64,
        description="the management association's LLS secret, hex (1 to 32 octets); stored sealed, never returned, "
        "logged or audited (the example's all-f secret is a placeholder). Absent: the meter is reached over the "
        "public client, reading only",
    )
    transport: Transport = Field(
        default=Transport.DLMS,
        description="dlms: the head-end reaches the meter at host and port over DLMS/COSEM; mqtt: an MQTT-native "
        "meter (docs/telemetry.md), host and port are its broker's, and no secret is taken",
    )
    token_encoding: TokenEncoding = Field(
        default=TokenEncoding.BCD,
        description="how the meter's token gateway takes a token: bcd (packed BCD, 10 octets) or ascii (20 digits)",
    )
    client: Annotated[int, Field(strict=True, ge=1, le=127)] = Field(
        default=1, description="the management client's address (client SAP, 1..127)"
    )
    server: Annotated[int, Field(strict=True, ge=1, le=16383)] = Field(
        default=1, description="the meter's logical device address (server SAP, 1..16383)"
    )


class CommandIn(Body):
    model_config = _example(kind="read_events", logs=["token", "standard"], expires_in_s=3600)

    kind: Annotated[str, Field(min_length=1, max_length=20, pattern=PRINTABLE)] = Field(
        description=_COMMAND_DOC,
        json_schema_extra={"enum": list(COMMAND_KINDS), "x-enum-descriptions": list(COMMAND_KINDS.values())},
    )
    value: Annotated[int, Field(strict=True, ge=0, le=65535)] | None = Field(
        default=None, description="set_power_limit: watts; set_tariff_rate: the rate; refused for other kinds"
    )
    logs: Annotated[list[LogName], Field(min_length=1, max_length=4)] | None = Field(
        default=None, description="read_events: the logs to read (standard, fraud, disconnector, token); default all"
    )
    expires_in_s: Annotated[int, Field(strict=True, ge=1, le=MAX_EXPIRY_S)] | None = Field(
        default=None,
        description="seconds the head-end keeps trying to reach the meter before the command ends expired (at most "
        "30 days); default the delivery expiry (MITA_DELIVERY_EXPIRY_HOURS), which set_power_limit and "
        "set_tariff_rate always take (their tokens are sold like a vend's)",
    )


# ---------------------------------------------------------------------- responses

T = TypeVar("T")

Id = Annotated[int, Field(description="the row's id")]
CreatedAt = Annotated[Timestamp, Field(description="RFC 3339: when it was created")]


class Page(BaseModel, Generic[T]):
    items: list[T] = Field(description="this page's rows, in id order")
    next: int | None = Field(description="pass as ?after= for the next page; null on the last page")


class VendingKeyOut(BaseModel):
    krn: int = Field(description="key revision number")
    dkga: int = Field(description="decoder key generation algorithm: 2 or 4")
    kcv: str = Field(description="key check value: compare keys without seeing them")
    status: KeyStatus | None = Field(None, description="pending, active, retired or destroyed")
    keystore: Keystore | None = Field(None, description="software or pkcs11")


class SupplyGroupOut(BaseModel):
    id: Id
    sgc: str = Field(description="supply group code (6 digits)")
    name: str = Field(description="the supply group's name")
    krn: int = Field(description="key revision number vended under now")
    kt: int = Field(description="key type")
    ea: int = Field(description="encryption algorithm: 7 (STA) or 11 (MISTY1)")
    dkga: int = Field(description="decoder key generation algorithm: 2 or 4")
    base_date: int = Field(description="base date year: 1993, 2014 or 2035")
    ken: int = Field(description="key expiry number (255: none)")
    key_expiry: Timestamp | None = Field(None, description="RFC 3339: issued-until time of the current vending key")
    created_at: CreatedAt
    vending_keys: list[VendingKeyOut] | None = Field(None, description="the group's keys (single reads only)")


class VendorOut(BaseModel):
    id: Id
    name: str = Field(description="the vendor's name")
    credit_limit: int | None = Field(description="minor units the vendor may owe; null: no limit")
    balance: int = Field(description="minor units owed for credit sold (vendors on credit only)")
    created_at: CreatedAt


class VendorWebhookIn(Body):
    model_config = _example(webhook=None)  # a name of MITA_WEBHOOK_URLS; null: the vendor is not a partner
    webhook: str | None = Field(
        default=None,
        max_length=limits.NAME,
        description="a name in MITA_WEBHOOK_URLS: the vendor's vends and deliveries are posted there, signed; "
        "null: none",
    )


class VendorWebhookOut(BaseModel):
    id: Id
    name: str = Field(description="the vendor's name")
    webhook: str | None = Field(description="the webhook its events go to; null: none")


class CustomerOut(BaseModel):
    id: Id
    account: str = Field(description="the utility's account number")
    name: str = Field(description="the customer's name")
    phone: str | None = Field(description="for token SMS; null: none")
    fbe_eligible: bool = Field(description="receives free basic electricity each month")
    debt: int = Field(description="arrears still to recover, minor units")
    debt_rate: str = Field(description="share of each purchase that repays debt, a fraction 0..1")
    carried: int = Field(description="money carried to the next purchase, minor units")
    refund_balance: int = Field(description="money owed back to the customer, minor units")
    created_at: CreatedAt


class MeterOut(BaseModel):
    id: Id
    drn: str = Field(description="meter number (DRN)")
    iin: str = Field(description="issuer identification number the meter's keys are derived with")
    manufacturer: str = Field(description="the meter's manufacturer (campaigns select meters by it)")
    supply_group_id: int = Field(description="the supply group's id")
    customer_id: int | None = Field(description="the customer's id; null: none")
    tariff_id: int | None = Field(description="the tariff's id; null: none")
    utility: Utility = Field(description="what the meter measures: electricity (kWh), water or gas (m³)")
    ti: int = Field(description="tariff index")
    kt: int = Field(description="key type")
    krn: int = Field(description="key revision number the meter holds")
    ea: int = Field(description="encryption algorithm: 7 (STA) or 11 (MISTY1)")
    base_date: int = Field(description="base date year: 1993, 2014 or 2035")
    ken: int = Field(description="key expiry number (255: none)")
    status: MeterStatus = Field(description="active, blocked or retired")
    last_tid: int = Field(description="the last token ID issued to the meter (minutes from the base date); -1: none")
    pending_key: dict[str, Any] | None = Field(description="a key configuration sold but not yet confirmed")
    created_at: CreatedAt
    area: str = Field("", description="where the meter is (campaigns select meters by it)")


class TariffVersionOut(BaseModel):
    effective_from: Timestamp = Field(description="RFC 3339: when these prices take effect")
    spec: dict[str, Any] = Field(description="the prices, as a TariffSpec (blocks, vat_rate, fixed_monthly, ...)")


class TariffOut(BaseModel):
    id: Id
    name: str = Field(description="the tariff's name")
    currency: str = Field(description="ISO 4217 currency code")
    carry_leftover: bool = Field(description="leftover money is carried (true) or refunded")
    created_at: CreatedAt
    versions: list[TariffVersionOut] | None = Field(None, description="every version, oldest first (single reads)")


class AuditOut(BaseModel):
    id: Id
    at: Timestamp = Field(description="RFC 3339: when it was done")
    actor: str = Field(description="the API key's name (or system) that did it")
    action: str = Field(description="what was done (create_meter, vend, reversal, ...)")
    entity: str = Field(description="the kind of thing it was done to (meter, vend, tariff, ...)")
    entity_id: str = Field(description="which one (its number, name or id)")
    detail: dict[str, Any] = Field(description="the action's parameters; never key material")


class KeyChangeOut(BaseModel):
    meter: str = Field(description="meter number (DRN)")
    key: dict[str, Any] = Field(description="the key configuration now current (sgc, krn, kt, ti, ea, base_date, ken)")


# Vend, quote and reprint answers are built by the service and sent as they are (the hot path is not
# re-validated); these models document them.


class TokenOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    seq: int = Field(description="the token's place in the vend: enter them in this order")
    kind: TokenKind = Field(examples=["credit"], description="credit, fbe, key_change or engineering")
    digits: str = Field(examples=["12345678901234567890"], description="the 20-digit token, to enter on the meter")
    tid: int | None = Field(description="token ID: minutes from the base date; null for class 1 tokens")
    class_: int = Field(alias="class", description="STS token class (0 credit, 1 non-meter-specific, 2 management)")
    subclass: int = Field(description="STS token subclass")
    units: int = Field(
        description="base units the token credits: 0.1 kWh (electricity) or 0.1 m³ (water, gas); 0 for others"
    )


Unit = Literal["kWh", "m³"]  # the values of mita.vend.answers.UNIT (a test keeps them equal)
_KWH = "the quantity in kWh, electricity meters only (the same as quantity); absent for water and gas"


class BlockCharge(BaseModel):
    units: int = Field(description="base units bought in this block: 0.1 kWh or 0.1 m³")
    quantity: str = Field(description="the same as decimal text in unit", examples=["3.5"])
    unit: Unit = Field(description="what quantity counts: kWh (electricity) or m³ (water, gas)")
    kwh: str | None = Field(None, description=_KWH)
    price: str = Field(description="currency units per unit, VAT exclusive (decimal text)")
    charge: int = Field(description="minor units, VAT exclusive")


class Receipt(BaseModel):
    currency: str = Field(description="ISO 4217 currency code of every money field")
    paid: int = Field(description="money paid, minor units")
    carried_in: int = Field(description="leftover of earlier purchases used, minor units")
    debt_recovered: int = Field(description="arrears recovered, minor units")
    fixed_charge: int = Field(description="the month's fixed charge (first purchase of the month), minor units")
    fixed_vat: int = Field(description="VAT on the fixed charge, minor units")
    blocks: list[BlockCharge] = Field(description="what was bought in each tariff block")
    energy_charge: int = Field(description="sum of the blocks' charges, minor units, VAT exclusive")
    energy_vat: int = Field(description="VAT on the energy charge, minor units")
    vat: int = Field(description="fixed_vat + energy_vat, minor units")
    leftover: int = Field(description="money not spent (less than one more base unit costs), minor units")
    leftover_policy: Literal["carry", "refund"] = Field(description="leftover carried to the next purchase or refunded")
    units: int = Field(description="base units on the credit token: 0.1 kWh (electricity) or 0.1 m³ (water, gas)")
    quantity: str = Field(description="the credit token's units as decimal text in unit", examples=["3.5"])
    unit: Unit = Field(description="what quantity counts: kWh (electricity) or m³ (water, gas)")
    kwh: str | None = Field(None, description=_KWH)
    fbe_units: int = Field(description="base units (0.1 kWh) on the separate free basic electricity token; 0: none")


class EngineeringReceipt(BaseModel):
    engineering: EngineeringKind = Field(description="the engineering token's kind")
    value: int | None = Field(description="its value (watts, register or control bits); null: none")


class KeyConfigOut(BaseModel):
    """The key configuration tokens were made under (a purchase's, or a key change's target)."""

    sgc: str = Field(description="supply group code")
    krn: int = Field(description="key revision number")
    kt: int = Field(description="key type")
    ti: int = Field(description="tariff index")
    ea: int = Field(description="encryption algorithm: 7 (STA) or 11 (MISTY1)")
    base_date: int = Field(description="1993, 2014 or 2035: TIDs count minutes from it")
    ken: int = Field(description="key expiry number: meters refuse tokens with TID >> 16 above it")


class KeyChangeMove(BaseModel):
    from_: KeyConfigOut = Field(alias="from", description="the meter's key configuration before")
    to: KeyConfigOut = Field(description="the key configuration the tokens move it to")


class KeyChangeReceipt(BaseModel):
    key_change: KeyChangeMove = Field(description="the key configurations the key change tokens move between")


class KeyWarning(BaseModel):
    code: str = Field(examples=["key_expiring"], description="key_expiring, ken_expiring, tid_rollover, key_expired")
    detail: str = Field(description="what ends when, for people")


class RemoteDelivery(BaseModel):
    """How a vend's tokens went to a connected meter: the head-end's command that carries them (issue 12)."""

    command: int = Field(description="the command that carries the tokens (GET /v1/commands/{id}: each token's status)")
    status: CommandStatus = Field(
        description="queued (waiting for the head-end, or to be tried again), sent (at the meter now), acknowledged "
        "(the meter took the tokens: delivered), failed (the meter refused, or a fault a retry cannot change), "
        "expired (not reached in time: the tokens are still on the receipt, for the keypad)"
    )
    finished_at: Timestamp | None = Field(description="RFC 3339: when the delivery ended; null: not yet")
    error: str | None = Field(
        examples=["unreachable"],
        description="the last failure's code: why it failed or expired, or, while queued, why the last try did "
        "not reach the meter (unreachable, timeout, refused, denied, protocol, token_refused, not_connected, "
        "expired); null: none",
    )


class VendOut(BaseModel):
    id: str = Field(description="the vend's UUID")
    meter: str = Field(description="meter number (DRN)")
    created_at: CreatedAt
    tokens: list[TokenOut] = Field(description="the tokens, in the order to enter them")
    receipt: Receipt | KeyChangeReceipt | EngineeringReceipt = Field(
        description="a purchase's itemised receipt; for key changes and engineering tokens, what was made"
    )
    key: KeyConfigOut | None = Field(default=None, description="purchases: the key the credit was made under")
    warnings: list[KeyWarning] | None = Field(
        default=None, description="purchases: the vending key, its KEN or its base date end soon"
    )
    status: VendStatus | None = Field(default=None, description="completed or reversed (reads only)")
    reprint: bool | None = Field(default=None, description="true on a reprint")
    delivery: RemoteDelivery | None = Field(
        default=None,
        description="a connected meter's: how the tokens went to it (a new vend's answer, and its replays: queued; "
        "GET /v1/vends/{id} says where it is now); null: keypad only, the receipt is the delivery",
    )


class QuoteOut(BaseModel):
    meter: str = Field(description="meter number (DRN)")
    receipt: Receipt = Field(description="what the amount would buy now")
    quoted_at: Timestamp = Field(description="RFC 3339: when it was priced (the month's blocks depend on it)")


class Health(BaseModel):
    status: str = Field(description="ok")
    database: str = Field(description="the database's kind (sqlite, postgresql)")


class Probe(BaseModel):
    status: Literal["alive", "ready"] = Field(description="alive (the process answers) or ready (it can serve)")
    database: str | None = Field(default=None, description="the database's kind (sqlite, postgresql) when ready")


# --- vending keys, key changes and campaigns


class VendingKeyCreated(BaseModel):
    id: Id
    sgc: str = Field(description="supply group code")
    krn: int = Field(description="key revision number")
    dkga: int = Field(description="decoder key generation algorithm: 2 or 4")
    kcv: str = Field(description="key check value: compare keys without seeing them")
    keystore: Keystore = Field(description="software or pkcs11")


class KeyStatusOut(BaseModel):
    sgc: str = Field(description="supply group code")
    krn: int = Field(description="key revision number")
    dkga: int = Field(description="decoder key generation algorithm: 2 or 4")
    kcv: str = Field(description="key check value")
    keystore: Keystore = Field(description="software or pkcs11")
    status: KeyStatus = Field(description="pending, active, retired or destroyed")
    current: bool = Field(description="the supply group vends under this key")
    ken: int = Field(description="key expiry number (255: none)")
    issued_until: Timestamp | None = Field(description="RFC 3339: no credit is issued under the key after; null: never")
    ken_expires: Timestamp | None = Field(description="RFC 3339: meters refuse tokens issued from then on (KEN)")
    credit_limit: int | None = Field(description="base units (0.1 kWh) that may be issued under the key; null: none")
    credit_issued: int = Field(description="base units issued under the key so far")
    warnings: list[KeyWarning] = Field(description="what ends soon (active keys)")


class KeyHistoryOut(BaseModel):
    at: Timestamp = Field(description="RFC 3339: when it was done")
    actor: str = Field(description="the API key's name (or system) that did it")
    action: str = Field(description="add_vending_key, activate_vending_key, retire_vending_key, ...")
    krn: int | None = Field(None, description="the key's revision number")
    previous_krn: int | None = Field(None, description="activation: the KRN vended under before")
    dkga: int | None = Field(None, description="decoder key generation algorithm")
    keystore: Keystore | None = Field(None, description="software or pkcs11")
    kcv: str | None = Field(None, description="key check value")
    ken: int | None = Field(None, description="key expiry number")
    generated: bool | None = Field(None, description="the keystore generated the key (not imported)")
    base_date: int | None = Field(None, description="activation: the base date from then on")
    ea: int | None = Field(None, description="activation: the encryption algorithm from then on")
    kt: int | None = Field(None, description="activation: the key type from then on")


class KeyChangeEntryOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: Id
    via: Via = Field(description="operator, campaign or vend")
    campaign: int | None = Field(description="the campaign's id; null: not by a campaign")
    vend: str | None = Field(description="the vend (UUID) that carried the tokens; null: none")
    status: KeyChangeStatus = Field(description="planned, issued, delivered, confirmed or cancelled")
    from_: dict[str, Any] | None = Field(alias="from", description="the key configuration before; null: not yet")
    to: dict[str, Any] | None = Field(description="the key configuration after; null: not yet")
    tokens: list[str] | None = Field(description="the key change tokens (20 digits each), in order; null: not yet")
    issued_at: Timestamp | None = Field(description="RFC 3339: when the tokens were made")
    delivered_at: Timestamp | None = Field(description="RFC 3339: when they were reported delivered")
    confirmed_at: Timestamp | None = Field(description="RFC 3339: when the meter was reported to accept them")


class AcceptedOut(BaseModel):
    meter: str = Field(description="meter number (DRN)")
    key: dict[str, Any] | None = Field(None, description="the key configuration now current")
    already_confirmed: bool | None = Field(None, description="the key change was confirmed before")


class CampaignCounts(BaseModel):
    planned: int = Field(description="meters whose tokens are not made yet")
    issued: int = Field(description="meters whose tokens are made")
    delivered: int = Field(description="meters whose tokens were reported delivered")
    confirmed: int = Field(description="meters that accepted their tokens")
    cancelled: int = Field(description="meters taken out of the campaign")


class CampaignOut(BaseModel):
    id: Id
    name: str = Field(description="the campaign's name")
    sgc: str = Field(description="supply group code")
    selection: dict[str, Any] = Field(description="which meters (a CampaignSelectionIn; {}: all of the group's)")
    target: dict[str, Any] = Field(description="the key configuration they move to (a CampaignTargetIn)")
    delivery: Delivery = Field(description="csv, sms or attach")
    batch_size: int = Field(description="meters per batch")
    batches: int = Field(description="how many batches")
    planned: int = Field(description="how many meters the campaign took")
    status: CampaignStatus = Field(description="planned, generating, generated or closed")
    created_at: CreatedAt
    meters: CampaignCounts = Field(description="how many of the campaign's meters are at each step")


class SmsQueuedOut(BaseModel):
    queued: int = Field(description="SMS messages put in the outbox")


class MarksOut(BaseModel):
    marked: int = Field(description="meters marked")
    not_in_campaign: int = Field(description="meters given that the campaign does not hold")


# --- connected meters


class ConnectionOut(BaseModel):
    meter: str = Field(description="meter number (DRN)")
    host: str = Field(description="the meter's DNS name or IP address")
    port: int = Field(description="its TCP port")
    client: int = Field(description="the management client's address (client SAP)")
    server: int = Field(description="the meter's logical device address (server SAP)")
    token_encoding: TokenEncoding = Field(description="how its token gateway takes a token: bcd or ascii")
    transport: Transport = Field(description="how the head-end reaches it: dlms (its address) or mqtt (its broker)")
    secret: bool = Field(description="whether an LLS secret is kept (sealed; never shown): false, reading only")
    created_at: CreatedAt
    updated_at: Timestamp = Field(description="RFC 3339: when the endpoint was last registered or changed")


class CommandOut(BaseModel):
    id: Id
    meter: str = Field(description="meter number (DRN)")
    kind: CommandKind = Field(
        description="what it asks of the meter: deliver_tokens (a vend's tokens) or one of the operator's kinds"
    )
    params: dict[str, Any] = Field(
        description="its parameters: tokens (in entry order) and purpose where it delivers tokens; value; logs"
    )
    status: CommandStatus = Field(
        description="queued (waiting, or waiting to be tried again), sent (at the meter now), acknowledged (done), "
        "failed (refused, or a fault a retry cannot change), expired (not reached before expires_at)"
    )
    vend_id: str | None = Field(description="the vend whose tokens it carries; null: no tokens")
    actor: str = Field(description="the API key's name (or system) that queued it, or sold the vend")
    attempts: int = Field(description="how many times the head-end tried the meter")
    result: dict[str, Any] | None = Field(
        description="what the meter answered (each token's status, the credit read back, registers, logs); null: "
        "nothing yet"
    )
    error: str | None = Field(description="the last failure: its code and a short reason; null: none")
    created_at: CreatedAt
    expires_at: Timestamp = Field(description="RFC 3339: after this the command is not tried again (expired)")
    sent_at: Timestamp | None = Field(description="RFC 3339: when the last try started; null: never tried")
    finished_at: Timestamp | None = Field(description="RFC 3339: when it ended; null: not yet")
