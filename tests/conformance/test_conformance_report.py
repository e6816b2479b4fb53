"""The conformance report: every shipped vector case passes, none is dropped, and a planted error is caught.

The report is what a vendor runs (``mita conformance``); these tests hold it to the same standard as the vector
tests: every entry of every list of every shipped file is a case or excluded with a reason, every case passes,
and a vector changed in a copy of the files fails exactly the case it belongs to, naming the check.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from mita.conformance import Case, run_report, vectors
from mita.conformance.clauses import ALGORITHMS, KEY_DERIVATIONS, KINDS, clauses_of
from mita.conformance.render_json import render_json
from mita.conformance.report import Report
from mita.conformance.runners import RUNNERS


@pytest.fixture(scope="module")
def report() -> Report:
    return run_report()


def test_every_shipped_case_passes(report: Report) -> None:
    failed = [(c.id, [(f.check, f.expected, f.got) for f in c.failures]) for c in report.failures]
    assert not failed, f"{len(failed)} conformance cases fail: {failed[:10]}"
    assert report.passed
    assert report.summary.total == len(report.cases) > 1000
    assert report.summary.failed == 0


def test_every_shipped_file_has_a_runner_and_nothing_else_is_shipped() -> None:
    shipped = {p.name for p in vectors.folder().iterdir() if p.name.endswith(".json")}
    assert shipped == set(vectors.FILES) == set(RUNNERS)
    assert len(vectors.FILES) == len(set(vectors.FILES)) == 12


def _list_sections(data: dict[str, Any]) -> dict[str, int]:
    return {k: len(v) for k, v in data.items() if isinstance(v, list) and v and isinstance(v[0], dict)}


@pytest.mark.parametrize("name", vectors.FILES)
def test_no_entry_is_dropped(report: Report, name: str) -> None:
    """Every entry of every list section is a case or excluded (with a reason), exactly once."""
    sections = _list_sections(vectors.load(name))
    assert sections, f"{name} has no list of entries"
    seen: dict[str, int] = {}
    for item in (*report.cases, *report.excluded):
        if item.file == name and item.section in sections:
            seen[item.section] = seen.get(item.section, 0) + 1
    assert seen == sections
    ids = [c.id for c in report.cases if c.file == name] + [e.id for e in report.excluded if e.file == name]
    assert len(ids) == len(set(ids)), "case ids are unique"
    assert all(e.reason for e in report.excluded)


def test_counts_match_the_vector_suite(report: Report) -> None:
    """The same entries count as in tests/sts/test_vectors.py (COUNTS there): all verified tokens, blocks, keys."""
    by_section: dict[tuple[str, str], int] = {}
    for c in report.cases:
        by_section[(c.file, c.section)] = by_section.get((c.file, c.section), 0) + 1
    assert by_section[("tokens.json", "compliance_and_nectar_vectors")] == 306
    assert by_section[("tokens.json", "other_vectors")] == 20
    assert by_section[("sta.json", "vectors")] == 175
    assert by_section[("misty1.json", "sts_token_block_vectors")] == 97
    assert by_section[("crc.json", "vectors")] == 249
    assert by_section[("key_change.json", "vectors")] == 38
    assert sum(1 for c in report.cases if c.section == "sets" and "assemble (in order)" in c.checks) == 13
    assert by_section[("tid.json", "vectors")] == 123


def test_cases_are_classified_by_the_clause_table(report: Report) -> None:
    for case in report.cases:
        assert case.kind in KINDS
        assert case.algorithm is None or case.algorithm in ALGORITHMS
        assert case.key_derivation is None or case.key_derivation in KEY_DERIVATIONS
        assert case.clauses == clauses_of(case.kind, case.algorithm, case.key_derivation) and case.clauses
        assert case.checks and case.expected
    assert all(report.by_kind()[k].total > 0 for k in KINDS), report.by_kind()
    assert all(report.by_algorithm()[a].total > 0 for a in ALGORITHMS)
    assert all(report.by_key_derivation()[d].total > 0 for d in KEY_DERIVATIONS)


def test_a_compliance_token_names_its_algorithm_and_key_derivation(report: Report) -> None:
    """59386323472137426967: SPEC.md §6.5's example, DKGA04 and EA11, through every layer."""
    case = next(c for c in report.cases if c.file == "tokens.json" and c.expected == "59386323472137426967")
    assert (case.kind, case.algorithm, case.key_derivation) == ("credit", "EA11", "DKGA04")
    assert {"6.3.6.2", "6.5.6", "6.5.3.6"} <= set(case.clauses)
    assert {"encode", "decode", "encrypt", "decrypt", "crc field", "class bits inserted"} <= set(case.checks)


