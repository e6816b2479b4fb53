"""Request and response bodies of the HTTP API.

Requests refuse unknown fields and take integers strictly (``100.0``, ``"100"`` and ``true`` are not amounts).
String lengths follow the database columns, so an over-long value is a 422, not a database error. Responses
are allow-lists: a column added to a table later is not published until it is declared here, and no model
has a field for key material.
"""

from __future__ import annotations

from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, NaiveDatetime, SecretStr

from mita.vend import limits
from mita.vend.service import MAX_AMOUNT

Amount = Annotated[int, Field(strict=True, gt=0, le=MAX_AMOUNT, description="minor units (cents)")]
Money = Annotated[int, Field(strict=True, ge=0, le=10**15, description="minor units (cents)")]
SmallInt = Annotated[int, Field(strict=True, ge=0, le=9999)]
DecimalText = Annotated[str, Field(pattern=r"^[0-9]{1,12}(\.[0-9]{1,12})?$", examples=["1.10"])]
Drn = Annotated[
    str, Field(min_length=1, max_length=limits.DRN_INPUT, examples=["47500150231"], description="meter number")
]
Sgc = Annotated[str, Field(pattern=r"^[0-9]{6}$", examples=["123456"], description="supply group code")]
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # no control characters (PostgreSQL refuses NUL in text: a 500, otherwise)
Name = Annotated[str, Field(min_length=1, max_length=limits.NAME, pattern=PRINTABLE)]
Account = Annotated[str, Field(min_length=1, max_length=limits.ACCOUNT, pattern=PRINTABLE)]
Label = Annotated[str, Field(max_length=limits.LABEL, pattern=PRINTABLE)]
EngineeringKind = Literal["clear_tamper", "clear_credit", "set_power_limit", "set_phase_unbalance_limit", "test"]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---------------------------------------------------------------------- requests


class SupplyGroupIn(Body):
    sgc: Sgc
    name: Name
    vending_key: SecretStr = Field(
        description="hex: 16 digits (DKGA02) or 40 (DKGA04); stored sealed, never returned", max_length=64
    )
    krn: SmallInt = 1
    kt: SmallInt = 2
    ea: SmallInt = 7
    dkga: SmallInt = 2
    base_date: SmallInt = 2014
    ken: SmallInt = 255
    key_expiry: NaiveDatetime | None = None


class VendorIn(Body):
    name: Name
    credit_limit: Money | None = Field(default=None, description="minor units; null: no limit")


class CustomerIn(Body):
    account: Account
    name: Annotated[str, Field(min_length=1, max_length=limits.PERSON, pattern=PRINTABLE)]
    phone: Annotated[str, Field(max_length=limits.PHONE, pattern=PRINTABLE)] | None = None
    fbe_eligible: bool = False
    debt: Money = 0
    debt_rate: DecimalText = Field(default="0", description="share of each purchase that repays debt, 0..1")


class Block(Body):
    up_to: DecimalText | None = Field(
        default=None, description="kWh this month up to which the price applies; null: no limit"
    )
    price: DecimalText


class TariffSpec(Body):
    blocks: Annotated[list[Block], Field(min_length=1, max_length=20)]
    vat_rate: DecimalText = "0"
    fixed_monthly: Money = 0
    fbe_kwh: DecimalText = "0"
    minor_units: Annotated[int, Field(strict=True, ge=1, le=10**6)] = 100


class TariffIn(Body):
    name: Name
    currency: Annotated[str, Field(pattern=r"^[A-Za-z]{3}$", examples=["ZAR"])]
    spec: TariffSpec
    effective_from: NaiveDatetime | None = Field(default=None, description="utility wall clock; default now")
    carry_leftover: bool = True


class TariffVersionIn(Body):
    spec: TariffSpec
    effective_from: NaiveDatetime


class MeterIn(Body):
    drn: Drn
    sgc: Sgc
    customer: Account | None = None
    tariff: Name | None = None
    utility: Literal["electricity", "water", "gas"] = "electricity"
    manufacturer: Label = ""
    area: Annotated[Label, Field(description="for selecting meters in campaigns")] = ""
    ti: SmallInt = 1
    krn: SmallInt | None = None
    kt: SmallInt | None = None
    ea: SmallInt | None = None
    base_date: SmallInt | None = None
    ken: SmallInt | None = None


class MeterStatusIn(Body):
    status: Literal["active", "blocked", "retired"]


class VendIn(Body):
    meter: Drn
    amount: Amount
    include_key_change: bool = Field(default=False, description="sell the key change tokens first when needed")


class QuoteIn(Body):
    meter: Drn
    amount: Amount


class ReversalIn(Body):
    reason: Annotated[str, Field(min_length=1, max_length=limits.REASON, pattern=r"^[^\x00]*$")]


