"""Every status and kind the vending database stores, and which moves between statuses are allowed.

One place says it, in the manner of h11's state tables: the schema's CHECK constraints are built from these
enumerations (so the database refuses what the code would never write), and the services ask
:meth:`Lifecycle.check` before they move a row (so a refused move is a typed error, not a silent overwrite).

The tables at the end of this module are the lifecycles: for each state, where a row may go next.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from .errors import VendError


class KeyStatus(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    RETIRED = "retired"
    DESTROYED = "destroyed"


class MeterStatus(StrEnum):
    ACTIVE = "active"
    BLOCKED = "blocked"
    RETIRED = "retired"


class VendStatus(StrEnum):
    COMPLETED = "completed"
    REVERSED = "reversed"


class KeyChangeStatus(StrEnum):
    PLANNED = "planned"
    ISSUED = "issued"
    DELIVERED = "delivered"
    CONFIRMED = "confirmed"
    CANCELLED = "cancelled"


class CampaignStatus(StrEnum):
    PLANNED = "planned"
    GENERATING = "generating"
    GENERATED = "generated"
    CLOSED = "closed"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    DEAD = "dead"


class CommandStatus(StrEnum):
    """Where a head-end command is: queued (not tried, or waiting to be tried again), sent (a worker is at the
    meter now), and three ends: acknowledged (the meter answered and did it), failed (the meter refused, or a
    fault that a retry cannot change), expired (its deadline passed before the meter could be reached)."""

    QUEUED = "queued"
    SENT = "sent"
    ACKNOWLEDGED = "acknowledged"
    FAILED = "failed"
    EXPIRED = "expired"


class CommandKind(StrEnum):
    """What a head-end command asks of a meter. ``deliver_tokens`` carries tokens a vend made (credit, a key
    change set, or an operator's management token: ``set_power_limit`` and ``set_tariff_rate`` are STS tokens)."""

    DELIVER_TOKENS = "deliver_tokens"
    DISCONNECT = "disconnect"
    RECONNECT = "reconnect"
    SET_POWER_LIMIT = "set_power_limit"
    SET_TARIFF_RATE = "set_tariff_rate"
    READ_REGISTERS = "read_registers"
    READ_EVENTS = "read_events"
    SET_CLOCK = "set_clock"


class Transport(StrEnum):
    """How the head-end reaches a connected meter: DLMS/COSEM over TCP (the meter's address), or MQTT (the broker
    the meter is on: commands on its ``cmd`` topic, outcomes on its ``ack`` topic)."""

    DLMS = "dlms"
    MQTT = "mqtt"


class AlarmStatus(StrEnum):
    """An alarm is open until a person acknowledges it (seen, someone is on it) and closes it (dealt with)."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    CLOSED = "closed"


class AlarmSeverity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class TokenEncoding(StrEnum):
    """How a meter's token gateway takes a token: packed BCD in 10 octets, or 20 ASCII digits."""

    BCD = "bcd"
    ASCII = "ascii"


class PaymentStatus(StrEnum):
    """Where money paid through a channel is, from the provider's first word to a final state.

    ``initiated``: Mita asked the provider to collect (an STK push), nothing paid yet. ``received``: the provider
    says it was paid; a vend is queued. ``held``: paid, but by an unverified callback above the cap, so it waits
    until the provider's own records (a query, the pull of recent transactions) confirm it. ``vended``: the tokens
    exist, delivery is queued. ``unvendable``: paid for a meter that cannot be sold to (unknown, blocked, an amount
    out of range); a refund is asked for. Final: ``delivered``, ``refunded``, ``cancelled``/``failed``/``expired``
    (no money moved), ``flagged`` (a person must look: a forged callback, a refund refused, no way to deliver).
    """

    INITIATED = "initiated"
    RECEIVED = "received"
    HELD = "held"
    VENDED = "vended"
    DELIVERED = "delivered"
    UNVENDABLE = "unvendable"
    REFUND_PENDING = "refund_pending"
    REFUNDED = "refunded"
    CANCELLED = "cancelled"
    FAILED = "failed"
    EXPIRED = "expired"
    FLAGGED = "flagged"


class SmsStatus(StrEnum):
    """An outbound SMS, as Kannel reports it: handed over (``submitted``: sendsms said accepted or queued), at the
    operator (``smsc``: delivery report 8), on the phone (``delivered``: report 1); ``rejected`` (report 2 or 16);
    ``unknown`` (no final report in time: not failed, the customer can ask again)."""

    SUBMITTED = "submitted"
    SMSC = "smsc"
    DELIVERED = "delivered"
    REJECTED = "rejected"
    UNKNOWN = "unknown"


class PosStatus(StrEnum):
    """A retail till's purchase (Electrum PUSI semantics): issued, then confirmed (settled) or reversed."""

    ISSUED = "issued"
    CONFIRMED = "confirmed"
    REVERSED = "reversed"


class VendKind(StrEnum):
    PURCHASE = "purchase"
    ENGINEERING = "engineering"
    KEY_CHANGE = "key_change"


class TokenKind(StrEnum):
    CREDIT = "credit"
    FBE = "fbe"  # free basic electricity
    KEY_CHANGE = "key_change"
    ENGINEERING = "engineering"


class Delivery(StrEnum):
    """How a campaign's key change tokens reach the meters."""

    CSV = "csv"  # field teams
    SMS = "sms"
    ATTACH = "attach"  # before the credit of the customer's next purchase


class Via(StrEnum):
    """Who sent a meter its key change."""

    CAMPAIGN = "campaign"
    VEND = "vend"
    OPERATOR = "operator"


class Role(StrEnum):
    ADMIN = "admin"
    OPERATOR = "operator"
    VENDOR = "vendor"


class Utility(StrEnum):
    ELECTRICITY = "electricity"
    WATER = "water"
    GAS = "gas"


class Keystore(StrEnum):
    SOFTWARE = "software"
    PKCS11 = "pkcs11"


def sql_in(values: Iterable[str]) -> str:
    """``('a', 'b')``: a list of values for SQL text (CHECK constraints, fixed statements)."""
    return "(" + ", ".join(f"'{v}'" for v in values) + ")"


S = TypeVar("S", bound=StrEnum)


@dataclass(frozen=True)
class Lifecycle(Generic[S]):
    """The allowed moves of one kind of row: ``moves[state]`` is where it may go next."""

    name: str
    moves: Mapping[S, frozenset[S]]

    def allows(self, current: str, new: str) -> bool:
        after: frozenset[str] = next((moves for state, moves in self.moves.items() if state == current), frozenset())
        return new in after

    def check(self, current: str, new: str, code: str = "invalid_transition") -> None:
        """Refuse a move the table does not allow, with a typed error naming both states."""
        if not self.allows(current, new):
            raise VendError(code, f"a {self.name} cannot go from {current} to {new}")

    @property
    def open(self) -> tuple[S, ...]:
        """The states a row can still leave (the others are final), in declaration order."""
        return tuple(s for s, after in self.moves.items() if after)


K, M, V, C, P, Q = KeyStatus, MeterStatus, VendStatus, KeyChangeStatus, CampaignStatus, OutboxStatus
Y, G, T = PaymentStatus, SmsStatus, PosStatus
H = CommandStatus
A = AlarmStatus

VENDING_KEY = Lifecycle[KeyStatus](
    "vending key",
    {
        K.PENDING: frozenset({K.ACTIVE, K.RETIRED, K.DESTROYED}),
        K.ACTIVE: frozenset({K.RETIRED, K.DESTROYED}),
        K.RETIRED: frozenset({K.DESTROYED}),
        K.DESTROYED: frozenset(),
    },
)
METER = Lifecycle[MeterStatus](
    "meter",
    {
        M.ACTIVE: frozenset({M.BLOCKED, M.RETIRED}),
        M.BLOCKED: frozenset({M.ACTIVE, M.RETIRED}),
        M.RETIRED: frozenset({M.ACTIVE}),  # re-commissioned
    },
)
VEND = Lifecycle[VendStatus]("vend", {V.COMPLETED: frozenset({V.REVERSED}), V.REVERSED: frozenset()})
KEY_CHANGE = Lifecycle[KeyChangeStatus](
    "key change",
    {
        C.PLANNED: frozenset({C.ISSUED, C.DELIVERED, C.CONFIRMED, C.CANCELLED}),
        C.ISSUED: frozenset({C.DELIVERED, C.CONFIRMED, C.CANCELLED}),
        C.DELIVERED: frozenset({C.DELIVERED, C.CONFIRMED, C.CANCELLED}),  # delivered again: a later vend
        C.CONFIRMED: frozenset(),
        C.CANCELLED: frozenset(),
    },
)
CAMPAIGN = Lifecycle[CampaignStatus](
    "campaign",
    {
        P.PLANNED: frozenset({P.GENERATING, P.CLOSED}),
        P.GENERATING: frozenset({P.GENERATING, P.GENERATED, P.CLOSED}),
        P.GENERATED: frozenset({P.GENERATING, P.CLOSED}),  # generating again: a run resumed
        P.CLOSED: frozenset(),
    },
)
OUTBOX = Lifecycle[OutboxStatus](
    "outbox row",
    {
        Q.PENDING: frozenset({Q.SENT, Q.PENDING, Q.DEAD}),  # pending again: a failed try, retried later
        Q.SENT: frozenset(),
        Q.DEAD: frozenset({Q.PENDING}),  # an operator's requeue
    },
)
COMMAND = Lifecycle[CommandStatus](
    "command",
    {
        H.QUEUED: frozenset({H.SENT, H.EXPIRED, H.FAILED}),  # failed unsent: the meter's endpoint was removed
        # queued again: unreachable, retried; sent again: the worker that sent it died before it knew the outcome
        # (its outbox lease ran out), so another sends it again -- tokens the meter took then answer `used`
        H.SENT: frozenset({H.SENT, H.ACKNOWLEDGED, H.FAILED, H.QUEUED, H.EXPIRED}),
        H.ACKNOWLEDGED: frozenset(),
        H.FAILED: frozenset(),
        H.EXPIRED: frozenset(),
    },
)
ALARM = Lifecycle[AlarmStatus](
    "alarm",
    {
        # a repeat of what raised it keeps it where it is (its count and last-seen time move); closed is final: the
        # same condition seen again opens a new alarm
        A.OPEN: frozenset({A.ACKNOWLEDGED, A.CLOSED}),
        A.ACKNOWLEDGED: frozenset({A.CLOSED}),
        A.CLOSED: frozenset(),
    },
)

PAYMENT = Lifecycle[PaymentStatus](
    "payment",
    {
        Y.INITIATED: frozenset({Y.RECEIVED, Y.HELD, Y.CANCELLED, Y.FAILED, Y.EXPIRED}),
        Y.RECEIVED: frozenset({Y.VENDED, Y.UNVENDABLE}),
        Y.HELD: frozenset({Y.RECEIVED, Y.FLAGGED}),  # confirmed by the provider's records, or never
        Y.VENDED: frozenset({Y.DELIVERED, Y.FLAGGED}),  # flagged: no phone, no connection, reports all failed
        Y.UNVENDABLE: frozenset({Y.REFUND_PENDING, Y.FLAGGED}),
        Y.REFUND_PENDING: frozenset({Y.REFUNDED, Y.FLAGGED}),
        Y.DELIVERED: frozenset(),
        Y.REFUNDED: frozenset(),
        # a later "paid" after the payer cancelled: the provider's record wins, the money is there
        Y.CANCELLED: frozenset({Y.RECEIVED}),
        Y.FAILED: frozenset({Y.RECEIVED}),
        Y.EXPIRED: frozenset({Y.RECEIVED}),
        # a person's decision: sell after all (the meter number fixed, the payment confirmed), or refund
        Y.FLAGGED: frozenset({Y.RECEIVED, Y.REFUND_PENDING, Y.DELIVERED}),
    },
)
#: The states a payment ends in; the reconciliation job looks at every other one.
PAYMENT_FINAL = frozenset({Y.DELIVERED, Y.REFUNDED, Y.CANCELLED, Y.FAILED, Y.EXPIRED, Y.FLAGGED})

SMS = Lifecycle[SmsStatus](
    "SMS",
    {
        # reports arrive out of order and twice: a later report never moves a message backwards
        G.SUBMITTED: frozenset({G.SMSC, G.DELIVERED, G.REJECTED, G.UNKNOWN}),
        G.SMSC: frozenset({G.DELIVERED, G.REJECTED, G.UNKNOWN}),
        G.UNKNOWN: frozenset({G.SMSC, G.DELIVERED, G.REJECTED}),  # a late report still counts
        G.DELIVERED: frozenset(),
        G.REJECTED: frozenset({G.DELIVERED}),  # an operator that reports failure, then delivers
    },
)

POS_PURCHASE = Lifecycle[PosStatus](
    "POS purchase",
    {T.ISSUED: frozenset({T.CONFIRMED, T.REVERSED}), T.CONFIRMED: frozenset(), T.REVERSED: frozenset()},
)
