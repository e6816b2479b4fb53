"""Which OBIS code carries which quantity of a reading, in which unit: the one table payloads are keyed by.

Codes are written ``A.B.C.D.E.F`` as the simulated meter's DLMS objects are (``mita.sim.objects``), so a value read
over DLMS and one pushed over MQTT are named alike. A reading carries the register of its medium (electricity:
A=1, water: A=8), never both.

===========  =================  ======  ====================================================================
field        OBIS               unit    what
===========  =================  ======  ====================================================================
register     1.0.1.8.0.255      Wh      active energy import, cumulative (electricity)
register     8.0.1.0.0.255      L       volume, cumulative (water; IEC 62056-6-1 medium 8)
demand       1.0.1.7.0.255      W       instantaneous active power import, at the interval's end
demand       8.0.2.0.0.255      L/h     flow rate at the interval's end (water; Mita's choice of C=2)
reverse      1.0.2.8.0.255      Wh      active energy export, cumulative: energy flowing back (optional)
credit       0.0.19.10.0.255    Wh, L   the meter's remaining credit, in its register's unit (IC 112)
relay        0.0.96.3.10.255    bool    disconnect control output state: true when the supply is connected
===========  =================  ======  ====================================================================
"""

from __future__ import annotations

from enum import StrEnum


class Medium(StrEnum):
    ELECTRICITY = "electricity"
    WATER = "water"


ENERGY_IMPORT = "1.0.1.8.0.255"
WATER_VOLUME = "8.0.1.0.0.255"
POWER_IMPORT = "1.0.1.7.0.255"
WATER_FLOW = "8.0.2.0.0.255"
ENERGY_EXPORT = "1.0.2.8.0.255"
CREDIT = "0.0.19.10.0.255"
RELAY = "0.0.96.3.10.255"

#: medium -> (register code, demand code, unit of the register, unit of demand)
CODES: dict[Medium, tuple[str, str, str, str]] = {
    Medium.ELECTRICITY: (ENERGY_IMPORT, POWER_IMPORT, "Wh", "W"),
    Medium.WATER: (WATER_VOLUME, WATER_FLOW, "L", "L/h"),
}

#: A register code -> its medium (how a reading says what it measures).
MEDIUM_OF: dict[str, Medium] = {codes[0]: medium for medium, codes in CODES.items()}
