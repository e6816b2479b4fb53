"""What Daraja (Safaricom's M-Pesa API) sends and expects, read defensively: pure, no I/O.

Daraja's bodies are not consistent: a ``ResultCode`` is a number in a callback and a string in a query answer (and
an int on a reversal's success, a string on its failure); ``Balance`` comes without a ``Value``; dates and phone
numbers arrive as JSON numbers; a C2B payer's number is masked (``2547 ***** 126``). Everything here is normalised
to text and integers, and anything that is not a Daraja body is a :class:`~mita.vend.errors.VendError`
``mpesa_bad_message``, never another exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from mita import sts
from mita.vend.errors import VendError

#: A push's result code and what it means for the payment (Daraja's table; 4999 and the "being processed" answer of
#: a query mean: not decided yet).
RESULTS: dict[str, tuple[str, str]] = {
    "0": ("paid", "paid"),
    "1": ("failed", "insufficient balance"),
    "2": ("failed", "below the minimum"),
    "3": ("failed", "above the maximum"),
    "4": ("failed", "daily limit reached"),
    "8": ("failed", "the paybill's balance limit"),
    "17": ("failed", "the same amount within 2 minutes"),
    "1001": ("failed", "the subscriber is locked"),
    "1019": ("expired", "the transaction expired"),
    "1025": ("failed", "the prompt could not be sent"),
    "1032": ("cancelled", "cancelled by the payer"),
    "1037": ("expired", "the phone could not be reached"),
    "2001": ("failed", "wrong PIN"),
    "2028": ("failed", "transaction type and paybill do not match"),
    "4999": ("pending", "still processing"),
    "8006": ("failed", "security credential locked"),
    "9999": ("failed", "general error"),
}
PENDING_ERRORS = frozenset({"500.001.1001"})  # a query's "The transaction is being processed"

#: C2B validation answers: accept, or refuse with Daraja's documented codes.
ACCEPT = {"ResultCode": "0", "ResultDesc": "Accepted"}
INVALID_ACCOUNT, INVALID_AMOUNT, OTHER = "C2B00012", "C2B00013", "C2B00016"
#: What Mita answers a confirmation or a result once it is stored.
RECEIVED = {"ResultCode": 0, "ResultDesc": "Accepted"}


#: The characters of a purchase code after its ``P`` (:func:`mita.channels.payments.purchase_code`).
BASE32 = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")


def refuse(code: str) -> dict[str, str]:
    return {"ResultCode": code, "ResultDesc": "Rejected"}


def _bad(what: str) -> VendError:
    return VendError("mpesa_bad_message", what)


def _text(body: Mapping[str, Any], name: str, most: int = 64, required: bool = True) -> str:
    value = body.get(name)
    if value is None or value == "":
        if required:
            raise _bad(f"{name} is missing")
        return ""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _bad(f"{name} is not text")
    text = str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)
    if len(text) > most or any(ord(c) < 32 for c in text):
        raise _bad(f"{name} is too long or holds control characters")
    return text.strip()


def minor_units(value: Any) -> int:
    """An amount in shillings ("5.00", 5, 1.0) as cents; refused if negative, fractional below a cent, or absurd."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise _bad("the amount is not a number")
    try:
        amount = Decimal(str(value).strip()) * 100
    except InvalidOperation:
        raise _bad("the amount is not a number") from None
    if not amount.is_finite() or amount != amount.to_integral_value() or not 0 < amount < 10**12:
        raise _bad("the amount is out of range")
    return int(amount)


def account(reference: str) -> tuple[str | None, str | None]:
    """What a payer typed as the account (a C2B ``BillRefNumber``) or was shown (an STK ``AccountReference``):
    ``(meter number, None)`` for a meter number with a valid check digit (11 or 13 digits; spaces and dashes
    allowed), ``(None, code)`` for a purchase code, ``(None, None)`` for anything else."""
    cleaned = reference.replace(" ", "").replace("-", "").strip().upper()  # a payer may type the code in any case
    if len(cleaned) == 11 and cleaned.startswith("P") and set(cleaned[1:]) <= BASE32:
        return None, cleaned
    if cleaned.isdigit() and len(cleaned) in (11, 13):
        try:
            return sts.MeterNumber.parse(cleaned).drn, None
        except sts.StsError:
            return None, None
    return None, None


@dataclass(frozen=True)
class C2B:
    """A C2B validation or confirmation (the same body)."""

    trans_id: str
    amount: int  # minor units
    bill_ref: str
    shortcode: str
    msisdn: str  # masked: never a delivery address
    trans_time: str
    third_party_id: str


def c2b(body: Any, *, validation: bool = False) -> C2B:
    """A C2B body; a validation's may come without its TransID (the payment is not made yet)."""
    if not isinstance(body, Mapping):
        raise _bad("a C2B body is a JSON object")
    return C2B(
        trans_id=_text(body, "TransID", 20, required=not validation),
        amount=minor_units(body.get("TransAmount")),
        bill_ref=_text(body, "BillRefNumber", 40, required=False),
        shortcode=_text(body, "BusinessShortCode", 20),
        msisdn=_text(body, "MSISDN", 40, required=False),
        trans_time=_text(body, "TransTime", 20, required=False),
        third_party_id=_text(body, "ThirdPartyTransID", 64, required=False),
    )


