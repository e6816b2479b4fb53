"""tokens.json: every token vector through decode, encode and each layer (CRC, cipher, class bits, digits).

The same checks as tests/sts/test_vectors.py makes on the same entries: the compliance and NectarAPI tokens
(decoded fields, re-encoding, each layer on its own, the amount field, the TID from the stated issue time with
the CTSA09 conflict), the other tokens (the standard's worked example with the sample tables, the STSSimulator
and service tokens, the CRC_C currency token) and the one non-conformant output we must not produce.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from mita import sts
from mita.conformance.case import Checks, Excluded, Meta, run_case, show_hex, show_key
from mita.conformance.reading import (
    ea_name,
    expected_fields,
    hexint,
    is_sample_tables,
    make_token,
    source_label,
    token_kind,
    vector_ea,
    vector_key,
)
from mita.conformance.vectors import reproduced
from mita.sts import EA, BaseDate, MeterNumber
from mita.sts import ea as ea_mod
from mita.sts.amount import decode_amount, decode_currency, encode_amount
from mita.sts.codec import extract_class, insert_class, parse_digits, to_digits
from mita.sts.crc import crc_field
from mita.sts.sta import SAMPLE_STA
from mita.sts.tokens import from_block, to_block, uses_crc_c

from .source import Result, Source

FILE = "tokens.json"
BLOCK, VALUE = show_hex(16), show_hex(17)
NOT_REPRODUCED = "not reproduced by every implementation that checked it (its 'verified' flags)"


def run(source: Source) -> Iterator[Result]:
    data = source.load(FILE)
    conflicts = {(v["issue_time"], v["base_date"]): v for v in source.load("tid.json")["vectors"] if not v["agree"]}
    section = "compliance_and_nectar_vectors"
    for i, v in enumerate(data[section]):
        if not reproduced(v):
            yield Excluded(f"{FILE}#{section}/{i}", FILE, section, NOT_REPRODUCED)
            continue
        yield run_case(_meta(source, section, i, v), _compliance, v, conflicts)
    section = "other_vectors"
    for i, v in enumerate(data[section]):
        if not reproduced(v):
            yield Excluded(f"{FILE}#{section}/{i}", FILE, section, NOT_REPRODUCED)
            continue
        meta = _meta(source, section, i, v)
        if is_sample_tables(v):
            meta = Meta(**{**_fields(meta), "note": "the standard's worked example, with its sample STA tables"})
            yield run_case(meta, _worked_example, v)
        else:
            yield run_case(meta, _other, v)
    section = "nonconformant_outputs_do_not_use"
    worked = next(v for v in data["other_vectors"] if is_sample_tables(v))
    for i, bad in enumerate(data[section]):
        meta = Meta(
            f"{FILE}#{section}/{i}",
            FILE,
            section,
            "credit",
            "EA07",
            source=source_label(bad.get("source")),
            note="another implementation's wrong output for the worked example: ours must differ",
        )
        yield run_case(meta, _not_produced, worked, bad)


def _fields(meta: Meta) -> dict[str, Any]:
    return {name: getattr(meta, name) for name in Meta.__slots__}


def _meta(source: Source, section: str, i: int, v: dict[str, Any]) -> Meta:
    ea = vector_ea(v) if v["token_class"] != 1 else None  # class 1 goes in clear, whatever the file names
    key = vector_key(v)
    dkga = "DKGA02" if "dk_derivation" in v else source.key_derivation(key)
    return Meta(
        id=f"{FILE}#{section}/{i}",
        file=FILE,
        section=section,
        kind=token_kind(v["token_class"], v["subclass"]),
        algorithm=ea_name(ea),
        key_derivation=dkga if ea is not None else None,
        source=source_label(v.get("source")),
    )


def _layers(ch: Checks, v: dict[str, Any], ea: EA | None, key: int | None) -> None:
    """Each step on its own: CRC field, encryption, class-bit transposition, 20 digits."""
    block = hexint(v["data_block_hex"])
    encrypted = hexint(v.get("encrypted_block_hex") or v["data_block_hex"])  # class 1: the block goes in clear
    c, s = v["token_class"], v["subclass"]
    info50 = c << 48 | s << 44 | (block >> 16 & 0xFFFFFFFFFFF)
    if "crc_field_hex" in v:
        ch.equal("crc field", lambda: crc_field(info50, uses_crc_c(c, s)), hexint(v["crc_field_hex"]), show_hex(4))
    ch.equal("crc in the data block", lambda: crc_field(info50, uses_crc_c(c, s)), block & 0xFFFF, show_hex(4))
    if ea is None:
        ch.equal("class 1 block in clear", lambda: encrypted, block, BLOCK)
    else:
        assert key is not None
        ch.equal("encrypt", lambda: ea_mod.encrypt(ea, block, key), encrypted, BLOCK)
        ch.equal("decrypt", lambda: ea_mod.decrypt(ea, encrypted, key), block, BLOCK)
    if "token_66bit_hex" in v:
        value = hexint(v["token_66bit_hex"])
        ch.equal("class bits inserted", lambda: insert_class(encrypted, c), value, VALUE)
        ch.equal("class bits extracted", lambda: extract_class(value), (c, encrypted))
        ch.equal("20 digits read", lambda: parse_digits(v["token"]), value, VALUE)
        ch.equal("20 digits written", lambda: to_digits(value), v["token"])


def _compliance(ch: Checks, v: dict[str, Any], conflicts: dict[tuple[str, str], dict[str, Any]]) -> None:
    ea, key = vector_ea(v), vector_key(v)
    want = expected_fields(v)
    cipher = ea or EA.STA  # class 1 ignores the algorithm and the key
    ch.equal("encode", lambda: sts.encode(make_token(want), cipher, key or 0), v["token"])
    ch.equal("decode", lambda: sts.decode(v["token"], cipher, key).fields(), want)
    ch.equal("data block", lambda: to_block(make_token(want)), hexint(v["data_block_hex"]), BLOCK)
    if v["token_class"] == 1:
        ch.equal("class 1 carries no key", lambda: key, None, show_key(64))
    _layers(ch, v, ea, key)
    f = v["fields"]
    field_hex = f.get("amount_field_hex") or f.get("mpl_field_hex") or f.get("mppul_field_hex")
    if field_hex is not None:
        units, field = f.get("amount_base_units", f.get("value_decoded")), hexint(field_hex)
        ch.equal("amount field in the block", lambda: hexint(v["data_block_hex"]) >> 16 & 0xFFFF, field, show_hex(4))
        ch.equal("amount decoded", lambda: decode_amount(field), units)
        ch.equal("amount encoded", lambda: encode_amount(units), field, show_hex(4))
    when = v.get("tid_from")
    if when:
        issued = dt.datetime.fromisoformat(when["issue_time_local"])

        def tid() -> Any:
            return sts.tid_from_datetime(issued, BaseDate.parse(when["base_date"]))

        conflict = conflicts.get((when["issue_time_local"], when["base_date"]))
        if conflict is None:
            ch.equal("TID from the issue time", tid, f["tid"])
        else:
            # CTSA09 step 2: the stated time is 00:01 but the token encodes the 00:02 TID. The token is the truth
            # (it decodes and re-encodes above); the clock gives the honest minute, with no +1 hack.
            ch.equal("TID the token encodes (CTSA09 conflict)", lambda: f["tid"], conflict["tid_used_in_nectar_token"])
            ch.equal("TID from the issue time (no +1 minute hack)", tid, conflict["tid"])


def _worked_example(ch: Checks, v: dict[str, Any]) -> None:
    """IEC 62055-41's worked example, with the sample STA tables the standard prints."""
    key, block = vector_key(v), hexint(v["data_block_hex"])
    assert key is not None
    want = {"class": 0, "subclass": 0, "rnd": 11, "tid": 1698595, "amount": 256}
    ch.equal("token (sample tables)", lambda: to_digits(insert_class(SAMPLE_STA.encrypt(block, key), 0)), v["token"])
    ch.equal("data block", lambda: to_block(make_token(want)), block, BLOCK)
    ch.equal("encrypt (sample tables)", lambda: SAMPLE_STA.encrypt(block, key), hexint(v["encrypted_block_hex"]), BLOCK)
    ch.equal(
        "class bits inserted",
        lambda: insert_class(SAMPLE_STA.encrypt(block, key), 0),
        hexint(v["token_66bit_hex"]),
        VALUE,
    )

    def back() -> dict[str, Any]:
        c, encrypted = extract_class(parse_digits(v["token"]))
        return from_block(c, SAMPLE_STA.decrypt(encrypted, key)).fields()

    ch.equal("decode (sample tables)", back, want)
    ch.equal("TID as a time (base 1993)", lambda: sts.datetime_from_tid(want["tid"]), dt.datetime(1996, 3, 25, 13, 55))


