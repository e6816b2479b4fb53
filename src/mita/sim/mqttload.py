"""What an MQTT meter's customer draws, interval by interval, and the faults injected on that meter (pure, seeded).

A :class:`Load` answers four questions for :mod:`mita.sim.mqttmeter`, in true (simulated) epoch seconds:

* :meth:`~Load.energy`: what the meter would register over the interval ending at ``end`` with the supply on
  (Wh or litres), the faults that change what it sees already applied. The meter model then draws it from the
  credit (:meth:`mita.meter.Meter.run`): without credit the relay opens and nothing more is registered.
* :meth:`~Load.sensor_events`: what the meter's sensors report of the faults (a magnet, an opened cover).
* :meth:`~Load.dead`: whether the meter has died (it stops talking: no reading, no event, its last will).
* :meth:`~Load.clock_error`: how far the meter's own clock is from the true time (a drifting clock).

Two shapes: :class:`Shaped` takes the customer's load from :mod:`mita.sim.loads` (daily and weekly cycles, noise,
appliances, households and small businesses; the faults as that module applies them to what the meter registers),
a window of :data:`WINDOW_DAYS` at a time; :class:`Simple` is a small daily curve of its own (no NumPy: a test or a
machine without it). Both apply the same faults (:class:`mita.sim.faults.Fault`, the detection benchmark's ground
truth type), injected per meter with :func:`parse_fault`:

============  ========================  ==========================================================================
fault         value (default)           effect
============  ========================  ==========================================================================
bypass        fraction seen (0.3)       the meter registers that fraction of the real load from ``start`` on
magnetic      factor seen (0.4)         a magnet: ``strong_dc_field_detected``, the factor of the load registered
cover         1: terminal cover (0)     ``meter_cover_removed`` (or ``terminal_cover_removed``); no effect on load
leak          flow, L/h (20)            water: a constant extra flow from ``start``
dead          -                         the meter stops talking at ``start``
clock_drift   seconds a day (60)        the meter's clock runs that much fast (negative: slow) from ``start``
============  ========================  ==========================================================================

A fault with an end (``@HOURS-HOURS``) reports its clearing too (``no_strong_dc_field_anymore``,
``meter_cover_closed``). Faults are the sensors' and the metrology's, not the meter model's tamper register: a
magnet seen does not open the relay here (the detection benchmark's meters keep their supply, so that the
registered load shows the fraud), while a tamper recorded in the model (``mita meter tamper`` on the shared file)
is reported by the meter's watcher and opens the relay as the profile says.
"""

from __future__ import annotations

import datetime as dt
import math
import zlib
from collections.abc import Sequence
from typing import Any, Protocol

from .faults import DAY, HOUR, CustomerClass, Fault, FaultKind, Medium

#: Days of load drawn at a time by :class:`Shaped` (four weeks: the weekly cycle lines up from one to the next).
WINDOW_DAYS = 28

#: A fault kind -> (its value's parameter, the default value).
FAULT_VALUES: dict[FaultKind, tuple[str, float] | None] = {
    FaultKind.BYPASS: ("fraction", 0.3),
    FaultKind.MAGNETIC: ("factor", 0.4),
    FaultKind.COVER: ("terminal", 0.0),
    FaultKind.LEAK: ("flow_l_per_h", 20.0),
    FaultKind.DEAD: None,
    FaultKind.CLOCK_DRIFT: ("drift_s_per_day", 60.0),
}

#: The sensor events of a fault that has them: kind -> (when it starts, when it ends); ``cover`` by its value.
_SENSOR = {
    FaultKind.MAGNETIC: ("strong_dc_field_detected", "no_strong_dc_field_anymore"),
    FaultKind.COVER: ("meter_cover_removed", "meter_cover_closed"),
}
_TERMINAL = ("terminal_cover_removed", "terminal_cover_closed")


class FaultError(ValueError):
    """A ``--fault`` that does not parse: ``code`` is stable (``invalid_fault``)."""

    code = "invalid_fault"


