"""Bodies of the operators' payment routes (``/v1/payments``): payments as the channels keep them, their events,
and a person's refund or resolution. Like :mod:`.models`: allow-lists, every field described, money in minor
units, times in RFC 3339 with the utility's offset."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Path, Query
from pydantic import BaseModel, Field

from mita.vend import limits
from mita.vend.lifecycles import PaymentStatus

from . import models as m
from .deps import ID_MAX

PaymentId = Annotated[int, Path(ge=1, le=ID_MAX, description="the payment's id")]
StatusFilter = Annotated[PaymentStatus | None, Query(description="only payments in this state")]
ProviderFilter = Annotated[
    str | None, Query(max_length=20, pattern=m.PRINTABLE, description="only this provider's (mpesa, ...)")
]
MeterFilter = Annotated[str | None, Query(max_length=32, pattern=m.PRINTABLE, description="meter number (DRN)")]
Note = Annotated[str, Field(min_length=1, max_length=limits.REASON, pattern=m.PRINTABLE)]


class PaymentOut(BaseModel):
    id: int = Field(description="the payment's id")
    provider: str = Field(description="who took the money: mpesa, ...")
    kind: str = Field(description="how: c2b (the payer paid the paybill), stk (Mita asked the payer's phone)")
    provider_ref: str = Field(description="the provider's transaction id, or Mita's purchase code of a push")
    checkout_id: str | None = Field(description="a push's id at the provider (STK CheckoutRequestID)")
    receipt: str | None = Field(description="the provider's receipt number, once known")
    account_ref: str = Field(description="what the payer typed or was shown (a meter number, a purchase code)")
    meter: str | None = Field(description="the meter it is for (null: none matched)")
    amount: int = Field(description="money paid, minor units")
    currency: str = Field(description="ISO 4217 currency code")
    payer: str = Field(description="the payer as the provider gives it (a C2B payer's number is masked)")
    deliver_to: str | None = Field(description="the phone the token goes to (never a masked number)")
    status: PaymentStatus = Field(description="where the payment is (docs/channels.md: the payment lifecycle)")
    verified: bool = Field(description="seen in the provider's own records (a query, the pull), not only a callback")
    vend_id: str | None = Field(description="the vend it bought, once vended")
    detail: str | None = Field(description="why it is where it is, in plain words")
    refund_ref: str | None = Field(description="the provider's reference of its refund")
    created_at: m.CreatedAt
    updated_at: m.Timestamp = Field(description="RFC 3339: when its state last changed")


class PaymentEventOut(BaseModel):
    id: int = Field(description="the event's id")
    source: str = Field(description="what said it: c2b_confirm, stk_callback, stk_query, pull, initiate, operator...")
    at: m.Timestamp = Field(description="RFC 3339: when it was received")
    body: dict[str, Any] = Field(description="what the provider (or the person) said, as received")


class PaymentDetailOut(PaymentOut):
    events: list[PaymentEventOut] = Field(description="everything said about it, oldest first")


class PaymentPage(BaseModel):
    items: list[PaymentOut] = Field(description="the payments of this page, newest first")
    next: str | None = Field(
        description="pass as ?after= for the next (older) page, unchanged; null on the last page",
        examples=["MjAyNi0wMy0xMFQwOTozMTowMHw0Mg"],
    )


class RefundIn(m.Body):
    model_config = m._example(note="meter number mistyped; the customer asked for the money back")

    note: Note = Field(description="why, for the payment and the audit")


class ResolveIn(m.Body):
    model_config = m._example(action="vend", meter="47500150231", note="customer called: the meter is 47500150231")

    action: Literal["vend", "close"] = Field(
        description="vend: sell it after all (to `meter` if given: the corrected number); close: the token reached "
        "the customer by other means (read out on the phone, printed at an office)"
    )
    meter: m.Drn | None = Field(default=None, description="the corrected meter number (vend only)")
    note: Note = Field(description="what was found and done, for the payment and the audit")
