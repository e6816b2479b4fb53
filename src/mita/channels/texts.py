"""What Mita's SMS say, in one place: short, GSM-7 only (a character outside it would halve the message to 70
characters), one message of at most 160 characters for a purchase with one or two tokens.

A token is written in groups of four digits, as meters' keypads and receipts show it; a resend is the same text
(a duplicate token SMS is harmless, a different token is not).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

SMS_MAX = 160
#: The GSM 03.38 basic character set (without the escape table): what one 160-character SMS may hold.
GSM7 = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ ÆæßÉ!\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿"
    "abcdefghijklmnopqrstuvwxyzäöñüà"
)


def grouped(digits: str) -> str:
    """``12345678901234567890`` as ``1234-5678-9012-3456-7890``."""
    return "-".join(digits[i : i + 4] for i in range(0, len(digits), 4))


def gsm7(text: str) -> str:
    """``text`` with every character outside GSM-7 replaced (a name with an accent the set lacks)."""
    return "".join(c if c in GSM7 else "?" for c in text)


def token_sms(answer: Mapping[str, Any]) -> str:
    """A vend's tokens as the customer's SMS: meter, tokens in entry order, what they buy, the receipt's reference.
    Key change tokens come first, with a word that they go first."""
    receipt = answer.get("receipt") or {}
    tokens: Sequence[Mapping[str, Any]] = answer.get("tokens") or []
    keys = [t for t in tokens if t.get("kind") == "key_change"]
    credit = [t for t in tokens if t.get("kind") != "key_change"]
    parts = [f"Meter {answer.get('meter', '')}"]
    if keys:
        parts.append("Enter first: " + " ".join(grouped(str(t["digits"])) for t in keys))
    parts.append("Token: " + " ".join(grouped(str(t["digits"])) for t in credit))
    quantity, unit = receipt.get("quantity"), receipt.get("unit")
    if quantity is not None and unit:
        parts.append(f"{quantity} {unit}")
    paid, currency = receipt.get("paid"), receipt.get("currency")
    if isinstance(paid, int) and currency:
        parts.append(f"{currency} {paid // 100}.{paid % 100:02d}")
    parts.append(f"Ref {str(answer.get('id', ''))[:8]}")
    text = gsm7(". ".join(parts))
    if len(text) > SMS_MAX:  # many key change tokens: the tokens matter, the rest gives way
        text = gsm7(". ".join(parts[: 2 + bool(keys)]))
    return text


def reply(text: str) -> str:
    """An answer to an inbound SMS or a USSD screen: GSM-7, one message."""
    return gsm7(text)[:SMS_MAX]
