"""``check`` results as JSON (a public shape: extend, never rename) and as text for a person.

JSON::

    {"format": "mita-conformance-check/1",
     "summary": {"total": 3, "agree": 1, "disagree": 1, "error": 1},
     "results": [{"line": 1, "id": "a", "op": "encode", "verdict": "agree", "differences": [], "error": null,
                  "note": ""},
                 {"line": 2, "id": null, "op": "encode", "verdict": "disagree",
                  "differences": [{"field": "amount", "ours": 256, "theirs": 512, "token": null}], ...},
                 {"line": 3, ..., "verdict": "error", "error": {"code": "invalid_json", "message": "..."}}]}
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from mita.conformance.check import CheckResult

FORMAT = "mita-conformance-check/1"
VERDICTS = ("agree", "disagree", "error")


def summary(results: Iterable[CheckResult]) -> dict[str, int]:
    counts = dict.fromkeys(VERDICTS, 0)
    for r in results:
        counts[r.verdict] += 1
    return {"total": sum(counts.values()), **counts}


def result_dict(r: CheckResult) -> dict[str, Any]:
    return {
        "line": r.line,
        "id": r.id,
        "op": r.op,
        "verdict": r.verdict,
        "differences": [
            {"field": d.field, "ours": d.ours, "theirs": d.theirs, "token": d.token} for d in r.differences
        ],
        "error": r.error,
        "note": r.note,
    }


def render_check_json(results: list[CheckResult]) -> str:
    doc = {"format": FORMAT, "summary": summary(results), "results": [result_dict(r) for r in results]}
    return json.dumps(doc, indent=1, ensure_ascii=False, default=str) + "\n"


def _where(r: CheckResult) -> str:
    ident = f" [{r.id}]" if r.id is not None else ""
    op = f" {r.op}" if r.op else ""
    return f"line {r.line}{ident}{op}"


def render_check_text(results: list[CheckResult]) -> str:
    lines = []
    for r in results:
        if r.verdict == "error" and r.error is not None:
            lines.append(f"{_where(r)}: error[{r.error['code']}]: {r.error['message']}")
            continue
        if r.verdict == "agree":
            lines.append(f"{_where(r)}: agree" + (f" ({r.note})" if r.note else ""))
            continue
        parts = []
        for d in r.differences:
            token = f"token {d.token + 1} " if d.token is not None else ""
            parts.append(f"{token}{d.field}: Mita {d.ours}, theirs {d.theirs}")
        lines.append(f"{_where(r)}: DISAGREE: " + "; ".join(parts) + (f" ({r.note})" if r.note else ""))
    s = summary(results)
    lines.append(f"{s['total']} lines: {s['agree']} agree, {s['disagree']} disagree, {s['error']} could not be checked")
    return "\n".join(lines) + "\n"
