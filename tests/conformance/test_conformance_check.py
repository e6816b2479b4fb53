"""``check``: another system's answers compared with Mita's, line by line.

The shipped vectors, written as batch requests with the vectors' answers, all agree. Planted disagreements (a
different amount, TID or rnd, a flipped digit, another key, a CRC where CRC_C belongs, another class, a key
change section for another key) are named by field; malformed lines get a typed error each and never stop the
run; decoder and vending keys are never echoed.
"""

from __future__ import annotations

import json
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import expected_fields, hexint, key_change_groups, load_json, reproduced, vector_ea
from mita import sts
from mita.cli.token_ops import handle
from mita.conformance import NOT_A_TOKEN, CheckResult, check, render_check_json, render_check_text
from mita.sts import EA, CreditKind, TransferCredit
from mita.sts import ea as ea_mod
from mita.sts.amount import MAX_UNITS, decode_amount, encode_amount
from mita.sts.codec import insert_class, to_digits
from mita.sts.crc import crc_field
from mita.sts.tokens import to_block

EA_NUMBER = {EA.STA: 7, EA.DEA: 9, EA.MISTY1: 11}


def run(lines: list[dict[str, Any] | str]) -> list[CheckResult]:
    return list(check([x if isinstance(x, str) else json.dumps(x) for x in lines], handle))


def fields_named(result: CheckResult) -> list[str]:
    return [d.field for d in result.differences]


# ---------------------------------------------------------------- the shipped vectors, as another system's answers


def _vector_lines() -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for i, v in enumerate(load_json("tokens.json")["compliance_and_nectar_vectors"]):
        if not reproduced(v):
            continue
        ea = EA_NUMBER.get(vector_ea(v) or EA.STA)
        key = {"decoder_key": v["decoder_key_hex"]} if v["decoder_key_hex"] else {}
        fields = expected_fields(v)
        lines.append({"id": f"encode-{i}", "op": "encode", "ea": ea, **key, **fields, "token": v["token"]})
        lines.append({"id": f"decode-{i}", "op": "decode", "ea": ea, **key, "token": v["token"], "fields": fields})
    for g in key_change_groups():
        if not g["complete"]:
            continue
        f = g["fields"]
        req = {"id": g["id"], "op": "key_change", "ea": EA_NUMBER[g["ea"]], "decoder_key": g["old_key"]}
        req |= {"ken": f["kenho"] << 4 | f["kenlo"], "krn": f["krn"], "kt": f["kt"], "ti": f["ti"], "ro": f["ro"]}
        if 8 in g["sections"]:
            req["new_key"] = f"{f['nkho']:08x}{f['nkmo2']:08x}{f['nkmo1']:08x}{f['nklo']:08x}"
            req["sgc"] = f"{f['sgcho'] << 12 | f['sgclo']:06d}"
        else:
            req["new_key"] = f"{f['nkho']:08x}{f['nklo']:08x}"
        lines.append(req | {"tokens": [g["sections"][s]["token"] for s in sorted(g["sections"])]})
    for v in load_json("dkga02.json")["vectors"]:
        req = {"op": "derive_key", "dkga": 2, "vending_key": v["vending_key_hex"], "drn": v["drn_iain"]}
        req |= {"iin": v["iin"], "kt": v["key_type"], "sgc": v["sgc"], "ti": int(v["ti"]), "krn": v["krn"]}
        lines.append(req | {"decoder_key": v["decoder_key_hex"]})
    for v in load_json("dkga04.json")["vectors"]:
        pan = v["meter_pan"]
        iin = "600727" if pan.startswith("600727") else "0000"
        req = {"op": "derive_key", "dkga": 4, "vending_key": v["vending_key_hex"], "drn": pan[len(iin) : -1]}
        req |= {"kt": v["key_type"], "sgc": v["sgc"], "ti": int(v["ti"]), "krn": v["krn"], "ea": int(v["ea"])}
        req |= {"base_date": {"93": 1993, "14": 2014, "35": 2035}[v["base_date"]]}
        lines.append(req | {"decoder_key": v["decoder_key_hex"]})
    for v in load_json("tid.json")["vectors"]:
        req = {"op": "tid", "issued": v["issue_time"], "base_date": int(v["base_date"][:4])}
        answer = {"tid": v["tid"]} if v["tid"] <= 0xFFFFFF else {"error": {"code": "tid_out_of_range"}}
        lines.append(req | answer)
    return lines


