"""The events a meter publishes, by name: one table of the vocabulary, with the IDIS event code where IDIS has one.

A name is what the payload carries (``"event": "meter_cover_removed"``); the code is informative (what the
meter's DLMS event log would hold: ``mita.sim.events`` uses the same numbers). Codes 230 and up are Mita's own,
as in the simulated meter's logs.

The category says what the head-end does with it: ``tamper`` events become alarms at once
(``mita.headend.detect``), the rest are kept on the meter's timeline.
"""

from __future__ import annotations

from enum import StrEnum


class Category(StrEnum):
    TAMPER = "tamper"
    SUPPLY = "supply"
    POWER = "power"
    CREDIT = "credit"
    TOKEN = "token"
    CLOCK = "clock"


#: name -> (IDIS or Mita event code, category)
EVENTS: dict[str, tuple[int, Category]] = {
    "power_down": (1, Category.POWER),
    "power_up": (2, Category.POWER),
    "clock_adjusted": (5, Category.CLOCK),
    "terminal_cover_removed": (40, Category.TAMPER),
    "terminal_cover_closed": (41, Category.TAMPER),
    "strong_dc_field_detected": (42, Category.TAMPER),
    "no_strong_dc_field_anymore": (43, Category.TAMPER),
    "meter_cover_removed": (44, Category.TAMPER),
    "meter_cover_closed": (45, Category.TAMPER),
    "relay_opened": (62, Category.SUPPLY),
    "relay_closed": (63, Category.SUPPLY),
    # Mita's own (no IDIS code for these in the logs the simulated meter keeps)
    "bypass_detected": (234, Category.TAMPER),
    "bypass_cleared": (235, Category.TAMPER),
    "reverse_energy": (236, Category.TAMPER),
    "low_credit": (237, Category.CREDIT),
    "token_accepted": (238, Category.TOKEN),
    "token_rejected": (239, Category.TOKEN),
}
