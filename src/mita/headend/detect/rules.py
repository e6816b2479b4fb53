"""The rules, in one table: name -> what it reads, the media it applies to, the window it wants.

A windowed rule is a function ``(window, context, now) -> list[Finding]``: pure, with ``now`` passed in and the
fleet's context (:class:`~.bypass.FleetContext`, only the bypass rule reads it) built by the caller from the same
evaluation's windows. Tamper events are not windowed: :func:`~.tamper.tamper` is called per event, its table is
:data:`~.tamper.EVENT_ALARMS`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import NamedTuple

from . import bypass, clock, credit, leak, silent
from .bypass import FleetContext
from .finding import Finding
from .window import Medium, MeterWindow

RuleFunction = Callable[[MeterWindow, FleetContext, int], list[Finding]]


class Rule(NamedTuple):
    name: str
    evaluate: RuleFunction
    media: tuple[Medium, ...]
    window_days: int
    #: How often a head-end runs it (seconds): the benchmark runs them so.
    every_s: int


_BOTH = (Medium.ELECTRICITY, Medium.WATER)

RULES: dict[str, Rule] = {
    r.name: r
    for r in (
        Rule("bypass", bypass.bypass, _BOTH, bypass.WINDOW_DAYS, 86_400),
        Rule("leak", leak.leak, (Medium.WATER,), leak.WINDOW_DAYS, 6 * 3_600),
        Rule("silent", silent.silent, _BOTH, silent.WINDOW_DAYS, 6 * 3_600),
        Rule("clock_drift", clock.clock_drift, _BOTH, clock.WINDOW_DAYS, 86_400),
        Rule("low_credit", credit.low_credit, _BOTH, credit.WINDOW_DAYS, 6 * 3_600),
    )
}


def evaluate(
    window: MeterWindow, now: int, context: FleetContext | None = None, rules: Iterable[Rule] | None = None
) -> list[Finding]:
    """Every rule (or those given) that applies to the window's medium, in table order."""
    ctx = context or FleetContext()
    out: list[Finding] = []
    for rule in RULES.values() if rules is None else rules:
        if window.medium in rule.media:
            out.extend(rule.evaluate(window, ctx, now))
    return out
