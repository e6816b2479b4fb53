"""``mita conformance`` and ``mita conformance check`` as a vendor runs them: a real process, files, exit codes."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import expected_fields, load_json

MITA = [sys.executable, "-m", "mita.cli.main", "conformance"]
V = load_json("tokens.json")["compliance_and_nectar_vectors"][0]
REQUEST = {"op": "encode", "ea": 7, "decoder_key": V["decoder_key_hex"], **expected_fields(V)}


def mita(*args: str, stdin: str | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*MITA, *args], input=stdin, capture_output=True, text=True, timeout=120, cwd=cwd)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_report_json_every_case_passes(tmp_path: Path) -> None:
    proc = mita("--json", "--html", str(tmp_path / "page.html"), "--out", str(tmp_path / "out"))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["summary"]["failed"] == 0 and doc["summary"]["passed"] == doc["summary"]["total"] > 1000
    assert json.loads((tmp_path / "out" / "conformance.json").read_text()) == doc
    page = (tmp_path / "page.html").read_text()
    assert page == (tmp_path / "out" / "conformance.html").read_text()
    assert "https://" not in page and "<script" not in page
    assert "wrote" in proc.stderr


def test_report_text_for_a_person() -> None:
    proc = mita()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{json.loads(mita('--json').stdout)['summary']['total']} cases: ")
    assert "by algorithm:" in proc.stdout and "DKGA04" in proc.stdout and " 0 fail " in proc.stdout


def test_check_agrees_and_disagrees_with_exit_codes(tmp_path: Path) -> None:
    agree = json.dumps(REQUEST | {"id": "a", "token": V["token"]})
    disagree = json.dumps(REQUEST | {"id": "b", "amount": 2560, "token": V["token"]})
    (tmp_path / "ok.jsonl").write_text(agree + "\n")
    (tmp_path / "mixed.jsonl").write_text(f"{agree}\n{disagree}\nnot json\n")

    ok = mita("check", str(tmp_path / "ok.jsonl"))
    assert ok.returncode == 0 and ok.stdout.startswith("line 1 [a] encode: agree")

    mixed = mita("check", str(tmp_path / "mixed.jsonl"), "--json")
    assert mixed.returncode == 4
    assert mixed.stderr.strip() == "error[disagreement]: 1 of 3 lines disagree"
    doc = json.loads(mixed.stdout)
    assert doc["summary"] == {"total": 3, "agree": 1, "disagree": 1, "error": 1}
    assert doc["results"][1]["differences"] == [{"field": "amount", "ours": 2560, "theirs": 18, "token": None}]
    assert doc["results"][2]["error"]["code"] == "invalid_json"

    unreadable = mita("check", "-", stdin="[]\n")
    assert unreadable.returncode == 1 and "error[unreadable_lines]" in unreadable.stderr


def test_check_a_missing_file_is_one_error_line(tmp_path: Path) -> None:
    proc = mita("check", str(tmp_path / "nope.jsonl"))
    assert proc.returncode == 1
    assert proc.stderr.startswith("error[file_unreadable]: cannot read") and proc.stderr.count("\n") == 1


def test_usage_errors() -> None:
    assert mita("check").returncode == 2
    assert mita("--nope").stderr.startswith("error[usage]:")


def test_a_failing_case_exits_4_and_is_shown(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """In process (tests/cli_run.py), with the report run on a copy of the vectors holding one planted token."""
    import mita.conformance
    from cli_run import run
    from mita.conformance import vectors

    for name in vectors.FILES:
        shutil.copy(Path(str(vectors.folder())) / name, tmp_path / name)
    data = json.loads((tmp_path / "tokens.json").read_text())
    data["compliance_and_nectar_vectors"][0]["token"] = "73508892949665105368"
    (tmp_path / "tokens.json").write_text(json.dumps(data))
    real = mita.conformance.run_report
    monkeypatch.setattr(mita.conformance, "run_report", lambda: real(tmp_path))

    total = real().summary.total
    result = run(["conformance", "--html", str(tmp_path / "page.html")])
    assert result.exit_code == 4
    assert result.stderr.strip().endswith(f"error[conformance_failed]: 1 of {total} conformance cases fail")
    assert "FAIL tokens.json#compliance_and_nectar_vectors/0 (credit;" in result.stdout
    assert "  encode: expected 73508892949665105368, got 73508892949665105367" in result.stdout
    assert f"1 of {total} cases FAIL" in (tmp_path / "page.html").read_text()


def test_missing_vectors_are_one_error_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import mita.conformance
    from cli_run import run

    real = mita.conformance.run_report
    monkeypatch.setattr(mita.conformance, "run_report", lambda: real(tmp_path))  # an empty folder
    result = run(["conformance", "--json"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error[vectors_missing]: STS conformance vector file tokens.json is not in")