def _other(ch: Checks, v: dict[str, Any]) -> None:
    """STA real-table worked example, STSSimulator tokens, the CRC_C currency token, service-level tokens."""
    key, block = vector_key(v), hexint(v["data_block_hex"])
    ch.holds(
        "real STA tables or class 1",
        lambda: "real tables" in v["encryption_algorithm"] or v["token_class"] == 1,
        "the vector names the real tables (or is class 1)",
    )

    def decoded() -> sts.Token:
        return sts.decode(v["token"], EA.STA, key)

    ch.equal("encode", lambda: sts.encode(decoded(), EA.STA, key or 0), v["token"])
    ch.equal(
        "class and subclass", lambda: (decoded().token_class, decoded().subclass), (v["token_class"], v["subclass"])
    )
    ch.equal("data block", lambda: to_block(decoded()), block, BLOCK)
    if "encrypted_block_hex" in v:
        ch.equal(
            "encrypted block",
            lambda: extract_class(parse_digits(v["token"]))[1],
            hexint(v["encrypted_block_hex"]),
            BLOCK,
        )
    if "token_66bit_hex" in v:
        ch.equal("20 digits read", lambda: parse_digits(v["token"]), hexint(v["token_66bit_hex"]), VALUE)
    f = v["fields"]

    def got() -> Any:
        return decoded().fields()

    if v["token_class"] == 0 or (v["token_class"] == 2 and v["subclass"] not in (3, 4, 8, 9)):
        ch.equal("tid", lambda: got()["tid"], f["tid"])  # class 1 and key changes carry no TID
    if "rnd" in f:
        ch.equal("rnd", lambda: got()["rnd"], f["rnd"])
    if "amount_base_units" in f:
        ch.equal("amount", lambda: got()["amount"], f["amount_base_units"])
        ch.equal("amount field decoded", lambda: decode_amount(hexint(f["amount_field_hex"])), f["amount_base_units"])
    if "value_hex" in f:
        name = {1: "register", 5: "pad"}[v["subclass"]]
        ch.equal(name, lambda: got()[name], hexint(f["value_hex"]))
    if "currency_base_units" in f:
        want = {"class": 0, "subclass": 4, "tid": f["tid"], "amount": f["currency_base_units"], "negative": False}
        ch.equal("currency fields", got, want)
        ch.equal(
            "currency field decoded",
            lambda: decode_currency(f["se_nibble"], hexint(f["amount_field_hex"])),
            (f["currency_base_units"], False),
        )
        ch.equal("crc field", lambda: block & 0xFFFF, hexint(f["crc_field_hex"]), show_hex(4))
        info50 = 0 << 48 | 4 << 44 | (block >> 16 & 0xFFFFFFFFFFF)
        ch.equal("CRC_C verifies", lambda: crc_field(info50, currency=True), block & 0xFFFF, show_hex(4))
        ch.differs("plain CRC does not", lambda: crc_field(info50), block & 0xFFFF, show_hex(4))
    if "dk_derivation" in v:
        d = v["dk_derivation"]
        ch.equal("key derivation named", lambda: d["algorithm"], "DKGA02")

        def derived() -> int:
            meter = MeterNumber(d["iin"], d["drn"])
            vk = bytes.fromhex(d["vending_key_hex"])
            return sts.dkga02(vk, meter, d["key_type"], d["sgc"], int(d["ti"]), d["krn"])

        ch.equal("decoder key (DKGA02)", derived, key, show_key(64))


def _not_produced(ch: Checks, worked: dict[str, Any], bad: dict[str, Any]) -> None:
    key, block = vector_key(worked), hexint(worked["data_block_hex"])
    assert key is not None

    def ours() -> Any:
        return to_digits(insert_class(SAMPLE_STA.encrypt(block, key), 0))

    ch.differs("worked example token", ours, bad["token"])
    ch.equal("worked example token is the standard's", ours, worked["token"])
