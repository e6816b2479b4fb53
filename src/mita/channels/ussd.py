"""The USSD menu (Africa's Talking's contract), as a pure transition table over the session's input history.

The aggregator posts every hop with ``text``: all the inputs of the session so far joined by ``*`` (empty on the
first hop). The menu keeps no state of its own: :func:`step` folds the history through :data:`NODES` and says which
screen to show and what the route must do (:class:`Effect`): nothing, price the purchase (a quote), start the
payment, show the last token, show the balance. The same history always gives the same screen, so a repeated hop
(the aggregator retries after a slow answer) answers the same, and a hop after ``END`` changes nothing.

::

    main ─1─> buy: meter ──> amount ──> confirm (quote) ─1─> pay (END; the STK push after the session)
      │                                    └─2─> cancelled (END)
      ├─2─> last token: meter ──> last (END; only to the phone registered with the meter)
      └─3─> balance: meter ──> balance (END; same rule)

``0`` goes back one screen, ``00`` to the main menu; an input a screen does not take shows the screen again with
what was wrong. A screen is at most :data:`SCREEN_MAX` characters with its ``CON``/``END``, GSM-7 only.

Other aggregators send only the latest input (Hollatags, Sendexa): :func:`append` turns their hops into this
history, given the session's history so far (kept by their route, e.g. by session id; not built yet).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from mita import sts

from . import texts

#: One USSD screen: 182 characters, counted here with the ``CON ``/``END `` the aggregator strips.
SCREEN_MAX = 182
#: Inputs one session may hold (the aggregator's session lasts 180 s): beyond, the menu ends.
MAX_INPUTS = 30
#: Whole currency units one USSD purchase may ask for (an STK push takes whole units).
MAX_AMOUNT = 100_000
BACK, HOME = "0", "00"


class State(StrEnum):
    MAIN = "main"
    BUY_METER = "buy_meter"
    BUY_AMOUNT = "buy_amount"
    CONFIRM = "confirm"
    PAY = "pay"
    CANCELLED = "cancelled"
    LAST_METER = "last_meter"
    LAST = "last"
    BALANCE_METER = "balance_meter"
    BALANCE = "balance"
    ENDED = "ended"  # a hop after the session's END
    TOO_LONG = "too_long"


class Effect(StrEnum):
    """What the route does for a screen (the I/O the table leaves out)."""

    NONE = "none"
    QUOTE = "quote"  # price meter and amount (VendingService.quote), then :func:`quoted` or :func:`refused`
    PAY = "pay"  # price again, then Payments.initiate (the push is due after the session ends)
    LAST = "last"  # the meter's last token (:func:`last_token`)
    BALANCE = "balance"  # the meter's last purchase (:func:`balance`)


@dataclass(frozen=True)
class Node:
    """A screen: its prompt, how it reads an input (a choice, a meter number, an amount) and where that leads;
    ``end`` screens close the session."""

    prompt: str
    choices: Mapping[str, State] | None = None
    reads: str | None = None  # "meter" or "amount"
    then: State | None = None
    effect: Effect = Effect.NONE
    end: bool = False


@dataclass(frozen=True)
class Menu:
    """What the screens say that is the utility's: its name and the currency customers pay in."""

    title: str = "Mita prepaid"
    currency: str = "KES"