def parse_fault(text: str, start: int) -> tuple[str, Fault]:
    """``DRN=KIND[:VALUE][@FROM[-TO]]`` (hours after ``start``, the simulation's start; default at once, no end)
    as (meter number, :class:`Fault`). E.g. ``47500150231=bypass:0.25@48``, ``...=magnetic@2-30``, ``...=dead@10``."""
    drn, sep, rest = text.partition("=")
    if not sep or not drn.isdigit() or len(drn) not in (11, 13):
        raise FaultError(f"--fault {text!r}: DRN=KIND[:VALUE][@FROM[-TO]] (a meter number of 11 or 13 digits)")
    spec, _, when = rest.partition("@")
    name, _, raw = spec.partition(":")
    try:
        kind = FaultKind(name)
    except ValueError:
        raise FaultError(f"--fault {text!r}: the kind is one of {', '.join(FaultKind)}") from None
    try:
        begin, _, end = when.partition("-")
        t0 = start + round(float(begin or 0) * HOUR)
        t1 = start + round(float(end) * HOUR) if end else None
        value = float(raw) if raw else None
    except ValueError:
        raise FaultError(f"--fault {text!r}: VALUE and the hours are numbers") from None
    if t1 is not None and t1 <= t0:
        raise FaultError(f"--fault {text!r}: the fault ends after it starts")
    param = FAULT_VALUES[kind]
    if param is None and value is not None:
        raise FaultError(f"--fault {text!r}: {kind} takes no value")
    params: dict[str, float] = {}
    if param is not None:
        params[param[0]] = param[1] if value is None else value
    if kind in (FaultKind.BYPASS, FaultKind.MAGNETIC) and not 0 <= params[param[0]] <= 1:  # type: ignore[index]
        raise FaultError(f"--fault {text!r}: a {kind} sees a fraction of the load, 0 to 1")
    if kind is FaultKind.LEAK and params["flow_l_per_h"] < 0:
        raise FaultError(f"--fault {text!r}: a leak's flow is not negative")
    return drn, Fault(kind, t0, t1, params)


class Load(Protocol):
    """A meter's customer and faults (module docstring). Times are true epoch seconds, on the interval grid."""

    interval: int

    def energy(self, end: int) -> int:
        """Wh or litres the meter registers over ``(end - interval, end]`` with the supply on."""
        ...

    def sensor_events(self, after: int, until: int) -> list[tuple[int, str]]:
        """(time, event name) the meter's sensors report in ``(after, until]``, in time order."""
        ...

    def dead(self, t: int) -> bool: ...

    def clock_error(self, t: int) -> int:
        """Seconds the meter's clock is ahead of the true time ``t`` (negative: behind)."""
        ...


class _Faulted:
    """What both shapes share: the faults that are not about the load's size."""

    def __init__(self, faults: Sequence[Fault]) -> None:
        self.faults = tuple(faults)
        self._dead = min((f.start for f in self.faults if f.kind is FaultKind.DEAD), default=None)

    def sensor_events(self, after: int, until: int) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        for f in self.faults:
            names = _SENSOR.get(f.kind)
            if names is None:
                continue
            if f.kind is FaultKind.COVER and f.params.get("terminal"):
                names = _TERMINAL
            if after < f.start <= until:
                out.append((f.start, names[0]))
            if f.end is not None and after < f.end <= until:
                out.append((f.end, names[1]))
        return sorted(out)

    def dead(self, t: int) -> bool:
        return self._dead is not None and t >= self._dead

    def clock_error(self, t: int) -> int:
        drift = 0.0
        for f in self.faults:
            if f.kind is FaultKind.CLOCK_DRIFT and t > f.start:
                drift += f.params["drift_s_per_day"] * (t - f.start) / DAY
        return round(drift)

    def seen(self, end: int) -> float:
        """The share of the load the meter registers at ``end`` (a bypass, a magnet)."""
        share = 1.0
        for f in self.faults:
            if f.kind in (FaultKind.BYPASS, FaultKind.MAGNETIC) and _active(f, end):
                share = f.params["fraction" if f.kind is FaultKind.BYPASS else "factor"]
        return share

    def leak(self, end: int, interval: int) -> float:
        return sum(
            f.params["flow_l_per_h"] * interval / HOUR
            for f in self.faults
            if f.kind is FaultKind.LEAK and _active(f, end)
        )


def _active(f: Fault, end: int) -> bool:
    """As :mod:`mita.sim.loads` has it: a fault counts at the interval ending at ``end`` when ``start < end <=
    end of the fault``."""
    return end > f.start and (f.end is None or end <= f.end)


