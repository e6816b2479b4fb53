"""The report as one self-contained HTML page: inline style, no script, no external asset or link.

A vendor attaches it to a tender or opens it offline; every value from the vectors or the engine is escaped
(a vector's source text, an error message), so the page shows what it was given and runs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape

from mita.conformance.case import Case
from mita.conformance.clauses import ALGORITHMS, KEY_DERIVATIONS, KINDS, STANDARD, Clause
from mita.conformance.report import NONE, Report, Tally

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.n { text-align: right; }
code, .mono { font-family: ui-monospace, monospace; font-size: 12px; word-break: break-all; }
.pass { color: #1a7f37; } .fail { color: #b42318; font-weight: bold; }
.banner { font-size: 20px; padding: 0.5em 1em; border-radius: 4px; display: inline-block; }
.banner.pass { background: #e6f4ea; } .banner.fail { background: #fde7e7; }
details { margin: 0.3em 0; } summary { cursor: pointer; }
"""


def _e(value: object) -> str:
    return escape(str(value), quote=True)


def _row(cells: Iterable[str], header: bool = False) -> str:
    tag = "th" if header else "td"
    return "<tr>" + "".join(cell if cell.startswith("<td") else f"<{tag}>{cell}</{tag}>" for cell in cells) + "</tr>"


def _num(n: int, cls: str = "") -> str:
    return f'<td class="n {cls}">{n}</td>'


def _tally_table(title: str, tallies: dict[str, Tally], table: dict[str, Clause]) -> str:
    rows = [_row(["", "What", "IEC 62055-41", "SPEC.md", "Cases", "Passed", "Failed"], header=True)]
    for name, t in tallies.items():
        clause = table.get(name)
        rows.append(
            _row(
                [
                    f"<code>{_e(name)}</code>",
                    _e(clause.title if clause else ("no cipher or key derivation" if name == NONE else "")),
                    _e(", ".join(clause.clauses) if clause else ""),
                    _e(clause.spec if clause else ""),
                    _num(t.total),
                    _num(t.passed, "pass" if t.passed else ""),
                    _num(t.failed, "fail" if t.failed else ""),
                ]
            )
        )
    return f"<h2>{_e(title)}</h2><table>{''.join(rows)}</table>"


def _files_table(tallies: dict[str, Tally], excluded: dict[str, int]) -> str:
    rows = [_row(["Vector file", "Cases", "Passed", "Failed", "Excluded"], header=True)]
    for name, t in tallies.items():
        rows.append(
            _row(
                [
                    f"<code>{_e(name)}</code>",
                    _num(t.total),
                    _num(t.passed),
                    _num(t.failed, "fail" if t.failed else ""),
                    _num(excluded.get(name, 0)),
                ]
            )
        )
    return f"<h2>By vector file</h2><table>{''.join(rows)}</table>"


def _failure_list(case: Case) -> str:
    items = "".join(
        f"<li>{_e(f.check)}: expected <code>{_e(f.expected)}</code>, got <code>{_e(f.got)}</code></li>"
        for f in case.failures
    )
    return f"<ul>{items}</ul>"


def _cases_table(cases: Sequence[Case]) -> str:
    rows = [
        _row(["Case", "Algorithm", "Key derivation", "Clauses", "Source", "Result", "Expected", "Got"], header=True)
    ]
    for case in cases:
        status = '<td class="pass">pass</td>' if case.passed else '<td class="fail">FAIL</td>'
        detail = _failure_list(case) if case.failures else ""
        note = f"<br><small>{_e(case.note)}</small>" if case.note else ""
        rows.append(
            _row(
                [
                    f'<td class="mono" id="{_e(case.id)}">{_e(case.id)}{note}</td>',
                    _e(case.algorithm or ""),
                    _e(case.key_derivation or ""),
                    _e(", ".join(case.clauses)),
                    _e(case.source),
                    status,
                    f'<td class="mono">{_e(case.expected)}</td>',
                    f'<td class="mono">{_e(case.got)}{detail}</td>',
                ]
            )
        )
    return f"<table>{''.join(rows)}</table>"


def render_html(report: Report) -> str:
    s = report.summary
    verdict = "pass" if report.passed else "fail"
    banner = (
        f"all {s.total} cases pass"
        if report.passed
        else f"{s.failed} of {s.total} cases FAIL"
        if s.total
        else "no cases were run"
    )
    excluded_by_file: dict[str, int] = {}
    for e in report.excluded:
        excluded_by_file[e.file] = excluded_by_file.get(e.file, 0) + 1
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Mita {_e(report.version)}: {_e(STANDARD)} conformance report</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{_e(STANDARD)} conformance report</h1>",
        f"<p>Mita {_e(report.version)}, the STS vectors shipped with it ({len(report.files)} files). "
        "Keys are shown only by fingerprint.</p>",
        f'<p class="banner {verdict}">{_e(banner)}; {len(report.excluded)} shipped entries excluded</p>',
        _tally_table("By kind", report.by_kind(), KINDS),
        _tally_table("By encryption algorithm", report.by_algorithm(), ALGORITHMS),
        _tally_table("By decoder key derivation", report.by_key_derivation(), KEY_DERIVATIONS),
        _files_table(report.by_file(), excluded_by_file),
    ]
    if report.failures:
        parts += ["<h2>Failures</h2>", _cases_table(report.failures)]
    parts.append("<h2>Every case</h2>")
    for kind, clause in KINDS.items():
        cases = [c for c in report.cases if c.kind == kind]
        if not cases:
            continue
        failed = sum(not c.passed for c in cases)
        mark = f' <span class="fail">{failed} failed</span>' if failed else ""
        parts.append(
            f"<details><summary><b>{_e(kind)}</b>: {_e(clause.title)} ({len(cases)} cases){mark}</summary>"
            f"{_cases_table(cases)}</details>"
        )
    if report.excluded:
        rows = [_row(["Entry", "Why it is not a conformance case"], header=True)]
        rows += [_row([f"<code>{_e(e.id)}</code>", _e(e.reason)]) for e in report.excluded]
        parts.append(f"<h2>Excluded entries</h2><table>{''.join(rows)}</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
