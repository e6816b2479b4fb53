"""mita.meter: a pure model of an STS prepayment meter's firmware.

Time, load and randomness are inputs; nothing here reads a clock, a file or the
network (``storage`` is the one I/O edge, used by the shells). The same
tokens from :mod:`mita.sts` work on every manufacturer profile.
"""

from .model import EntryResult, Meter, Result
from .profiles import PROFILES, Profile, get_profile
from .state import MeterState

__all__ = ["PROFILES", "EntryResult", "Meter", "MeterState", "Profile", "Result", "get_profile"]