def test_the_shipped_vectors_agree() -> None:
    lines = _vector_lines()
    results = run(lines)
    assert len(results) == len(lines) > 750
    disagreeing = [(r.line, r.id, r.verdict, r.differences, r.error) for r in results if not r.agreed]
    assert not disagreeing, disagreeing[:5]
    assert {r.op for r in results} == {"encode", "decode", "key_change", "derive_key", "tid"}


# ---------------------------------------------------------------- planted disagreements, named


V = load_json("tokens.json")["compliance_and_nectar_vectors"][0]  # class 0, EA07, rnd 5
KEY = V["decoder_key_hex"]
BASE = {"op": "encode", "ea": 7, "decoder_key": KEY, **expected_fields(V)}


def _credit(**fields: Any) -> str:
    values = expected_fields(V) | fields
    token = TransferCredit(values["tid"], values["amount"], values["rnd"], CreditKind(values["subclass"]))
    return sts.encode(token, EA.STA, hexint(KEY))


def _one(line: dict[str, Any]) -> CheckResult:
    (result,) = run([line])
    return result


def test_agreement() -> None:
    result = _one(BASE | {"token": V["token"]})
    assert result.verdict == "agree" and not result.differences


@pytest.mark.parametrize(
    ("theirs", "field"),
    [
        ({"amount": 2560}, "amount"),
        ({"tid": 1234}, "tid"),
        ({"rnd": 6}, "rnd"),
    ],
    ids=["amount", "tid", "rnd"],
)
def test_a_different_field_is_named(theirs: dict[str, Any], field: str) -> None:
    result = _one(BASE | {"token": _credit(**theirs)})
    assert result.verdict == "disagree"
    assert fields_named(result) == [field]
    (d,) = result.differences
    assert (d.ours, d.theirs) == (expected_fields(V)[field], theirs[field])


def test_a_flipped_digit_does_not_decrypt() -> None:
    token = V["token"]
    for position in (19, 12, 3):  # (the first digit could push the value past 66 bits: a format error)
        flipped = token[:position] + str((int(token[position]) + 1) % 10) + token[position + 1 :]
        result = _one(BASE | {"token": flipped})
        assert result.verdict == "disagree"
        assert [(d.field, d.theirs) for d in result.differences] == [("decrypt", NOT_A_TOKEN)]


def test_a_token_for_another_key_does_not_decrypt() -> None:
    other = sts.encode(TransferCredit(V["fields"]["tid"], 18, 5), EA.STA, hexint(KEY) ^ 1 << 40)
    assert fields_named(_one(BASE | {"token": other})) == ["decrypt"]


def test_not_twenty_digits_is_a_format_difference() -> None:
    result = _one(BASE | {"token": "1234-5678"})
    assert fields_named(result) == ["format"] and "20 digits" in str(result.differences[0].theirs)


def test_a_plain_crc_where_crc_c_belongs_is_named_crc() -> None:
    key = hexint(KEY)
    token = sts.CurrencyCredit(tid=100, amount=12345, kind=CreditKind.ELECTRICITY_CURRENCY)
    block = to_block(token)
    info = 0 << 48 | 4 << 44 | (block >> 16 & 0xFFFFFFFFFFF)
    wrong = block & ~0xFFFF | crc_field(info, currency=False)
    theirs = to_digits(insert_class(ea_mod.encrypt(EA.STA, wrong, key), 0))
    request = {"op": "encode", "ea": 7, "decoder_key": KEY, "class": 0, "subclass": 4, "tid": 100, "amount": 12345}
    result = _one(request | {"token": theirs})
    assert fields_named(result) == ["crc"]
    assert result.differences[0].ours == f"{block & 0xFFFF:04x}"


def test_another_class_is_named() -> None:
    theirs = sts.encode(sts.SetMaximumPowerLimit(tid=V["fields"]["tid"], mpl=18, rnd=5), EA.STA, hexint(KEY))
    named = fields_named(_one(BASE | {"token": theirs}))
    assert named[:2] == ["class", "subclass"] and "amount" in named and "mpl" in named


