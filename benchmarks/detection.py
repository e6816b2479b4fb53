"""Detection's precision and recall on a simulated fleet with injected faults (one core, NumPy).

    .venv/bin/python benchmarks/detection.py [--json] [--seed 20250303] [--meters 1000] [--days 30] [--no-context]

The fleet (``mita.sim.loads.Fleet``: electricity households and businesses, water households) runs for ``days``
days with faults on known meters (bypass, magnet, cover, leak, dead meter, clock drift) and the tricky normals
(vacations, customers out of credit, new appliances, night shifts, a fleet-wide holiday, garden irrigation, link
outages). The rules run as a head-end would run them, on what it had received by then: tamper events per event,
each windowed rule at its cadence (``RULES[...].every_s``: daily for bypass and clock drift, hourly for leak, silent
and low credit) over its window, the bypass rule with the fleet's peer context of the same evaluation.

Scoring, per meter
    A meter with the rule's fault and a finding at or after the fault began is a true positive; a finding on a
    meter without the fault, or before it began, a false positive (once per meter); a faulty meter without a finding
    a false negative. ``cover`` counts the meter cover and the terminal cover; ``dead`` is the ``silent`` rule.
Scoring, low credit (a forecast, not a fault)
    Each distinct forecast key is one forecast (one customer message). It was right if, when it was first raised,
    the credit really would have run out within 1.5 times the rule's threshold at the customer's real use had they
    bought nothing (``Simulation.potential``; past the month's end, at the meter's real average rate over it);
    otherwise it is a false positive. Each time a meter's credit ran out
    (after its first two days, while it still reported) is a positive: warned (true positive) if a forecast was raised
    after the last purchase before it and no later than it, else a false negative. Precision = right forecasts /
    forecasts; recall = warned run-outs / run-outs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from mita.headend.detect import RULES, FleetContext, MeterWindow, tamper
from mita.headend.detect.credit import DAYS_LEFT
from mita.sim.faults import DAY, FaultKind
from mita.sim.loads import Fleet, MeterProfile, Simulation

SEED = 20250303
#: A Monday, local midnight in South Africa (UTC+2, no daylight saving).
START = dt.datetime(2025, 3, 3, tzinfo=dt.timezone(dt.timedelta(hours=2)))
#: Which fault each scored rule is judged against, and the finding rules that count for it.
SCORED: dict[str, tuple[FaultKind, tuple[str, ...]]] = {
    "bypass": (FaultKind.BYPASS, ("bypass",)),
    "magnetic": (FaultKind.MAGNETIC, ("magnetic",)),
    "cover": (FaultKind.COVER, ("cover", "terminal_cover")),
    "leak": (FaultKind.LEAK, ("leak",)),
    "dead": (FaultKind.DEAD, ("silent",)),
    "clock_drift": (FaultKind.CLOCK_DRIFT, ("clock_drift",)),
}
#: A forecast is right when the credit would have run out within this many times the threshold.
FORECAST_SLACK = 1.5


@dataclass
class Seen:
    """Findings by meter index: rule -> times it was found (evaluation time, or the event's), and forecast keys."""

    times: dict[int, dict[str, list[int]]]
    forecasts: dict[int, dict[str, int]]


@dataclass
class Feed:
    """One meter's month as the head-end receives it: the reported readings, sorted receipt times, event times."""

    meter: MeterProfile
    sim: Simulation
    received: np.ndarray[Any, np.dtype[np.int64]]
    event_at: np.ndarray[Any, np.dtype[np.int64]]

    @classmethod
    def of(cls, m: MeterProfile) -> Feed:
        sim = m.simulate()
        received = np.sort(sim.readings.sent_at[sim.reported])
        return cls(m, sim, received, np.asarray([e.at for e in sim.events], dtype=np.int64))

    def window(self, fleet: Fleet, now: int, days: int) -> MeterWindow:
        """What the head-end holds at ``now``: readings received by then, events that happened by then."""
        r, m = self.sim.readings, self.meter
        lo = int(np.searchsorted(r.at, now - days * DAY - 2 * fleet.interval))
        hi = int(np.searchsorted(r.at, now, side="right"))
        rep = self.sim.reported[lo:hi]
        k = int(np.searchsorted(self.received, now, side="right"))
        e = int(np.searchsorted(self.event_at, now, side="right"))
        return MeterWindow.from_arrays(
            m.meter_id,
            m.medium,
            interval=fleet.interval,
            now=now,
            days=days,
            read_at=r.read_at[lo:hi][rep],
            received_at=r.sent_at[lo:hi][rep],
            register=r.register[lo:hi][rep],
            demand=r.demand[lo:hi][rep],
            credit=r.credit[lo:hi][rep],
            relay_closed=r.relay_closed[lo:hi][rep],
            events=[(x.name, x.at) for x in self.sim.events[max(e - 50, 0) : e]],
            group=m.group,
            utc_offset_s=fleet.utc_offset_s,
            last_received_at=int(self.received[k - 1]) if k else None,
        )


def _times(fleet: Fleet, every: int) -> Iterator[int]:
    t = fleet.start + every
    end = fleet.start + fleet.days * DAY
    while t <= end:
        yield t
        t += every


def run(fleet: Fleet, context: bool = True) -> Seen:
    """Every rule over the fleet's month, as a head-end would run them (module docstring)."""
    feeds = [Feed.of(m) for m in fleet.meters]
    seen = Seen(defaultdict(lambda: defaultdict(list)), defaultdict(dict))
    for i, (m, feed) in enumerate(zip(fleet.meters, feeds, strict=True)):
        for e in feed.sim.events:
            f = tamper(m.meter_id, e.name, e.at)
            if f is not None:
                seen.times[i][f.rule].append(e.at)
    # group the rules by (cadence, window) so that one window per meter serves every rule run at that moment
    plans: dict[int, list[str]] = defaultdict(list)
    for rule in RULES.values():
        plans[rule.every_s].append(rule.name)
    moments: dict[int, list[str]] = defaultdict(list)
    for every, names in plans.items():
        for t in _times(fleet, every):
            moments[t].extend(names)
    for now in sorted(moments):
        rules = [RULES[name] for name in moments[now]]
        days = max(r.window_days for r in rules)
        windows = [feed.window(fleet, now, days) for feed in feeds]
        peers = FleetContext.build(windows) if context and any(r.name == "bypass" for r in rules) else FleetContext()
        for i, w in enumerate(windows):
            for rule in rules:
                if w.medium not in rule.media:
                    continue
                for f in rule.evaluate(w, peers, now):
                    seen.times[i][f.rule].append(now)
                    if f.rule == "low_credit":
                        seen.forecasts[i].setdefault(f.key, now)
    return seen


def _ratio(a: int, b: int) -> float:
    return round(a / b, 4) if b else 1.0


def score(fleet: Fleet, seen: Seen) -> dict[str, dict[str, Any]]:
    """Precision and recall per scored rule (module docstring)."""
    out: dict[str, dict[str, Any]] = {}
    for name, (kind, rules) in SCORED.items():
        tp = fp = fn = 0
        delays: list[float] = []
        for i, m in enumerate(fleet.meters):
            times = sorted(t for r in rules for t in seen.times[i].get(r, []))
            fault = m.fault(kind)
            start = fault.start if fault is not None else None
            if start is None:
                fp += bool(times)
                continue
            fp += any(t < start for t in times)
            after = [t for t in times if t >= start]
            if after:
                tp += 1
                delays.append((after[0] - start) / 3600)
            else:
                fn += 1
        out[name] = {
            "precision": _ratio(tp, tp + fp),
            "recall": _ratio(tp, tp + fn),
            "tp": tp,
            "fp": fp,
            "fn": fn,
            "median_delay_h": round(float(np.median(delays)), 1) if delays else None,
        }
    out["low_credit"] = _score_credit(fleet, seen)
    return out


def _score_credit(fleet: Fleet, seen: Seen) -> dict[str, Any]:
    right = wrong = warned = missed = 0
    for i, m in enumerate(fleet.meters):
        sim = m.simulate()
        r = sim.readings
        raised = sorted(seen.forecasts[i].values())
        rate = float(sim.potential.sum()) / fleet.days  # per day
        for t in raised:
            j = int(np.searchsorted(r.at, t, side="right")) - 1
            credit = int(r.credit[j])
            future = np.cumsum(sim.potential[j + 1 :])
            k = int(np.searchsorted(future, credit, side="left"))
            if k < len(future):
                horizon = (k + 1) * fleet.interval
            else:  # past the simulated month: at the meter's real average rate over it
                left = credit - (int(future[-1]) if len(future) else 0)
                horizon = len(future) * fleet.interval + left / max(rate, 1e-9) * DAY
            if horizon <= FORECAST_SLACK * DAYS_LEFT * DAY:
                right += 1
            else:
                wrong += 1
        dead = m.fault(FaultKind.DEAD)
        buys = [t for t, _ in sim.purchases]
        for out_at in sim.run_outs:
            if out_at < fleet.start + 2 * DAY or (dead is not None and out_at >= dead.start):
                continue
            since = max((t for t in buys if t < out_at), default=fleet.start)
            if any(since < t <= out_at for t in raised):
                warned += 1
            else:
                missed += 1
    return {
        "precision": _ratio(right, right + wrong),  # over forecasts: right / (right + wrong)
        "recall": _ratio(warned, warned + missed),  # over run-outs: warned / (warned + missed)
        "tp": warned,  # run-outs warned of
        "fp": wrong,  # forecasts that were wrong
        "fn": missed,  # run-outs not warned of
        "forecasts": right + wrong,
        "right": right,
    }


def evaluate(seed: int, meters: int, days: int, context: bool = True) -> dict[str, Any]:
    """The benchmark's figures for one fleet (``context=False``: the bypass rule without its peers)."""
    started = time.perf_counter()
    fleet = Fleet.make(seed, meters, START, days)
    seen = run(fleet, context)
    rules = score(fleet, seen)
    return {
        "seed": seed,
        "meters": meters,
        "days": days,
        "start": START.isoformat(),
        "holidays": [int(h) for h in fleet.holidays],
        "faults": {k.value: sum(1 for m in fleet.meters if m.fault(k)) for k in FaultKind},
        "fleet_context": context,
        "rules": rules,
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--meters", type=int, default=1000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--no-context", action="store_true", help="the bypass rule without the peers' context")
    args = parser.parse_args()
    figures = evaluate(args.seed, args.meters, args.days, not args.no_context)
    if args.json:
        print(json.dumps(figures))
        return
    print(f"Detection on {figures['meters']} simulated meters, {figures['days']} days, seed {figures['seed']}")
    print(f"  faults: {figures['faults']}, holidays (day index): {figures['holidays']}")
    for name, s in figures["rules"].items():
        print(f"  {name:<12} precision {s['precision']:.3f}  recall {s['recall']:.3f}  tp {s['tp']:>4} fp {s['fp']:>4} "
              f"fn {s['fn']:>4}")  # fmt: skip
    print(f"  {figures['seconds']} s")


if __name__ == "__main__":
    main()
