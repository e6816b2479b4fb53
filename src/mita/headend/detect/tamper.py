"""Tamper events raised as alarms at once: one table, one function over one event (the ingest calls it per event).

A meter that reports its cover open, a magnet or a bypass has seen it: there is nothing to weigh, so the rule is
the table. The severity says how much it costs the utility if it is real: a terminal cover open gives access to
the terminals (a bypass is a cable away), a strong DC field saturates the current transformer so the meter
under-registers, a meter's own bypass detection is the strongest sign there is. Reverse energy is medium: it is
also what a wrongly wired meter or a rooftop solar installation on an import-only meter shows.

What fools it: nothing in the data (the meter says so), but a real meter's sensors raise some events for
innocent reasons (an installer opening the cover; a loudspeaker magnet near the meter). The alarm's lifecycle
(acknowledged, closed with a note) is where those are told apart, not here. Events that clear a condition
(:data:`CLEARS`) do not close an alarm on their own: a cover closed after an hour is still a cover opened.
"""

from __future__ import annotations

from .finding import Finding, Severity

#: Event name -> (rule, that is the alarm's kind; severity).
EVENT_ALARMS: dict[str, tuple[str, Severity]] = {
    "meter_cover_removed": ("cover", Severity.MEDIUM),
    "terminal_cover_removed": ("terminal_cover", Severity.HIGH),
    "strong_dc_field_detected": ("magnetic", Severity.HIGH),
    "reverse_energy": ("reverse_energy", Severity.MEDIUM),
    "bypass_detected": ("bypass_reported", Severity.HIGH),
}

#: Event name -> the rule whose condition it reports gone (kept on the alarm's timeline; closing is a person's).
CLEARS: dict[str, str] = {
    "meter_cover_closed": "cover",
    "terminal_cover_closed": "terminal_cover",
    "no_strong_dc_field_anymore": "magnetic",
    "bypass_cleared": "bypass_reported",
}

_WORDS = {
    "cover": "the meter's cover was opened",
    "terminal_cover": "the terminal cover was opened",
    "magnetic": "a strong magnetic field was detected at the meter",
    "reverse_energy": "energy flowed backwards through the meter",
    "bypass_reported": "the meter detected a bypass",
}


def tamper(meter_id: int | str, name: str, at: int) -> Finding | None:
    """The alarm an event raises, or None for an event that is not a tamper event."""
    hit = EVENT_ALARMS.get(name)
    if hit is None:
        return None
    rule, severity = hit
    return Finding(
        meter_id, rule, severity, int(at), f"Meter {meter_id}: {_WORDS[rule]}.", {"event": name, "at": int(at)}
    )
