"""The report's two renderings: the documented JSON shape, and a self-contained, escaped HTML page."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser

import pytest

from mita.conformance import Case, Excluded, Failure, render_html, render_json, run_report
from mita.conformance.clauses import ALGORITHMS, KEY_DERIVATIONS, KINDS
from mita.conformance.report import Report

CASE_KEYS = {
    "id", "file", "section", "kind", "algorithm", "key_derivation", "clauses", "source", "status", "expected", "got",
    "checks", "failures", "note",
}  # fmt: skip
TALLY = {"total", "passed", "failed"}


@pytest.fixture(scope="module")
def report() -> Report:
    return run_report()


def test_json_shape(report: Report) -> None:
    doc = json.loads(render_json(report))
    assert list(doc) == [
        "format", "standard", "mita_version", "summary", "by_kind", "by_algorithm", "by_key_derivation", "by_file",
        "clauses", "cases", "excluded",
    ]  # fmt: skip
    assert doc["format"] == "mita-conformance-report/1" and doc["standard"] == "IEC 62055-41:2018"
    assert doc["summary"] == {"total": len(doc["cases"]), "passed": len(doc["cases"]), "failed": 0, "excluded": 4}
    assert list(doc["by_kind"]) == list(KINDS)
    assert list(doc["by_algorithm"]) == [*ALGORITHMS, "none"]
    assert list(doc["by_key_derivation"]) == [*KEY_DERIVATIONS, "none"]
    for group in ("by_kind", "by_algorithm", "by_key_derivation", "by_file"):
        assert all(set(t) == TALLY for t in doc[group].values())
        assert sum(t["total"] for t in doc[group].values()) == doc["summary"]["total"]
    assert set(doc["clauses"]) == {"kinds", "algorithms", "key_derivations"}
    assert doc["clauses"]["kinds"]["crc"] == {"title": KINDS["crc"].title, "clauses": ["6.3.7"], "spec": "§2"}
    for case in doc["cases"]:
        assert set(case) == CASE_KEYS
        assert case["status"] == "pass" and case["failures"] == []
        assert isinstance(case["clauses"], list) and all(isinstance(c, str) for c in case["clauses"])
    assert all(set(e) == {"id", "file", "section", "reason"} for e in doc["excluded"])


def _planted(source: str) -> Report:
    """A report with one failing case whose every text field is hostile markup."""
    bad = "<script>alert(1)</script><img src=https://evil.example/x.png>&amp;"
    case = Case(
        id=f"tokens.json#x/{bad}",
        file="tokens.json",
        section="x",
        kind="credit",
        algorithm="EA07",
        key_derivation="DKGA02",
        clauses=("6.3.5",),
        source=source,
        checks=("encode",),
        expected=bad,
        got=bad,
        failures=(Failure(bad, bad, bad),),
        note=bad,
    )
    return Report((case,), (Excluded("a", "tokens.json", "x", bad),), ("tokens.json",))


def test_json_of_a_failure() -> None:
    doc = json.loads(render_json(_planted("s")))
    assert doc["summary"] == {"total": 1, "passed": 0, "failed": 1, "excluded": 1}
    (case,) = doc["cases"]
    assert case["status"] == "fail" and case["failures"][0]["check"].startswith("<script>")


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def _elements(page: str) -> list[str]:
    """Every element or attribute that would make the page run, load or link something."""
    parser = _Tags()
    parser.feed(page)
    found = [f"<{t}>" for t, _ in parser.tags if t in ("script", "img", "link", "iframe", "object", "embed", "a")]
    found += [f"{t} {k}" for t, attrs in parser.tags for k in attrs if k in ("src", "href", "action")]
    return found + [f"{t} {k}" for t, attrs in parser.tags for k in attrs if k.startswith("on")]


def _external(page: str) -> list[str]:
    """The elements above, and any URL or style import at all (the real report names no address)."""
    return _elements(page) + re.findall(r"https?://|@import|url\(", page)


def test_html_is_self_contained(report: Report) -> None:
    page = render_html(report)
    assert not _external(page)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert f"all {report.summary.total} cases pass" in page
    for kind in KINDS:
        assert f"<code>{kind}</code>" in page
    assert "6.5.3.6" in page and "DKGA04" in page and "EA11" in page


def test_html_escapes_everything() -> None:
    page = render_html(_planted("<b onmouseover=alert(2)>x</b>"))
    assert not _elements(page)  # the hostile URL is there, as text
    assert "<script>" not in page and "<b onmouseover" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&amp;amp;" in page  # an entity in the data is shown, not interpreted
    assert "1 of 1 cases FAIL" in page and "<h2>Failures</h2>" in page