class EngineeringIn(Body):
    kind: EngineeringKind
    value: Annotated[int, Field(strict=True, ge=0, le=2**32)] | None = None


# --- vending keys, key changes and campaigns

KeyStoreName = Literal["software", "pkcs11"]
Kcv = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{6}$", examples=["a1b2c3"], description="key check value")]


class VendingKeyIn(Body):
    krn: SmallInt = Field(description="key revision number, 1..9")
    dkga: SmallInt = 2
    key: SecretStr | None = Field(
        default=None,
        max_length=64,
        description="hex: 16 digits (DKGA02) or 40 (DKGA04); stored sealed, never returned. Absent: the keystore "
        "generates the key",
    )
    kcv: Kcv | None = Field(default=None, description="the key's check value, to catch a mistyped key")
    keystore: KeyStoreName = "software"
    ken: SmallInt = Field(default=255, description="key expiry number (255: none)")
    issued_until: NaiveDatetime | None = Field(default=None, description="no credit is issued under the key after")
    credit_limit: Money | None = Field(default=None, description="units that may be issued under the key; null: none")


class ActivateKeyIn(Body):
    base_date: SmallInt | None = Field(default=None, description="1993, 2014 or 2035; default the group's")
    ea: SmallInt | None = Field(default=None, description="7 or 11; default the group's")
    kt: SmallInt | None = Field(default=None, description="key type; default the group's")


class RetireKeyIn(Body):
    destroy: bool = Field(default=False, strict=True, description="also destroy the key's material (irreversible)")


class KeyChangeIn(Body):
    sgc: Sgc | None = None
    krn: SmallInt | None = None
    kt: SmallInt | None = None
    ti: SmallInt | None = None
    ea: SmallInt | None = None
    base_date: SmallInt | None = None
    ken: SmallInt | None = None


class CampaignTargetIn(Body):
    krn: SmallInt = Field(description="the new key's KRN")
    base_date: SmallInt | None = None
    ea: SmallInt | None = None
    kt: SmallInt | None = None
    ken: SmallInt | None = None


class CampaignSelectionIn(Body):
    krn: SmallInt | None = None
    base_date: SmallInt | None = None
    ea: SmallInt | None = None
    manufacturer: Label | None = None
    area: Label | None = None


class CampaignIn(Body):
    name: Name
    sgc: Sgc
    target: CampaignTargetIn
    selection: CampaignSelectionIn | None = Field(default=None, description="which of the group's meters; all if null")
    delivery: Literal["csv", "sms", "attach"] = "attach"
    batch_size: Annotated[int, Field(strict=True, ge=1, le=1_000_000)] = 10_000


class MarksIn(Body):
    meters: Annotated[list[Drn], Field(min_length=1, max_length=10_000)]
    status: Literal["delivered", "confirmed"]


# ---------------------------------------------------------------------- responses

T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next: int | None = Field(description="pass as ?after= for the next page; null on the last page")


class VendingKeyOut(BaseModel):
    krn: int
    dkga: int
    kcv: str = Field(description="key check value: compare keys without seeing them")
    status: str | None = Field(None, description="pending, active, retired or destroyed")
    keystore: str | None = Field(None, description="software or pkcs11")


class SupplyGroupOut(BaseModel):
    id: int
    sgc: str
    name: str
    krn: int
    kt: int
    ea: int
    dkga: int
    base_date: int
    ken: int
    key_expiry: str | None = Field(None, description="issued-until date of the current vending key")
    created_at: str
    vending_keys: list[VendingKeyOut] | None = None


class VendorOut(BaseModel):
    id: int
    name: str
    credit_limit: int | None
    balance: int
    created_at: str


class CustomerOut(BaseModel):
    id: int
    account: str
    name: str
    phone: str | None
    fbe_eligible: bool
    debt: int
    debt_rate: str
    carried: int
    refund_balance: int
    created_at: str


class MeterOut(BaseModel):
    id: int
    drn: str
    iin: str
    manufacturer: str
    supply_group_id: int
    customer_id: int | None
    tariff_id: int | None
    utility: str
    ti: int
    kt: int
    krn: int
    ea: int
    base_date: int
    ken: int
    status: str
    last_tid: int
    pending_key: dict[str, Any] | None = Field(description="a key configuration sold but not yet confirmed")
    created_at: str
    area: str = Field("", description="where the meter is (campaigns select meters by it)")


class TariffVersionOut(BaseModel):
    effective_from: str
    spec: dict[str, Any]


class TariffOut(BaseModel):
    id: int
    name: str
    currency: str
    carry_leftover: bool
    created_at: str
    versions: list[TariffVersionOut] | None = None


class AuditOut(BaseModel):
    id: int
    at: str
    actor: str
    action: str
    entity: str
    entity_id: str
    detail: dict[str, Any]