def _key_change_line() -> tuple[dict[str, Any], list[str]]:
    line = next(x for x in _vector_lines() if x["op"] == "key_change" and len(x["tokens"]) == 4)
    return line, line["tokens"]


def test_a_key_change_set_in_another_order_agrees() -> None:
    line, tokens = _key_change_line()
    result = _one(line | {"tokens": tokens[::-1]})
    assert result.verdict == "agree" and "another order" in result.note


def test_a_key_change_section_for_another_key_is_named() -> None:
    line, _ = _key_change_line()
    other = line | {"new_key": line["new_key"][:-8] + "00000000"}  # another NKLO: the 2nd section differs
    theirs = handle({k: v for k, v in other.items() if k not in ("tokens", "id")})["tokens"]
    result = _one(line | {"tokens": theirs})
    assert [(d.field, d.token) for d in result.differences] == [("nklo", 1)]
    assert result.differences[0].ours == int(line["new_key"][-8:], 16)


def test_a_missing_key_change_section() -> None:
    line, tokens = _key_change_line()
    result = _one(line | {"tokens": tokens[:3]})
    assert fields_named(result) == ["tokens", "tokens"] and result.differences[1].theirs == "missing"


def test_a_different_decoder_key_is_named_by_fingerprint_only() -> None:
    line = next(x for x in _vector_lines() if x["op"] == "derive_key")
    theirs = f"{int(line['decoder_key'], 16) ^ 1:016x}"
    result = _one(line | {"decoder_key": theirs})
    assert fields_named(result) == ["decoder_key"]
    out = render_check_text([result]) + render_check_json([result])
    for secret in (line["decoder_key"], theirs, line["vending_key"]):
        assert secret not in out
    assert out.count("key sha256:") == 4


def test_decode_fields_are_compared() -> None:
    fields = expected_fields(V) | {"amount": 19}
    line = {"op": "decode", "ea": 7, "decoder_key": KEY, "token": V["token"], "fields": fields}
    result = _one(line)
    assert [(d.field, d.ours, d.theirs) for d in result.differences] == [("amount", 18, 19)]


def test_tid_and_refusals() -> None:
    tid = {"op": "tid", "issued": "2020-01-01T00:00", "base_date": 2014}
    too_big = BASE | {"amount": MAX_UNITS + 1}
    results = run(
        [
            tid | {"tid": 3155040 - 1},
            too_big | {"token": V["token"]},
            too_big | {"error": {"code": "range_error"}},
            BASE | {"error": {"code": "whatever"}},
        ]
    )
    assert [(r.verdict, fields_named(r)) for r in results] == [
        ("disagree", ["tid"]),
        ("disagree", ["refusal"]),
        ("agree", []),
        ("disagree", ["refusal"]),
    ]
    assert results[0].differences[0].ours == 3155040  # 2,191 days (one leap day) of minutes after 2014-01-01
    assert "both refuse" in results[2].note


# ---------------------------------------------------------------- malformed lines: a typed error each


def test_malformed_lines_get_a_typed_error_each() -> None:
    lines: list[dict[str, Any] | str] = [
        "not json",
        "[1, 2]",
        "",
        "   ",
        {"op": "sing", "token": "1"},
        {"op": 7},
        BASE,
        BASE | {"token": ["1"]},
        BASE | {"token": None},
        {k: v for k, v in BASE.items() if k != "decoder_key"} | {"token": V["token"]},
        {"op": "key_change", "tokens": "12"},
        {"op": "tid", "issued": "2020-01-01T00:00", "base_date": 2014, "tid": "12"},
        {"op": "decode", "ea": 7, "decoder_key": KEY, "token": V["token"], "fields": [1]},
        {"op": "derive_key", "decoder_key": 5},
        BASE | {"token": V["token"], "id": "fine"},
    ]
    results = run(lines)
    codes = [(r.line, r.error["code"] if r.error else r.verdict) for r in results]
    assert codes == [
        (1, "invalid_json"),
        (2, "invalid_request"),
        (5, "unknown_op"),
        (6, "unknown_op"),
        (7, "missing_answer"),
        (8, "invalid_answer"),
        (9, "invalid_answer"),
        (10, "missing_field"),
        (11, "missing_field"),
        (12, "invalid_answer"),
        (13, "invalid_answer"),
        (14, "missing_field"),
        (15, "agree"),
    ]
    assert all(r.error and r.error["message"] for r in results[:-1])
    assert results[-1].id == "fine"
    text = render_check_text(results)
    assert "Traceback" not in text and "error[invalid_json]" in text
    assert text.rstrip().endswith("13 lines: 1 agree, 0 disagree, 12 could not be checked")