class Simple(_Faulted):
    """A small daily curve (no NumPy): a base, a morning and an evening peak, deterministic noise from the meter
    number and the time. Electricity in W around a household's 10 kWh a day; water in L/h around 400 L a day."""

    def __init__(self, drn: str, medium: Medium, interval: int, faults: Sequence[Fault] = (),
                 utc_offset_s: int = 0) -> None:  # fmt: skip
        super().__init__(faults)
        self.drn, self.medium, self.interval, self.offset = drn, Medium(medium), interval, utc_offset_s
        self.scale = 1.0 if medium is Medium.ELECTRICITY else 0.04
        self._carry = 0.0

    def rate(self, t: int) -> float:
        """The customer's draw at ``t`` (W, or L/h scaled): base, two peaks, noise."""
        hour = (t + self.offset) % DAY / HOUR
        peaks = 900 * math.exp(-(((hour - 7.5) / 1.2) ** 2)) + 1400 * math.exp(-(((hour - 19) / 1.8) ** 2))
        noise = zlib.crc32(f"{self.drn}:{t}".encode()) / 2**32  # 0..1
        base = 150 if self.medium is Medium.ELECTRICITY else 2
        return (base + peaks * (0.6 + 0.8 * noise)) * self.scale

    def energy(self, end: int) -> int:
        start = end - self.interval
        mean = (self.rate(start) + self.rate(start + self.interval // 2) + self.rate(end)) / 3
        amount = mean * self.interval / HOUR * self.seen(end) + self.leak(end, self.interval) + self._carry
        whole = int(amount)
        self._carry = amount - whole
        return whole


class Shaped(_Faulted):
    """The customer's load from :mod:`mita.sim.loads`: a window of :data:`WINDOW_DAYS` drawn at a time, the same
    customer in every window (the same seed: its size and habits are the first things drawn), each window's
    calendar its own. What the meter registers (``potential``: the faults of what it sees applied by that module,
    no credit) is taken; the credit is the meter model's."""

    def __init__(self, drn: str, medium: Medium, interval: int, faults: Sequence[Fault] = (), *, seed: int = 0,
                 utc_offset_s: int = 0, customer: CustomerClass = CustomerClass.HOUSEHOLD) -> None:  # fmt: skip
        super().__init__(faults)
        if interval < 60 or DAY % interval:
            raise ValueError("the interval is a minute or more and divides a day")
        # the telemetry's Medium or this one's (both StrEnums of the same values): loads compares by identity
        self.drn, self.medium, self.interval, self.offset = drn, Medium(medium), interval, utc_offset_s
        self.customer, self.seed = customer, seed
        self._window: tuple[int, Any] | None = None  # (start, potential per interval)

    def energy(self, end: int) -> int:
        span = WINDOW_DAYS * DAY
        first = (end - self.interval) // span * span
        if self._window is None or self._window[0] != first:
            self._window = (first, self._draw(first))
        start, potential = self._window
        return int(potential[(end - start) // self.interval - 1])

    def _draw(self, start: int) -> Any:
        from .loads import Clock, MeterProfile  # NumPy: only when this shape is used

        clock = Clock(start, WINDOW_DAYS * DAY // self.interval, self.interval, self.offset)
        kinds = (FaultKind.BYPASS, FaultKind.MAGNETIC, FaultKind.LEAK)  # what changes what the meter registers
        faults = tuple(f for f in self.faults if f.kind in kinds)
        profile = MeterProfile(self.drn, self.medium, self.customer, faults, (), clock, (), (self.seed, int(self.drn)))
        return profile.simulate().potential


def make(drn: str, medium: Medium | str, interval: int, faults: Sequence[Fault] = (), *, shape: str = "loads",
         seed: int = 0, utc_offset_s: int | None = None) -> Load:  # fmt: skip
    """A meter's load: ``shape`` ``loads`` (:class:`Shaped`; :class:`Simple` when NumPy is missing) or
    ``simple``. ``utc_offset_s``: where the daily cycle's local time is (default: this machine's now)."""
    offset = _local_offset() if utc_offset_s is None else utc_offset_s
    if shape == "loads":
        try:
            import numpy  # noqa: F401
        except ImportError:  # pragma: no cover - NumPy is a core dependency today
            shape = "simple"
    try:
        kind = Medium(medium)
    except ValueError:
        raise ValueError(f"no load shape for {medium} meters") from None
    if shape == "loads":
        return Shaped(drn, kind, interval, faults, seed=seed, utc_offset_s=offset)
    if shape == "simple":
        return Simple(drn, kind, interval, faults, offset)
    raise ValueError(f"a load shape is loads or simple, not {shape!r}")


def _local_offset() -> int:
    offset = dt.datetime.now().astimezone().utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0