class KeyChangeOut(BaseModel):
    meter: str
    key: dict[str, Any]


# Vend, quote and reprint answers are built by the service and sent as they are (the hot path is not
# re-validated); these models document them.


class TokenOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    seq: int
    kind: str = Field(examples=["credit"], description="credit, fbe, key_change or engineering")
    digits: str = Field(examples=["12345678901234567890"])
    tid: int | None
    class_: int = Field(alias="class")
    subclass: int
    units: int = Field(description="0.1 kWh (base units)")


class BlockCharge(BaseModel):
    units: int
    kwh: str
    price: str
    charge: int


class Receipt(BaseModel):
    currency: str
    paid: int
    carried_in: int
    debt_recovered: int
    fixed_charge: int
    fixed_vat: int
    blocks: list[BlockCharge]
    energy_charge: int
    energy_vat: int
    vat: int
    leftover: int
    leftover_policy: Literal["carry", "refund"]
    units: int
    kwh: str
    fbe_units: int


class KeyWarning(BaseModel):
    code: str = Field(examples=["key_expiring"], description="key_expiring, ken_expiring, tid_rollover, key_expired")
    detail: str


class KeyConfigOut(BaseModel):
    """The key configuration tokens were made under (a purchase's, or a key change's target)."""

    sgc: str
    krn: int
    kt: int
    ti: int
    ea: int = Field(description="encryption algorithm: 7 (STA) or 11 (MISTY1)")
    base_date: int = Field(description="1993, 2014 or 2035: TIDs count minutes from it")
    ken: int = Field(description="key expiry number: meters refuse tokens with TID >> 16 above it")


class VendOut(BaseModel):
    id: str
    meter: str
    created_at: str
    tokens: list[TokenOut]
    receipt: dict[str, Any] = Field(description="a Receipt for purchases; {engineering, value} otherwise")
    key: KeyConfigOut | None = Field(default=None, description="purchases: the key the credit was made under")
    warnings: list[KeyWarning] | None = Field(
        default=None, description="purchases: the vending key, its KEN or its base date end soon"
    )
    status: str | None = Field(default=None, description="completed or reversed (reads only)")
    reprint: bool | None = None


class QuoteOut(BaseModel):
    meter: str
    receipt: Receipt
    quoted_at: str


class Health(BaseModel):
    status: str
    database: str


class Probe(BaseModel):
    status: Literal["alive", "ready"]
    database: str | None = Field(default=None, description="the database's kind (sqlite, postgresql) when ready")


# --- vending keys, key changes and campaigns


class VendingKeyCreated(BaseModel):
    id: int
    sgc: str
    krn: int
    dkga: int
    kcv: str = Field(description="key check value: compare keys without seeing them")
    keystore: str


class KeyStatusOut(BaseModel):
    sgc: str
    krn: int
    dkga: int
    kcv: str
    keystore: str
    status: str = Field(description="pending, active, retired or destroyed")
    current: bool = Field(description="the supply group vends under this key")
    ken: int
    issued_until: str | None
    ken_expires: str | None = Field(description="meters refuse tokens issued from then on (KEN)")
    credit_limit: int | None
    credit_issued: int
    warnings: list[KeyWarning]


class KeyHistoryOut(BaseModel):
    at: str
    actor: str
    action: str
    krn: int | None = None
    previous_krn: int | None = None
    dkga: int | None = None
    keystore: str | None = None
    kcv: str | None = None
    ken: int | None = None
    generated: bool | None = None
    base_date: int | None = None
    ea: int | None = None
    kt: int | None = None


class KeyChangeEntryOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: int
    via: str = Field(description="operator, campaign or vend")
    campaign: int | None
    vend: str | None
    status: str = Field(description="planned, issued, delivered, confirmed or cancelled")
    from_: dict[str, Any] | None = Field(alias="from")
    to: dict[str, Any] | None
    tokens: list[str] | None
    issued_at: str | None
    delivered_at: str | None
    confirmed_at: str | None


class AcceptedOut(BaseModel):
    meter: str
    key: dict[str, Any] | None = Field(None, description="the key configuration now current")
    already_confirmed: bool | None = None


class CampaignCounts(BaseModel):
    planned: int
    issued: int
    delivered: int
    confirmed: int
    cancelled: int


class CampaignOut(BaseModel):
    id: int
    name: str
    sgc: str
    selection: dict[str, Any]
    target: dict[str, Any]
    delivery: str
    batch_size: int
    batches: int
    planned: int
    status: str = Field(description="planned, generating, generated or closed")
    created_at: str
    meters: CampaignCounts = Field(description="how many of the campaign's meters are at each step")


class SmsQueuedOut(BaseModel):
    queued: int


class MarksOut(BaseModel):
    marked: int
    not_in_campaign: int
