"""What a rule reports: a :class:`Finding` (pure values; the caller turns one into an alarm or a message)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

#: What evidence holds: small JSON-able values.
Evidence = Mapping[str, float | int | str | bool | None]


class Severity(StrEnum):
    """The alarms table's severities."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


@dataclass(frozen=True)
class Finding:
    """One rule's finding on one meter.

    ``opened_at`` is when the condition began as far as the data shows (the event's time, the first day of a
    collapse, the last reading of a silent meter), in epoch seconds. ``key`` is the finding's identity across
    evaluations: the caller keeps one alarm (or queues one customer message) per key, so a rule that finds the
    same thing every day does not raise it every day. For most rules it is ``<meter>/<rule>`` (the alarms table
    keeps one open alarm per meter and rule); the low-credit forecast's key changes with each credit period.
    ``summary`` is a short sentence in plain words (at most :data:`SUMMARY_MAX` characters)."""

    meter_id: int | str
    rule: str
    severity: Severity
    opened_at: int
    summary: str
    evidence: Evidence = field(default_factory=dict)
    key: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "evidence", MappingProxyType(dict(self.evidence)))
        object.__setattr__(self, "summary", self.summary[:SUMMARY_MAX])
        if not self.key:
            object.__setattr__(self, "key", f"{self.meter_id}/{self.rule}")


#: The alarms table's summary column.
SUMMARY_MAX = 200


def rounded(value: float, digits: int = 3) -> float | None:
    """A float for evidence: rounded, and None for NaN (JSON has no NaN)."""
    return None if value != value else round(float(value), digits)
