"""Bodies of the retail tills' routes (``/v1/pos``, Electrum PUSI semantics: :mod:`mita.channels.pos`).

Like :mod:`.models`: allow-lists, every field described, money in minor units, times in RFC 3339 with the
utility's offset. A purchase's answer carries the vend as ``POST /v1/vends`` gives it.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path
from pydantic import BaseModel, Field

from mita.vend import limits
from mita.vend.lifecycles import PosStatus

from . import models as m

ClientId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=limits.IDEMPOTENCY_KEY,
        pattern=m.PRINTABLE,
        description="an id the till made for this request (a UUID v4): the same id is the same request",
        examples=["6f1c2a9e-3b7d-4e55-9a0c-1d2e3f4a5b6c"],
    ),
]
PurchaseId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=limits.IDEMPOTENCY_KEY,
        pattern=m.PRINTABLE,
        description="the till's id of the purchase (a UUID v4): the vend's idempotency key under the till's API key",
        examples=["0b6f5d1e-8c44-4a1f-b2c3-9d8e7f6a5b4c"],
    ),
]
AdviceId = Annotated[
    str,
    Path(
        min_length=1,
        max_length=limits.IDEMPOTENCY_KEY,
        pattern=m.PRINTABLE,
        description="the till's id of this advice (a UUID v4); the till sends it again until a final answer",
        examples=["c3d2e1f0-1a2b-4c3d-8e9f-0a1b2c3d4e5f"],
    ),
]


class PosPurchaseIn(m.Body):
    model_config = m._example(meter="47500150231", amount=5000)

    meter: m.Drn
    amount: m.Amount = Field(description="money paid at the till, minor units of the tariff's currency (cents)")
    include_key_change: bool = Field(
        default=True,
        description="a meter due a key change gets its key change tokens first, in the same answer (PUSI's KCT "
        "riding with the purchase); false: refused with key_change_required instead",
    )


class PosTrialIn(m.Body):
    model_config = m._example(meter="47500150231", amount=5000)

    meter: m.Drn
    amount: m.Amount = Field(description="money to be paid, minor units of the tariff's currency (cents)")


class PosReprintIn(m.Body):
    model_config = m._example(purchase_id="0b6f5d1e-8c44-4a1f-b2c3-9d8e7f6a5b4c")

    purchase_id: Annotated[str, Field(min_length=1, max_length=limits.IDEMPOTENCY_KEY, pattern=m.PRINTABLE)] | None = (
        Field(default=None, description="the purchase to print again (one of purchase_id and meter)")
    )
    meter: m.Drn | None = Field(
        default=None, description="or a meter: its last purchase that this till's vendor made (one of the two)"
    )


class PosPurchaseOut(BaseModel):
    purchase_id: str = Field(description="the till's id of the purchase")
    status: PosStatus = Field(description="issued (awaiting the till's confirmation), confirmed or reversed")
    vend: m.VendOut = Field(description="the vend: its tokens in the order to enter them, and the receipt")


class PosAdviceOut(BaseModel):
    purchase_id: str = Field(description="the till's id of the purchase")
    status: PosStatus = Field(description="where the purchase is now: issued, confirmed or reversed")
    advice_id: str | None = Field(
        description="the advice that made it final (null: settled without one, after the confirmation window)"
    )
    vend_id: str = Field(description="the vend's UUID")
    settled_at: m.Timestamp | None = Field(description="RFC 3339: when it was confirmed or reversed")


class PosTrialOut(BaseModel):
    request_id: str = Field(description="the till's id of the trial")
    meter: str = Field(description="meter number (DRN)")
    receipt: m.Receipt = Field(description="what the amount would buy now; nothing was issued")
    quoted_at: m.Timestamp = Field(description="RFC 3339: when it was priced")


class PosReprintOut(BaseModel):
    reprint_id: str = Field(description="the till's id of the reprint")
    purchase_id: str | None = Field(description="the purchase asked for (null: asked by meter)")
    vend: m.VendOut = Field(description="the vend again, marked reprint: true (audited)")
