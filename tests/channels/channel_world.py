"""What the channels' tests share beside their fixtures: the customer's phone, an SMS sender that keeps messages."""

from __future__ import annotations

from mita.outbox.senders import Message

PHONE = "254712345678"


class Collect:
    """A sender that keeps what it was given (in place of a gateway)."""

    def __init__(self) -> None:
        self.sent: list[Message] = []

    def send(self, message: Message) -> None:
        self.sent.append(message)