def test_json_output_shape() -> None:
    results = run([BASE | {"token": V["token"], "id": 1}, BASE | {"token": _credit(amount=2560)}, "x"])
    doc = json.loads(render_check_json(results))
    assert doc["format"] == "mita-conformance-check/1"
    assert doc["summary"] == {"total": 3, "agree": 1, "disagree": 1, "error": 1}
    first, second, third = doc["results"]
    assert set(first) == {"line", "id", "op", "verdict", "differences", "error", "note"}
    assert (first["id"], first["verdict"], first["error"]) == (1, "agree", None)
    assert second["differences"] == [{"field": "amount", "ours": 18, "theirs": 2560, "token": None}]
    assert third["error"]["code"] == "invalid_json"


# ---------------------------------------------------------------- Hypothesis: encode, decode, name the field

EAS = st.sampled_from([EA.STA, EA.MISTY1])


@st.composite
def credits(draw: st.DrawFn) -> tuple[EA, int, TransferCredit]:
    ea = draw(EAS)
    key = draw(st.integers(0, (1 << ea.key_bits) - 1))
    amount = decode_amount(encode_amount(draw(st.integers(0, MAX_UNITS))))  # a value the field holds exactly
    token = TransferCredit(
        tid=draw(st.integers(0, 0xFFFFFF)),
        amount=amount,
        rnd=draw(st.integers(0, 15)),
        kind=CreditKind(draw(st.integers(0, 3))),
    )
    return ea, key, token


def _request(ea: EA, key: int, token: TransferCredit) -> dict[str, Any]:
    digits = ea.key_bits // 4
    return {"op": "encode", "ea": int(ea), "decoder_key": f"{key:0{digits}x}", **token.fields()}


@settings(max_examples=60, deadline=None)
@given(credits(), st.data())
def test_a_changed_field_is_the_one_named(case: tuple[EA, int, TransferCredit], data: st.DataObject) -> None:
    ea, key, token = case
    field = data.draw(st.sampled_from(["tid", "amount", "rnd"]))
    if field == "amount":
        new = decode_amount(encode_amount(data.draw(st.integers(0, MAX_UNITS))))
    else:
        new = data.draw(st.integers(0, 0xFFFFFF if field == "tid" else 15))
    theirs = TransferCredit(
        **{"tid": token.tid, "amount": token.amount, "rnd": token.rnd, "kind": token.kind, field: new}
    )
    line = _request(ea, key, token) | {"token": sts.encode(theirs, ea, key)}
    result = _one(line)
    if new == getattr(token, field):
        assert result.verdict == "agree"
    else:
        assert [(d.field, d.ours, d.theirs) for d in result.differences] == [(field, getattr(token, field), new)]


@settings(max_examples=60, deadline=None)
@given(credits())
def test_mita_agrees_with_itself_and_a_wrong_key_never_decrypts(case: tuple[EA, int, TransferCredit]) -> None:
    ea, key, token = case
    line = _request(ea, key, token)
    assert _one(line | {"token": sts.encode(token, ea, key)}).agreed
    other = sts.encode(token, ea, key ^ (1 << random.Random(key).randrange(ea.key_bits)))
    assert fields_named(_one(line | {"token": other})) in (["decrypt"], ["crc"])  # CRC-only: 2^-16 by chance


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.text(max_size=40),
            st.builds(
                json.dumps, st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8), max_size=4)
            ),
        ),
        max_size=6,
    )
)
def test_any_input_gives_one_result_per_line_and_never_raises(lines: list[str]) -> None:
    text = "\n".join(lines)
    results = list(check(text.splitlines(), handle))
    assert len(results) == sum(1 for x in text.splitlines() if x.strip())
    assert all(r.verdict in ("agree", "disagree", "error") for r in results)
    assert all(r.error is None or r.error["code"] != "internal_error" for r in results)
