"""What customers can ask by SMS, and the answers: the grammar is pure (:func:`parse`), the acting is not (:func:`act`).

- ``BUY <meter> <amount>``: an M-Pesa prompt to the sender's phone for ``amount`` (whole currency units); the
  token follows by SMS;
- ``LAST <meter>`` (or ``TOKEN``): the meter's last token again, only to the phone registered with the meter;
- ``BAL <meter>`` (or ``BALANCE``): the meter's last purchase, when, how much, what it bought (same rule);
- anything else: how to ask.

An SMS is not a payment: ``BUY`` starts one (an STK push to the sender, whose number the operator vouches for). A
message Kannel delivers twice is stored and answered once (its id, Kannel's ``%I``, is the same on every retry), and
the answer leaves through the outbox, never as the HTTP body (Kannel's ``max-messages = 0``: no reply loops).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import select

from mita import sts
from mita.outbox.queue import Outgoing, enqueue_many
from mita.vend.errors import VendError
from mita.vend.schema import sms_inbound

from .. import texts
from ..payments import Payments, dialect_of

HELP = "Send BUY <meter> <amount>, LAST <meter> or BAL <meter>."
MAX_AMOUNT = 100_000  # whole currency units in one SMS purchase
VERBS = {"BUY": "buy", "LAST": "last", "TOKEN": "last", "BAL": "bal", "BALANCE": "bal"}


@dataclass(frozen=True)
class Command:
    verb: str  # buy, last, bal, help
    meter: str = ""
    amount: int = 0  # whole currency units
    problem: str = ""  # why it is not understood (verb help)


def parse(text: str) -> Command:
    """A message's command; anything not understood is ``help`` with the reason. Words are split on spaces: a
    meter number may be typed in groups (``4750 0150 231``), so for BUY the amount is the last word."""
    words = text[:200].split()
    if not words or words[0].upper() not in VERBS:
        return Command("help", problem=HELP)
    verb = VERBS[words[0].upper()]
    rest = words[1:]
    amount_text = rest.pop() if verb == "buy" and rest else ""
    number = "".join(rest).replace("-", "")
    if not number.isdigit():
        return Command("help", problem=HELP)
    try:
        meter = sts.MeterNumber.parse(number).drn
    except sts.StsError:
        return Command("help", problem="That meter number is not valid: check its digits. " + HELP)
    if verb != "buy":
        return Command(verb, meter)
    amount = int(amount_text) if amount_text.isdigit() and len(amount_text) < 10 else 0
    if not 0 < amount <= MAX_AMOUNT:
        return Command("help", problem=f"Send BUY <meter> <amount>, an amount of 1 to {MAX_AMOUNT}.")
    return Command("buy", meter, amount)


def answer(pay: Payments, command: Command, phone: str, origin: str) -> str:
    """Act on a command (a push for ``buy``); the reply's text."""
    if command.verb == "help":
        return command.problem
    if command.verb == "buy":
        try:
            pay.initiate("mpesa", origin, command.meter, command.amount * 100, phone, channel="mpesa.stk")
        except VendError as exc:
            return f"Sorry, that purchase cannot start ({exc.code})."
        return f"Approve the M-Pesa prompt on your phone to pay {command.amount} for meter {command.meter}."
    if not same_phone(pay.service.registry.meter_phone(command.meter), phone):
        return f"Meter {command.meter}: answers go only to the phone registered with the meter."
    last = pay.last_purchase(command.meter)
    if last is None:
        return f"Meter {command.meter} has no purchase yet."
    if command.verb == "last":
        return texts.token_sms(last)
    receipt = last.get("receipt") or {}
    return (f"Meter {command.meter}: last purchase {last['created_at'][:16]}, {last.get('currency', '')} "
            f"{last['amount'] // 100}, {receipt.get('quantity', '')} {receipt.get('unit', '')}.")  # fmt: skip


def same_phone(registered: str | None, sender: str) -> bool:
    """The digits alone compared (``+254 712-345678`` is ``254712345678``), never a suffix: a near miss is a
    stranger, and a stranger never gets a meter's token."""
    digits = "".join(c for c in sender if c.isdigit())
    return registered is not None and len(digits) >= 7 and "".join(c for c in registered if c.isdigit()) == digits


def receive(pay: Payments, gateway_id: str, phone: str, text: str) -> bool:
    """An inbound SMS: stored, acted on and answered once per gateway id; False if it was seen before."""
    gateway_id, phone = gateway_id[:64], phone.lstrip("+")[:30]
    with pay.engine.connect() as conn:
        if conn.execute(select(sms_inbound.c.id).where(sms_inbound.c.gateway_id == gateway_id)).first():
            return False
    reply = texts.reply(answer(pay, parse(text), phone, f"sms:{gateway_id}"))
    at: dt.datetime = pay.clock()
    with pay.engine.begin() as conn:
        new = conn.execute(
            dialect_of(conn)
            .insert(sms_inbound)
            .values(gateway_id=gateway_id, phone=phone, text=text[:400], answer=reply, at=at)
            .on_conflict_do_nothing()
        ).rowcount
        if new:
            payload = {"kind": "reply", "text": reply}
            enqueue_many(conn, [Outgoing("sms", phone, f"sms:reply:{gateway_id}", payload, at)])
    return bool(new)