S = State
#: The menu. Prompts are templates over ``title``, ``currency``, ``meter`` and ``amount``.
NODES: dict[State, Node] = {
    S.MAIN: Node(
        "{title}\n1. Buy tokens\n2. Last token\n3. Balance",
        choices={"1": S.BUY_METER, "2": S.LAST_METER, "3": S.BALANCE_METER},
    ),
    S.BUY_METER: Node("Buy tokens\nEnter the meter number\n0 Back", reads="meter", then=S.BUY_AMOUNT),
    S.BUY_AMOUNT: Node("Meter {meter}\nEnter the amount in {currency}\n0 Back", reads="amount", then=S.CONFIRM),
    S.CONFIRM: Node(
        "Meter {meter}\nPay {currency} {amount}?\n1. Pay\n2. Cancel\n0 Back",
        choices={"1": S.PAY, "2": S.CANCELLED},
        effect=Effect.QUOTE,
    ),
    S.PAY: Node(
        "Approve the M-Pesa prompt on your phone to pay {currency} {amount} for meter {meter}. The token comes by SMS.",
        effect=Effect.PAY,
        end=True,
    ),
    S.CANCELLED: Node("Cancelled. Nothing was paid.", end=True),
    S.LAST_METER: Node("Last token\nEnter the meter number\n0 Back", reads="meter", then=S.LAST),
    S.LAST: Node("Meter {meter}", effect=Effect.LAST, end=True),
    S.BALANCE_METER: Node("Balance\nEnter the meter number\n0 Back", reads="meter", then=S.BALANCE),
    S.BALANCE: Node("Meter {meter}", effect=Effect.BALANCE, end=True),
    S.ENDED: Node("This session has ended. Dial again to start over.", end=True),
    S.TOO_LONG: Node("Too many steps. Dial again to start over.", end=True),
}
#: What a screen says when an input was not what it takes.
PROBLEMS = {
    "choice": "Choose one of the numbers shown.",
    "meter": "That meter number is not valid: check its digits.",
    "amount": f"Enter a whole amount from 1 to {MAX_AMOUNT}.",
}
#: What a refusal of the vending service means to the customer (anything else: the purchase cannot be made now).
REFUSALS = {
    "not_found": "Meter {meter} is not registered. Check the number.",
    "meter_blocked": "Meter {meter} cannot buy tokens now. Call the utility.",
    "invalid_amount": "{currency} {amount} is not an amount meter {meter} can buy.",
    "amount_too_small": "{currency} {amount} is too little for meter {meter}: it does not cover the charges due.",
    "no_tariff": "Meter {meter} cannot buy tokens now. Call the utility.",
}


@dataclass(frozen=True)
class Screen:
    """What the aggregator shows: ``CON`` (the session goes on) or ``END``, and the text."""

    end: bool
    text: str

    @property
    def body(self) -> str:
        """The answer's body: ``CON ...``/``END ...``, GSM-7, at most :data:`SCREEN_MAX` characters."""
        return (("END " if self.end else "CON ") + texts.gsm7(self.text))[:SCREEN_MAX]


@dataclass(frozen=True)
class Step:
    """Where a session's history leads: the state, its screen, what the route must do, and what was entered."""

    state: State
    screen: Screen
    effect: Effect
    meter: str | None = None
    amount: int | None = None  # whole currency units
    menu: Menu = Menu()

    def fields(self) -> dict[str, Any]:
        return {"title": self.menu.title, "currency": self.menu.currency, "meter": self.meter, "amount": self.amount}


# ---------------------------------------------------------------------- the fold


def inputs(text: str) -> list[str]:
    """The session's inputs, oldest first (an empty text: none, the first hop)."""
    return [] if not text else text.split("*")


def append(history: str, latest: str | None) -> str:
    """For aggregators that send only the latest input: the history with ``latest`` added (None: the first hop)."""
    if latest is None:
        return history
    return latest if not history else f"{history}*{latest}"


def _meter(raw: str) -> str | None:
    digits = raw.replace(" ", "")
    if not digits.isdigit() or not 8 <= len(digits) <= 20:
        return None
    try:
        return sts.MeterNumber.parse(digits).drn
    except (sts.StsError, ValueError):
        return None


def _amount(raw: str) -> int | None:
    digits = raw.strip()
    if not digits.isdigit() or len(digits) > 7:
        return None
    value = int(digits)
    return value if 1 <= value <= MAX_AMOUNT else None


def step(text: str, menu: Menu = Menu()) -> Step:
    """The screen for a session's ``text`` (every input so far, ``*``-joined): a pure function of it."""
    trail: list[State] = [S.MAIN]
    meter: str | None = None
    amount: int | None = None
    problem: str | None = None
    given = inputs(text)
    if len(given) > MAX_INPUTS:
        return _step(S.TOO_LONG, None, meter, amount, menu)
    for raw in given:
        node = NODES[trail[-1]]
        if node.end:
            return _step(S.ENDED, None, meter, amount, menu)
        problem = None
        entered = raw.strip()
        if entered == HOME:
            trail = [S.MAIN]
            continue
        if entered == BACK and len(trail) > 1:
            trail.pop()
            continue
        if node.choices is not None:
            chosen = node.choices.get(entered)
            if chosen is None:
                problem = PROBLEMS["choice"]
                continue
            trail.append(chosen)
        elif node.reads == "meter":
            found = _meter(entered)
            if found is None:
                problem = PROBLEMS["meter"]
                continue
            meter = found
            assert node.then is not None
            trail.append(node.then)
        else:
            value = _amount(entered)
            if value is None:
                problem = PROBLEMS["amount"]
                continue
            amount = value
            assert node.then is not None
            trail.append(node.then)
    return _step(trail[-1], problem, meter, amount, menu)


