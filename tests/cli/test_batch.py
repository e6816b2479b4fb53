"""The vectors again, through the real ``mita token batch`` (JSON Lines on stdin, one answer per line, in order).

Each file group runs the CLI once, as a subprocess, with all its requests in one stdin; every case is then
checked against the answer at its position. Error lines are mixed in with good ones to show that a bad line gets
``{"error": {"code", "message"}}`` and the batch goes on, in order, without a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest

from conftest import (
    VectorsMissingError,
    expected_fields,
    hexint,
    key_change_groups,
    load_json,
    reproduced,
    source_id,
    vector_ea,
    vector_params,
)
from mita import sts

CLI = [sys.executable, "-m", "mita.cli.main", "token", "batch"]
BASES = {"93": 1993, "14": 2014, "35": 2035}


@dataclass
class Case:
    """One request line and what its answer must be (an ``error`` expectation gives only the code)."""

    request: dict[str, Any] | str
    expected: dict[str, Any]
    index: int = field(default=-1)

    def line(self) -> str:
        return self.request if isinstance(self.request, str) else json.dumps(self.request)


def run_batch(lines: list[str]) -> tuple[list[Any], str]:
    """Feed ``lines`` to one ``mita token batch`` process; (answers parsed per line, stderr)."""
    proc = subprocess.run(CLI, input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines()], proc.stderr


def run_cases(params: list[Any]) -> dict[int, Any]:
    """Run every Case of a parameter list in one process; answers by case index."""
    cases = [p.values[0] for p in params if isinstance(p.values[0], Case)]
    if not cases:  # the vectors are missing: each test fails on its own, with the message
        return {}
    answers, stderr = run_batch([c.line() for c in cases])
    assert stderr == "", stderr
    assert len(answers) == len(cases), "one answer per request line"
    return {c.index: a for c, a in zip(cases, answers, strict=True)}


def numbered(params: list[Any]) -> list[Any]:
    for i, p in enumerate(params):
        if isinstance(p.values[0], Case):
            p.values[0].index = i
    return params


def check(case: Case, answer: Any) -> None:
    if "error" in case.expected:
        assert set(answer) == {"error"}, answer
        assert set(answer["error"]) == {"code", "message"}
        assert answer["error"]["code"] == case.expected["error"]["code"], answer
        assert isinstance(answer["error"]["message"], str) and answer["error"]["message"]
    else:
        assert answer == case.expected


def ea_number(ea: sts.EA | None) -> int:
    return int(ea or sts.EA.STA)


# ---------------------------------------------------------------- derive_key: dkga02 + dkga04


def _derive_cases() -> list[Any]:
    params = []
    for v in load_json("dkga02.json")["vectors"]:
        if not reproduced(v):
            continue
        req = {"op": "derive_key", "dkga": 2, "vending_key": v["vending_key_hex"], "drn": v["drn_iain"]}
        req |= {"iin": v["iin"], "kt": v["key_type"], "sgc": v["sgc"], "ti": int(v["ti"]), "krn": v["krn"]}
        params.append(pytest.param(Case(req, {"decoder_key": v["decoder_key_hex"]}), id=f"dkga02-{len(params)}"))
    for v in load_json("dkga04.json")["vectors"]:
        if not reproduced(v):
            continue
        pan = v["meter_pan"]
        iin = "600727" if pan.startswith("600727") else "0000"
        req = {"op": "derive_key", "dkga": 4, "vending_key": v["vending_key_hex"], "drn": pan[len(iin) : -1]}
        req |= {"kt": v["key_type"], "sgc": v["sgc"], "ti": int(v["ti"]), "krn": v["krn"]}
        req |= {"base_date": BASES[v["base_date"]], "ea": int(v["ea"])}  # the IIN follows from the DRN length
        case = Case(req, {"decoder_key": v["decoder_key_hex"]})
        params.append(pytest.param(case, id=f"dkga04-BD{v['base_date']}-EA{v['ea']}-{len(params)}"))
    return numbered(params)


DERIVE = vector_params(_derive_cases)


@pytest.fixture(scope="module")
def derive_answers() -> dict[int, Any]:
    return run_cases(DERIVE)


@pytest.mark.parametrize("case", DERIVE)
def test_batch_derive_key(case: Case, derive_answers: dict[int, Any]) -> None:
    check(case, derive_answers[case.index])


# ---------------------------------------------------------------- encode + decode: tokens.json, ea09


def _token_cases() -> list[Any]:
    params = []
    data = load_json("tokens.json")
    for v in data["compliance_and_nectar_vectors"]:
        if not reproduced(v):
            continue
        ea, fields = vector_ea(v), expected_fields(v)
        key = {"decoder_key": v["decoder_key_hex"]} if v["decoder_key_hex"] else {}
        label = f"{source_id(v['source'])}-{v['token']}"
        enc = {"op": "encode", "ea": ea_number(ea), **key, **fields}  # the decoded fields are the encode request
        params.append(pytest.param(Case(enc, {"token": v["token"]}), id=f"encode-{label}"))
        dec = {"op": "decode", "ea": ea_number(ea), **key, "token": v["token"]}
        params.append(pytest.param(Case(dec, fields), id=f"decode-{label}"))
    for v in data["other_vectors"]:
        if not reproduced(v) or "SAMPLE" in v["encryption_algorithm"]:
            continue  # the sample-table worked example is no EA a meter has: library test only
        dec = {"op": "decode", "ea": 7, "decoder_key": v["decoder_key_hex"], "token": v["token"]}
        token = sts.decode(v["token"], sts.EA.STA, hexint(v["decoder_key_hex"]))  # the fields; test_vectors checks them
        params.append(pytest.param(Case(dec, token.fields()), id=f"decode-other-{v['token']}"))
        enc = {"op": "encode", "ea": 7, "decoder_key": v["decoder_key_hex"], **token.fields()}
        params.append(pytest.param(Case(enc, {"token": v["token"]}), id=f"encode-other-{v['token']}"))
    for v in load_json("ea09_des_unverified.json")["vectors"]:
        dec = {"op": "decode", "ea": 9, "decoder_key": v["decoder_key_hex"], "token": v["token"]}
        try:
            token = sts.decode(v["token"], sts.EA.DEA, hexint(v["decoder_key_hex"]))
        except sts.CrcError:  # a bare DES block, not a token (see test_vectors.test_ea09_des)
            params.append(pytest.param(Case(dec, {"error": {"code": "crc_error"}}), id=f"decode-ea09-{v['token']}"))
            continue
        params.append(pytest.param(Case(dec, token.fields()), id=f"decode-ea09-{v['token']}"))
        enc = {"op": "encode", "ea": 9, "decoder_key": v["decoder_key_hex"], **token.fields()}
        params.append(pytest.param(Case(enc, {"token": v["token"]}), id=f"encode-ea09-{v['token']}"))
    return numbered(params)


TOKENS = vector_params(_token_cases)


@pytest.fixture(scope="module")
def token_answers() -> dict[int, Any]:
    return run_cases(TOKENS)


@pytest.mark.parametrize("case", TOKENS)
def test_batch_encode_decode(case: Case, token_answers: dict[int, Any]) -> None:
    check(case, token_answers[case.index])


# ---------------------------------------------------------------- key_change: sets from key_change.json


def _key_change_cases() -> list[Any]:
    params = []
    for g in key_change_groups():
        ea = ea_number(g["ea"])
        for sub, v in sorted(g["sections"].items()):
            dec = {"op": "decode", "ea": ea, "decoder_key": g["old_key"], "token": v["token"]}
            params.append(pytest.param(Case(dec, expected_fields(v)), id=f"decode-{g['id']}-s{sub}"))
        if not g["complete"]:
            continue
        f = g["fields"]
        req = {"op": "key_change", "ea": ea, "decoder_key": g["old_key"]}
        req |= {"ken": f["kenho"] << 4 | f["kenlo"], "krn": f["krn"], "kt": f["kt"], "ti": f["ti"], "ro": f["ro"]}
        if 8 in g["sections"]:
            new_key = f"{f['nkho']:08x}{f['nkmo2']:08x}{f['nkmo1']:08x}{f['nklo']:08x}"
            req |= {"new_key": new_key, "sgc": f"{f['sgcho'] << 12 | f['sgclo']:06d}"}
        else:
            req["new_key"] = f"{f['nkho']:08x}{f['nklo']:08x}"
        tokens = [g["sections"][sub]["token"] for sub in sorted(g["sections"])]
        params.append(pytest.param(Case(req, {"tokens": tokens}), id=f"key_change-{g['id']}"))
    return numbered(params)


KEY_CHANGES = vector_params(_key_change_cases)


@pytest.fixture(scope="module")
def key_change_answers() -> dict[int, Any]:
    return run_cases(KEY_CHANGES)


@pytest.mark.parametrize("case", KEY_CHANGES)
def test_batch_key_change(case: Case, key_change_answers: dict[int, Any]) -> None:
    check(case, key_change_answers[case.index])


# ---------------------------------------------------------------- tid: tid.json


def _tid_cases() -> list[Any]:
    params = []
    for v in load_json("tid.json")["vectors"]:
        req = {"op": "tid", "issued": v["issue_time"], "base_date": int(v["base_date"][:4])}
        # beyond 24 bits (NectarAPI's 2026-on-base-1993 unit test): refused, see test_vectors.test_tid
        expected = {"tid": v["tid"]} if v["tid"] <= 0xFFFFFF else {"error": {"code": "tid_out_of_range"}}
        params.append(pytest.param(Case(req, expected), id=f"{v['issue_time']}-base{v['base_date'][:4]}"))
    return numbered(params)


TIDS = vector_params(_tid_cases)


@pytest.fixture(scope="module")
def tid_answers() -> dict[int, Any]:
    return run_cases(TIDS)


@pytest.mark.parametrize("case", TIDS)
def test_batch_tid(case: Case, tid_answers: dict[int, Any]) -> None:
    check(case, tid_answers[case.index])


# ---------------------------------------------------------------- errors: each bad line answered, the batch goes on

KEY07 = "e653341f9d5bf36f"  # DKGA02 of the 0-02 suites' meter 600727 00000000000
TOKEN07 = "23716100501183194197"  # 0.1 kWh at 2004-03-01 13:55 under KEY07 (SPEC.md §6.3)
VK02 = "abababababababab"
DERIVE_OK = {"op": "derive_key", "dkga": 2, "vending_key": VK02, "drn": "00000000000", "kt": 2, "sgc": "123456"}
DERIVE_OK |= {"ti": 1, "krn": 1}
TID_OK = {"op": "tid", "issued": "1996-03-25T13:55", "base_date": 1993}

DECODE07 = {"op": "decode", "ea": 7, "decoder_key": KEY07, "token": TOKEN07}
CREDIT07 = {"op": "encode", "ea": 7, "decoder_key": KEY07, "class": 0, "subclass": 0, "rnd": 5, "tid": 1, "amount": 1}
KEY_CHANGE07 = {"op": "key_change", "ea": 7, "decoder_key": KEY07, "new_key": "0123456789abcdef", "ken": 255}
KEY_CHANGE07 |= {"krn": 2, "kt": 2, "ti": 1}


def err(code: str) -> dict[str, Any]:
    return {"error": {"code": code}}


# (label, request line: a dict is sent as JSON, a str as it is; expected answer)
ERROR_LINES: list[tuple[str, dict[str, Any] | str, dict[str, Any]]] = [
    ("tid-ok", TID_OK, {"tid": 1698595}),
    ("malformed-json", '{"op": "tid", "issued": ', err("invalid_json")),
    ("not-json-at-all", "this is not json", err("invalid_json")),
    ("tid-ok-after-bad-lines", {**TID_OK, "issued": "1996-03-25T13:56"}, {"tid": 1698596}),
    ("json-array", "[1, 2, 3]", err("invalid_request")),
    ("json-string", '"derive_key"', err("invalid_request")),
    ("json-null", "null", err("invalid_request")),
    ("unknown-op", {"op": "frobnicate"}, err("unknown_op")),
    ("no-op", {"token": TOKEN07}, err("unknown_op")),
    ("op-not-a-string", {"op": 7}, err("unknown_op")),
    ("derive-ok", DERIVE_OK, {"decoder_key": KEY07}),
    ("missing-sgc", {k: v for k, v in DERIVE_OK.items() if k != "sgc"}, err("missing_field")),
    ("missing-token", {k: v for k, v in DECODE07.items() if k != "token"}, err("missing_field")),
    ("missing-issued", {"op": "tid", "base_date": 1993}, err("missing_field")),
    ("missing-krn", {k: v for k, v in KEY_CHANGE07.items() if k != "krn"}, err("missing_field")),
    ("key-15-hex", {**DECODE07, "decoder_key": KEY07[:-1]}, err("invalid_field")),
    ("key-32-hex-for-ea07", {**DECODE07, "decoder_key": KEY07 * 2}, err("invalid_field")),
    ("key-16-hex-for-ea11", {**DECODE07, "ea": 11}, err("invalid_field")),
    ("key-not-hex", {**DECODE07, "decoder_key": "z" * 16}, err("invalid_field")),
    ("vending-key-14-hex", {**DERIVE_OK, "vending_key": VK02[:14]}, err("invalid_field")),
    ("new-key-20-hex", {**KEY_CHANGE07, "new_key": "0" * 20}, err("invalid_field")),
    ("key-change-ok", KEY_CHANGE07, {"tokens": None}),  # two tokens; checked by decoding them
    ("wrong-check-digit", {**DERIVE_OK, "drn": "00000000001"}, err("check_digit_error")),
    ("wrong-iin-for-drn", {**DERIVE_OK, "iin": "0000"}, err("format_error")),
    ("token-letter", {**DECODE07, "token": TOKEN07[:-1] + "x"}, err("format_error")),
    ("token-19-digits", {**DECODE07, "token": TOKEN07[1:]}, err("format_error")),
    ("token-2^66", {**DECODE07, "token": str(1 << 66)}, err("format_error")),
    ("decode-ok", DECODE07, {"class": 0, "subclass": 0, "rnd": 5, "tid": 5871715, "amount": 1}),
    ("wrong-key", {**DECODE07, "decoder_key": "0abc12def3456789"}, err("crc_error")),
    ("mistyped-token", {**DECODE07, "token": TOKEN07[:-1] + "8"}, err("crc_error")),
    ("tid-before-base", {**TID_OK, "issued": "1992-12-31T23:59"}, err("tid_out_of_range")),
    ("tid-after-rollover", {**TID_OK, "issued": "2024-11-24T20:16"}, err("tid_out_of_range")),
    ("tid-last-minute", {**TID_OK, "issued": "2024-11-24T20:15"}, {"tid": 0xFFFFFF}),
    ("tid-bad-time", {**TID_OK, "issued": "yesterday"}, err("format_error")),
    ("tid-bad-base", {**TID_OK, "base_date": 2000}, err("format_error")),
    ("bad-ea", {**DECODE07, "ea": 8}, err("format_error")),
    ("class-3", {**CREDIT07, "class": 3}, err("unsupported")),
    ("reserved-subclass", {**CREDIT07, "class": 2, "subclass": 12}, err("unsupported")),
    ("dkga-1", {**DERIVE_OK, "dkga": 1, "vending_key": "ab" * 20}, err("unsupported")),
    ("amount-too-big", {**CREDIT07, "amount": 18_201_625}, err("range_error")),
    ("amount-negative", {**CREDIT07, "amount": -1}, err("range_error")),
    ("tid-25-bits", {**CREDIT07, "tid": 1 << 24}, err("range_error")),
    ("tid-a-string", {**CREDIT07, "tid": "1"}, err("invalid_field")),
    ("amount-a-float", {**CREDIT07, "amount": 1.5}, err("invalid_field")),
    ("credit-ok", CREDIT07, {"token": sts.encode(sts.TransferCredit(1, 1, 5), sts.EA.STA, int(KEY07, 16))}),
    ("tid-ok-at-the-end", {**TID_OK, "issued": "2004-03-01T13:55"}, {"tid": 5871715}),
]


def test_batch_errors_are_answers_and_the_batch_goes_on() -> None:
    lines = []
    for i, (_, request, _) in enumerate(ERROR_LINES):
        lines.append(request if isinstance(request, str) else json.dumps(request))
        if i == 3:
            lines += ["", "   "]  # blank lines are skipped: no answer for them
    answers, stderr = run_batch(lines)
    assert stderr == ""
    assert len(answers) == len(ERROR_LINES), "one answer per non-blank line"
    for (label, _, expected), answer in zip(ERROR_LINES, answers, strict=True):
        if expected == {"tokens": None}:  # a key change set: its sections decode with the old key
            sections = [sts.decode(t, sts.EA.STA, hexint(KEY07)) for t in answer["tokens"]]
            assert sts.assemble(sections).key == 0x0123456789ABCDEF, label  # type: ignore[arg-type]
            continue
        try:
            check(Case("", expected), answer)
        except AssertionError as exc:
            raise AssertionError(f"line {label!r}: {exc}") from exc
        if "error" in answer:  # keys are secrets: no key material in any message
            message = answer["error"]["message"].lower()
            for secret in (KEY07, "0abc12def3456789", VK02, KEY07[:-1], "ab" * 20):
                assert secret not in message, (label, message)


def test_batch_left_out_rnd_is_drawn() -> None:
    request = {"op": "encode", "ea": 7, "decoder_key": KEY07, "class": 0, "subclass": 0, "tid": 5871715, "amount": 1}
    answers, stderr = run_batch([json.dumps(request)] * 16)
    assert stderr == ""
    rnds = set()
    for answer in answers:
        token = sts.decode(answer["token"], sts.EA.STA, hexint(KEY07))
        assert (token.tid, token.amount) == (5871715, 1)  # type: ignore[attr-defined]
        rnds.add(token.rnd)  # type: ignore[attr-defined]
    assert rnds <= set(range(16)) and len(rnds) > 1  # 16 equal draws: chance 16**-15


def test_batch_survives_a_deeply_nested_line() -> None:
    """A hostile line (JSON nested beyond the parser's recursion limit) is one bad line, not the end."""
    answers, stderr = run_batch(["[" * 100_000 + "]" * 100_000, json.dumps(TID_OK)])
    assert len(answers) == 2
    assert answers[0]["error"]["code"] in ("invalid_json", "invalid_request")
    assert answers[1] == {"tid": 1698595}
    assert stderr == ""


def test_batch_survives_a_line_that_is_not_utf8() -> None:
    """Bytes that are not UTF-8 are a bad line too. ``PYTHONIOENCODING=utf-8:strict`` gives the stdin that a
    UTF-8 locale (en_US.UTF-8 and the like) gives; the C/POSIX locale would hide the problem."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    data = (json.dumps(TID_OK) + "\n").encode() + b"\xff\xfe{}\n" + (json.dumps(TID_OK) + "\n").encode()
    proc = subprocess.run(CLI, input=data, capture_output=True, timeout=120, env=env)
    assert b"Traceback" not in proc.stderr and proc.returncode == 0, proc.stderr.decode(errors="replace")[-2000:]
    answers = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    assert len(answers) == 3
    assert answers[0] == answers[2] == {"tid": 1698595}
    assert answers[1]["error"]["code"] in ("invalid_json", "invalid_request")


def test_vectors_missing_is_reported_not_skipped() -> None:
    """The helper the batch groups use turns a missing folder into a failing parameter, never an empty list."""

    def missing() -> list[Any]:
        raise VectorsMissingError("no vectors here")

    params = vector_params(missing)
    assert len(params) == 1 and isinstance(params[0].values[0], VectorsMissingError)
