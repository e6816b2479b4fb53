"""The report as JSON: a public, documented shape (extend it, never rename).

::

    {
      "format": "mita-conformance-report/1",
      "standard": "IEC 62055-41:2018",
      "mita_version": "0.1.0",
      "summary": {"total": 1163, "passed": 1163, "failed": 0, "excluded": 4},
      "by_kind": {"credit": {"total": .., "passed": .., "failed": ..}, ...},      (every kind of clauses.KINDS)
      "by_algorithm": {"EA07": {...}, "EA09": {...}, "EA11": {...}, "none": {...}},
      "by_key_derivation": {"DKGA02": {...}, "DKGA04": {...}, "none": {...}},
      "by_file": {"tokens.json": {...}, ...},
      "clauses": {"kinds": {"credit": {"title": .., "clauses": ["6.3.5", ..], "spec": "§1, §2"}, ..},
                  "algorithms": {..}, "key_derivations": {..}},
      "cases": [{"id": "tokens.json#compliance_and_nectar_vectors/0", "file": .., "section": .., "kind": "credit",
                 "algorithm": "EA07" | null, "key_derivation": "DKGA02" | null, "clauses": [..], "source": ..,
                 "status": "pass" | "fail", "expected": .., "got": .., "checks": [..],
                 "failures": [{"check": .., "expected": .., "got": ..}], "note": ..}, ...],
      "excluded": [{"id": .., "file": .., "section": .., "reason": ..}, ...]
    }

``expected`` and ``got`` are a case's headline (its first check: the token digits, the ciphertext, the TID);
``failures`` lists every check that differed. Keys appear only as ``key sha256:xxxxxxxx`` fingerprints.
"""

from __future__ import annotations

import json
from typing import Any

from mita.conformance.case import Case
from mita.conformance.clauses import ALGORITHMS, KEY_DERIVATIONS, KINDS, STANDARD, Clause
from mita.conformance.report import Report, Tally

FORMAT = "mita-conformance-report/1"


def _tally(t: Tally) -> dict[str, int]:
    return {"total": t.total, "passed": t.passed, "failed": t.failed}


def _clause(c: Clause) -> dict[str, Any]:
    return {"title": c.title, "clauses": list(c.clauses), "spec": c.spec}


def case_dict(case: Case) -> dict[str, Any]:
    return {
        "id": case.id,
        "file": case.file,
        "section": case.section,
        "kind": case.kind,
        "algorithm": case.algorithm,
        "key_derivation": case.key_derivation,
        "clauses": list(case.clauses),
        "source": case.source,
        "status": "pass" if case.passed else "fail",
        "expected": case.expected,
        "got": case.got,
        "checks": list(case.checks),
        "failures": [{"check": f.check, "expected": f.expected, "got": f.got} for f in case.failures],
        "note": case.note,
    }


def report_dict(report: Report) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "standard": STANDARD,
        "mita_version": report.version,
        "summary": _tally(report.summary) | {"excluded": len(report.excluded)},
        "by_kind": {k: _tally(t) for k, t in report.by_kind().items()},
        "by_algorithm": {k: _tally(t) for k, t in report.by_algorithm().items()},
        "by_key_derivation": {k: _tally(t) for k, t in report.by_key_derivation().items()},
        "by_file": {k: _tally(t) for k, t in report.by_file().items()},
        "clauses": {
            "kinds": {k: _clause(c) for k, c in KINDS.items()},
            "algorithms": {k: _clause(c) for k, c in ALGORITHMS.items()},
            "key_derivations": {k: _clause(c) for k, c in KEY_DERIVATIONS.items()},
        },
        "cases": [case_dict(c) for c in report.cases],
        "excluded": [{"id": e.id, "file": e.file, "section": e.section, "reason": e.reason} for e in report.excluded],
    }


def render_json(report: Report, indent: int | None = 1) -> str:
    return json.dumps(report_dict(report), indent=indent, ensure_ascii=False) + "\n"