def _step(state: State, problem: str | None, meter: str | None, amount: int | None, menu: Menu) -> Step:
    node = NODES[state]
    fields = {"title": menu.title, "currency": menu.currency, "meter": meter, "amount": amount}
    prompt = node.prompt.format(**fields)
    text = f"{problem}\n{prompt}" if problem else prompt
    effect = node.effect if problem is None else Effect.NONE  # a screen shown again does nothing again
    return Step(state, Screen(node.end, text), effect, meter, amount, menu)


# ---------------------------------------------------------------------- screens the route fills in


def quoted(s: Step, receipt: Mapping[str, Any]) -> Screen:
    """The confirmation screen with what the amount buys (the quote's receipt)."""
    quantity, unit = receipt.get("quantity"), receipt.get("unit") or ""
    lines = [f"Meter {s.meter}", f"{s.menu.currency} {s.amount} buys {quantity} {unit}".rstrip()]
    debt = receipt.get("debt_recovered")
    if isinstance(debt, int) and debt > 0:
        lines.append(f"incl. debt {_money(debt)}")
    lines += ["1. Pay", "2. Cancel", "0 Back"]
    return Screen(False, "\n".join(lines))


def refused(s: Step, code: str) -> Screen:
    """A purchase the vending service refuses (at the quote: the session goes on, ``0`` goes back; at the payment:
    the session ends)."""
    why = REFUSALS.get(code, "This purchase cannot be made now. Please try again later.").format(**s.fields())
    if s.effect is Effect.PAY:
        return Screen(True, why)
    return Screen(False, f"{why}\n0 Back\n00 Main menu")


NOT_YOURS = "Meter {meter}: this is shown only to the phone registered with the meter."


def last_token(s: Step, last: Mapping[str, Any] | None, allowed: bool) -> Screen:
    """The meter's last token (its SMS text), to the phone registered with the meter only."""
    if not allowed:
        return Screen(True, NOT_YOURS.format(meter=s.meter))
    if last is None:
        return Screen(True, f"Meter {s.meter} has no purchase yet.")
    return Screen(True, texts.token_sms(last))


def balance(s: Step, last: Mapping[str, Any] | None, allowed: bool) -> Screen:
    """What Mita knows of a keypad meter's credit: its last purchase (when, how much, what it bought). The credit
    left is the meter's own; a connected meter's reading is the head-end's, not this menu's."""
    if not allowed:
        return Screen(True, NOT_YOURS.format(meter=s.meter))
    if last is None:
        return Screen(True, f"Meter {s.meter} has no purchase yet.")
    receipt: Mapping[str, Any] = last.get("receipt") or {}
    bought = f"{receipt.get('quantity', '')} {receipt.get('unit', '')}".strip()
    when = str(last.get("created_at", ""))[:16].replace("T", " ")
    paid = receipt.get("paid", last.get("amount"))
    money = f"{last.get('currency') or s.menu.currency} {_money(paid)}" if isinstance(paid, int) else ""
    return Screen(True, f"Meter {s.meter}\nLast purchase {when}\n{money}: {bought}")


def _money(minor: int) -> str:
    return f"{minor // 100}.{minor % 100:02d}"


def screens(menu: Menu = Menu()) -> Sequence[tuple[State, Screen]]:
    """Every fixed screen as shown (for the length and character-set checks)."""
    sample = {"title": menu.title, "currency": menu.currency, "meter": "0" * 20, "amount": MAX_AMOUNT}
    return [(state, Screen(node.end, node.prompt.format(**sample))) for state, node in NODES.items()]