@dataclass(frozen=True)
class StkResult:
    """A push's outcome: from its callback, or from a query (which carries no receipt)."""

    checkout_id: str
    code: str
    description: str
    receipt: str | None = None
    amount: int | None = None
    phone: str | None = None

    @property
    def outcome(self) -> str:
        """paid, cancelled, failed, expired or pending (an unknown code: failed, with its description kept)."""
        return RESULTS.get(self.code, ("failed", ""))[0]


def stk_callback(body: Any) -> StkResult:
    try:
        cb = body["Body"]["stkCallback"]
    except (KeyError, TypeError):
        raise _bad("an STK callback has Body.stkCallback") from None
    if not isinstance(cb, Mapping):
        raise _bad("an STK callback has Body.stkCallback")
    items: dict[str, Any] = {}
    meta = cb.get("CallbackMetadata")
    if isinstance(meta, Mapping) and isinstance(meta.get("Item"), list):
        for item in meta["Item"]:
            if isinstance(item, Mapping) and isinstance(item.get("Name"), str):
                items[item["Name"]] = item.get("Value")  # Balance may come without a Value
    code = _text(cb, "ResultCode", 12)
    paid = code == "0"
    return StkResult(
        checkout_id=_text(cb, "CheckoutRequestID", 64),
        code=code,
        description=_text(cb, "ResultDesc", 200, required=False),
        receipt=_text(items, "MpesaReceiptNumber", 20) if paid else None,
        amount=minor_units(items["Amount"]) if paid and "Amount" in items else None,
        phone=_text(items, "PhoneNumber", 20, required=False) or None if paid else None,
    )


def stk_query_answer(body: Any) -> StkResult:
    """A query's answer; "still processing" (an error body or 4999) is outcome ``pending``."""
    if not isinstance(body, Mapping):
        raise _bad("a query answer is a JSON object")
    if body.get("errorCode") in PENDING_ERRORS:
        return StkResult(str(body.get("CheckoutRequestID", "")), "4999", "being processed")
    if "errorCode" in body:
        raise VendError("mpesa_unavailable", f"Daraja answered the query with {_text(body, 'errorCode', 20)}")
    return StkResult(
        checkout_id=_text(body, "CheckoutRequestID", 64),
        code=_text(body, "ResultCode", 12),
        description=_text(body, "ResultDesc", 200, required=False),
    )


@dataclass(frozen=True)
class Result:
    """An asynchronous result (Transaction Status, Reversal) posted to the ResultURL."""

    conversation_id: str
    originator_id: str
    code: str
    description: str
    transaction_id: str
    parameters: Mapping[str, str]

    @property
    def ok(self) -> bool:
        return self.code == "0"

    @property
    def is_status(self) -> bool:
        """A Transaction Status result (it reports a ``TransactionStatus``), not a reversal's."""
        return "TransactionStatus" in self.parameters

    @property
    def reversed_receipt(self) -> str | None:
        """The receipt a Transaction Status result says was reversed: the proof a refund whose own result was lost
        happened after all. Anything else (completed, not found) proves nothing."""
        if self.ok and self.parameters.get("TransactionStatus", "").strip().lower() == "reversed":
            return self.parameters.get("ReceiptNo") or self.transaction_id or None
        return None


def result(body: Any) -> Result:
    try:
        r = body["Result"]
    except (KeyError, TypeError):
        raise _bad("a result has Result") from None
    if not isinstance(r, Mapping):
        raise _bad("a result has Result")
    params: dict[str, str] = {}
    holder = r.get("ResultParameters")
    rows = holder.get("ResultParameter") if isinstance(holder, Mapping) else None
    for row in rows if isinstance(rows, list) else [rows] if isinstance(rows, Mapping) else []:
        if isinstance(row, Mapping) and isinstance(row.get("Key"), str):
            params[row["Key"]] = "" if row.get("Value") is None else str(row.get("Value"))[:200]
    return Result(
        conversation_id=_text(r, "ConversationID", 64, required=False),
        originator_id=_text(r, "OriginatorConversationID", 64, required=False),
        code=_text(r, "ResultCode", 12),
        description=_text(r, "ResultDesc", 200, required=False),
        transaction_id=_text(r, "TransactionID", 20, required=False),
        parameters=params,
    )


@dataclass(frozen=True)
class PullRow:
    """A completed transaction from the Pull Transactions API (the last 48 hours)."""

    trans_id: str
    amount: int
    bill_ref: str
    msisdn: str
    at: str


def pull_page(body: Any) -> list[PullRow]:
    """One page of a pull; an empty list when there are no (more) rows (``ResponseCode`` 1001)."""
    if not isinstance(body, Mapping):
        raise _bad("a pull answer is a JSON object")
    code = str(body.get("ResponseCode", ""))
    if code == "1001":
        return []
    if code != "1000":
        raise VendError("mpesa_unavailable", f"the pull answered {code[:20] or 'nothing'}")
    rows = body.get("Response")
    if not isinstance(rows, list):
        raise _bad("a pull answer has a Response list")
    out = []
    for row in (r for page in rows for r in (page if isinstance(page, list) else [page])):
        if not isinstance(row, Mapping):
            raise _bad("a pull row is an object")
        out.append(
            PullRow(
                trans_id=_text(row, "transactionId", 20),
                amount=minor_units(row.get("amount")),
                bill_ref=_text(row, "billreference", 40, required=False),
                msisdn=_text(row, "msisdn", 40, required=False),
                at=_text(row, "trxDate", 40, required=False),
            )
        )
    return out