def test_no_key_in_the_report(report: Report) -> None:
    """Decoder and vending keys of the vectors appear only as fingerprints."""
    text = render_json(report).lower()
    keys: set[str] = set()
    for name in vectors.FILES:
        for found in _values(vectors.load(name), ("decoder_key_hex", "vending_key_hex", "vending_key", "key_hex")):
            keys.add(found.lower())
    assert len(keys) > 20
    leaked = sorted(k for k in keys if k in text)
    assert not leaked, f"keys in the report: {len(leaked)}"
    assert "key sha256:" in text


def _values(data: Any, names: tuple[str, ...]) -> list[str]:
    if isinstance(data, dict):
        out = [v for k, v in data.items() if k in names and isinstance(v, str) and len(v) >= 16]
        return out + [x for v in data.values() for x in _values(v, names)]
    if isinstance(data, list):
        return [x for v in data for x in _values(v, names)]
    return []


def test_the_report_is_deterministic(report: Report) -> None:
    assert render_json(report) == render_json(run_report())


# ---------------------------------------------------------------- a copy of the vectors with a planted error


def _copy(tmp_path: Path) -> Path:
    for name in vectors.FILES:
        shutil.copy(Path(str(vectors.folder())) / name, tmp_path / name)
    return tmp_path


def _edit(folder: Path, name: str, change: Any) -> None:
    data = json.loads((folder / name).read_text(encoding="utf-8"))
    change(data)
    (folder / name).write_text(json.dumps(data), encoding="utf-8")


def _only_failure(report: Report) -> Case:
    assert len(report.failures) == 1, [c.id for c in report.failures]
    return report.failures[0]


def test_a_planted_token_fails_its_case_naming_the_checks(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    original = vectors.load("tokens.json")["compliance_and_nectar_vectors"][0]["token"]
    planted = original[:-1] + str((int(original[-1]) + 1) % 10)
    _edit(folder, "tokens.json", lambda d: d["compliance_and_nectar_vectors"][0].update(token=planted))
    report = run_report(folder)
    case = _only_failure(report)
    assert case.id == "tokens.json#compliance_and_nectar_vectors/0"
    assert (case.expected, case.got) == (planted, original)
    checks = {f.check: f for f in case.failures}
    assert {"encode", "decode", "20 digits read"} <= set(checks)
    assert checks["decode"].got.startswith("error[crc_error]")
    assert report.summary.failed == 1 and not report.passed


def test_a_planted_amount_fails_the_amount_checks(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    v = vectors.load("tokens.json")["compliance_and_nectar_vectors"][0]
    units = v["fields"]["amount_base_units"]
    _edit(
        folder,
        "tokens.json",
        lambda d: d["compliance_and_nectar_vectors"][0]["fields"].update(amount_base_units=units + 1),
    )
    case = _only_failure(run_report(folder))
    names = {f.check for f in case.failures}
    assert {"encode", "decode", "data block", "amount decoded", "amount encoded"} <= names
    decode = next(f for f in case.failures if f.check == "decode")
    assert f'"amount": {units + 1}' in decode.expected and f'"amount": {units}' in decode.got


def test_a_planted_decoder_key_fails_by_fingerprint(tmp_path: Path) -> None:
    """The DKGA02 case fails, and so does the key change set whose new key was that derived key."""
    folder = _copy(tmp_path)
    _edit(folder, "dkga02.json", lambda d: d["vectors"][0].update(decoder_key_hex="00" * 8))
    report = run_report(folder)
    assert {c.id for c in report.failures} == {
        "dkga02.json#vectors/0",
        "key_change.json#sets/STS531-1-0-02-CTSA05.step2-EA07",
    }
    case = next(c for c in report.failures if c.file == "dkga02.json")
    first = case.failures[0]
    assert first.check == "decoder key"
    assert first.expected.startswith("key sha256:") and first.got.startswith("key sha256:")
    assert first.expected != first.got


def test_a_vector_the_runner_cannot_read_fails_that_case_only(tmp_path: Path) -> None:
    folder = _copy(tmp_path)
    _edit(folder, "crc.json", lambda d: d["vectors"][3].pop("bytes7_hex"))
    report = run_report(folder)
    case = _only_failure(report)
    assert case.id == "crc.json#vectors/3"
    assert case.failures[-1].check == "read the vector" and "KeyError" in case.failures[-1].got
    assert report.summary.total == run_report().summary.total


def test_a_missing_vector_file_is_a_typed_error(tmp_path: Path) -> None:
    with pytest.raises(vectors.VectorsMissingError, match=r"tokens\.json"):
        run_report(tmp_path)
