"""The JSON texts a vend stores beside its answer, made by orjson.

A vend encodes six documents (its answer, the receipt it keeps, the audit entry, the outbox payload, the
database write's values...); the standard library's encoder spent about 60 µs of a vend's CPU on them under
load, orjson a tenth of that. Compact, UTF-8 as it is. orjson writes a float NaN as null where the standard
library refuses it: the answer (``purchase.encoded``) is still made by the standard library, before these, and
every value these documents hold is in it, so a NaN is refused there. (A vend holds no float: money is
integers, quantities decimal text.)
"""

from __future__ import annotations

from typing import Any

import orjson


def json_text(value: Any) -> str:
    """``value`` as compact JSON text."""
    return orjson.dumps(value).decode()
