"""mita.conformance: a conformance report any vendor can run, and a check of another system's tokens.

* :func:`run_report` runs every case of every STS vector file shipped with Mita (``mita.conformance.vectors``)
  through the engine; :func:`render_json` and :func:`render_html` write the report (cases by kind, algorithm
  and key derivation, pass or fail with expected and got, and the IEC 62055-41 clause each exercises, from the
  one table in :mod:`mita.conformance.clauses`).
* :func:`check` compares another system's answers to ``mita token batch`` requests with Mita's, line by line,
  and names the field that differs; :func:`render_check_json` and :func:`render_check_text` write the results.

Pure like the engine below it: no database, no network, no clock.
"""

from mita.conformance.case import Case, Excluded, Failure
from mita.conformance.check import ANSWERS, CheckResult, Handler, check
from mita.conformance.differences import NOT_A_TOKEN, Difference
from mita.conformance.render_check import render_check_json, render_check_text
from mita.conformance.render_check import summary as check_summary
from mita.conformance.render_html import render_html
from mita.conformance.render_json import render_json
from mita.conformance.report import Report, Tally, run_report

__all__ = [
    "ANSWERS",
    "NOT_A_TOKEN",
    "Case",
    "CheckResult",
    "Difference",
    "Excluded",
    "Failure",
    "Handler",
    "Report",
    "Tally",
    "check",
    "check_summary",
    "render_check_json",
    "render_check_text",
    "render_html",
    "render_json",
    "run_report",
]
