"""Detection: pure rules over a meter's readings and events (no database, no clock: ``now`` is an argument).

* :class:`MeterWindow` (``window.py``): one meter's readings on a regular grid, built from the readings table's
  rows (:meth:`MeterWindow.from_rows`) or arrays.
* :data:`RULES` (``rules.py``): the windowed rules, one module each, each module's docstring its reasoning and
  its thresholds (named constants): ``bypass`` (with the fleet's :class:`FleetContext`), ``leak``, ``silent``,
  ``clock_drift``, ``low_credit`` (a forecast with a per-credit-period key).
* :func:`tamper` (``tamper.py``): an event raised as an alarm at once, per event (:data:`EVENT_ALARMS`).
* :class:`Finding` (``finding.py``): what a rule reports; its ``key`` is what the caller keeps one alarm or one
  message per.

Notes, figures and what fools each rule: ``docs/detection.md``.
"""

from __future__ import annotations

from .bypass import FleetContext
from .errors import DetectError
from .finding import Finding, Severity
from .rules import RULES, Rule, evaluate
from .tamper import CLEARS, EVENT_ALARMS, tamper
from .window import Event, Medium, MeterWindow

__all__ = [
    "CLEARS",
    "EVENT_ALARMS",
    "RULES",
    "DetectError",
    "Event",
    "Finding",
    "FleetContext",
    "Medium",
    "MeterWindow",
    "Rule",
    "Severity",
    "evaluate",
    "tamper",
]
