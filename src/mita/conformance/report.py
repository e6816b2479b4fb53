"""The conformance report: every case of every shipped vector file, and its tallies by kind, algorithm, key
derivation and file.

Deterministic on purpose (no clock, no host name, cases in file order): two runs of the same Mita on the same
vectors give byte-identical JSON, so a vendor can diff reports across versions.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.resources.abc import Traversable

from mita import __version__
from mita.conformance.case import Case, Excluded
from mita.conformance.clauses import ALGORITHMS, KEY_DERIVATIONS, KINDS
from mita.conformance.runners import RUNNERS, Source, run

#: What a tally groups cases by when a case has no value there (a CRC case has no algorithm).
NONE = "none"


@dataclass(frozen=True, slots=True)
class Tally:
    total: int = 0
    passed: int = 0

    @property
    def failed(self) -> int:
        return self.total - self.passed

    def add(self, case: Case) -> Tally:
        return Tally(self.total + 1, self.passed + case.passed)


@dataclass(frozen=True, slots=True)
class Report:
    cases: tuple[Case, ...]
    excluded: tuple[Excluded, ...]
    files: tuple[str, ...]
    version: str = __version__

    @property
    def summary(self) -> Tally:
        return _tally(self.cases, lambda c: "all").get("all", Tally())

    @property
    def passed(self) -> bool:
        return all(case.passed for case in self.cases) and bool(self.cases)

    @property
    def failures(self) -> tuple[Case, ...]:
        return tuple(case for case in self.cases if not case.passed)

    def by_kind(self) -> dict[str, Tally]:
        return _ordered(_tally(self.cases, lambda c: c.kind), KINDS)

    def by_algorithm(self) -> dict[str, Tally]:
        return _ordered(_tally(self.cases, lambda c: c.algorithm or NONE), ALGORITHMS)

    def by_key_derivation(self) -> dict[str, Tally]:
        return _ordered(_tally(self.cases, lambda c: c.key_derivation or NONE), KEY_DERIVATIONS)

    def by_file(self) -> dict[str, Tally]:
        return _ordered(_tally(self.cases, lambda c: c.file), dict.fromkeys(self.files))


def _tally(cases: Iterable[Case], key: Callable[[Case], str]) -> dict[str, Tally]:
    out: dict[str, Tally] = {}
    for case in cases:
        name = key(case)
        out[name] = out.get(name, Tally()).add(case)
    return out


def _ordered(tallies: dict[str, Tally], order: Iterable[str]) -> dict[str, Tally]:
    """The table's order first (every entry, zero if no case), then anything else (``none`` last)."""
    out = {name: tallies.get(name, Tally()) for name in order}
    out |= {name: t for name, t in sorted(tallies.items()) if name not in out and name != NONE}
    if NONE in tallies:
        out[NONE] = tallies[NONE]
    return out


def run_report(where: Traversable | None = None) -> Report:
    """Run every case of every vector file: the shipped ones, or those in ``where`` (a folder of the same files)."""
    cases: list[Case] = []
    excluded: list[Excluded] = []
    for result in run(Source(where)):
        (cases if isinstance(result, Case) else excluded).append(result)  # type: ignore[arg-type]
    return Report(tuple(cases), tuple(excluded), tuple(RUNNERS))
