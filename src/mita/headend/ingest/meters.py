"""Meter numbers to meter ids, cached in the worker: a message names its meter by number (the topic), a row by id.

A number not in the cache is looked up with the rest of its batch's misses (one query). A number the database
does not know is remembered as unknown for ``unknown_ttl`` seconds, so that a device publishing under a wrong
number (or a meter not yet registered) costs one query per ``unknown_ttl``, not one per message; a meter
registered meanwhile is found at the next look after that. A meter's number and id never change, so a known one
is kept for the worker's life (:data:`MAX_KNOWN` bounds the memory: past it the cache starts again empty).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy import Engine, bindparam, select

from mita.vend.schema import meters

#: ~100 bytes an entry: 2,000,000 meters is ~200 MB. A worker of a larger fleet refills as it goes.
MAX_KNOWN = 2_000_000
_LOOKUP = select(meters.c.drn, meters.c.id).where(meters.c.drn.in_(bindparam("drns", expanding=True)))


class MeterCache:
    def __init__(self, clock: Callable[[], float], unknown_ttl: float = 60.0) -> None:
        self.clock, self.unknown_ttl = clock, unknown_ttl
        self.known: dict[str, int] = {}
        self.unknown: dict[str, float] = {}  # number -> when it was last looked up and not found
        self.lookups = 0

    def ids(self, engine: Engine, drns: Iterable[str]) -> dict[str, int]:
        """The ids of the numbers the database knows (looking up those not cached, unless looked up lately: a
        connection is taken only then)."""
        known, found = self.known, {}
        missing = []
        now = self.clock()
        for drn in drns:
            meter = known.get(drn)
            if meter is not None:
                found[drn] = meter
            elif now - self.unknown.get(drn, -1e18) >= self.unknown_ttl:
                missing.append(drn)
        if missing:
            self.lookups += 1
            if len(known) + len(missing) > MAX_KNOWN:
                known.clear()
            with engine.connect() as conn:
                rows = {drn: meter for drn, meter in conn.execute(_LOOKUP, {"drns": missing})}
            for drn in missing:
                meter = rows.get(drn)
                if meter is None:
                    self.unknown[drn] = now
                else:
                    self.unknown.pop(drn, None)
                    known[drn] = found[drn] = int(meter)
            if len(self.unknown) > MAX_KNOWN // 10:  # a flood of made-up numbers: forget the oldest half
                cut = sorted(self.unknown.values())[len(self.unknown) // 2]
                self.unknown = {d: t for d, t in self.unknown.items() if t > cut}
        return found
