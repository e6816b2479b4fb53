"""sta.json, misty1.json, ea09_des_unverified.json, vendor_sta_keyderivation_unofficial.json: the ciphers.

Block vectors both ways through each cipher, the STA tables against the ones the engine holds, the worked
example's 16 rounds against a bit-by-bit reference written from SPEC.md §5.1, and the EA09 pair (one
implementation only: a pin of our DES path rather than conformance, as the file says). The vendor file is not
an IEC key derivation: its entries serve only as six more STA blocks.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from mita import sts
from mita.conformance.case import Checks, Excluded, Meta, run_case, show_hex, show_key
from mita.conformance.reading import hexint, source_label
from mita.conformance.vectors import reproduced
from mita.sts import EA, MeterNumber, misty1
from mita.sts import ea as ea_mod
from mita.sts.codec import extract_class, insert_class, parse_digits, to_digits
from mita.sts.crc import crc_field
from mita.sts.sta import E1, E2, SAMPLE_E1, SAMPLE_E2, SAMPLE_P, SAMPLE_STA, STA, P
from mita.sts.tokens import to_block

from .source import Result, Source

BLOCK = show_hex(16)
M64 = (1 << 64) - 1
UNVERIFIED = "not reproduced by every implementation that checked it (its 'verified' flags)"


def _blocks(ch: Checks, encrypt: Any, decrypt: Any, v: dict[str, Any]) -> None:
    key, plain, cipher = hexint(v["key_hex"]), hexint(v["plaintext_hex"]), hexint(v["ciphertext_hex"])
    ch.equal("encrypt", lambda: encrypt(plain, key), cipher, BLOCK)
    ch.equal("decrypt", lambda: decrypt(cipher, key), plain, BLOCK)


def run_sta(source: Source) -> Iterator[Result]:
    file = "sta.json"
    data = source.load(file)
    meta = Meta(f"{file}#tables", file, "tables", "cipher", "EA07", source="STS Association tables; IEC sample tables")
    yield run_case(meta, _tables, data["tables"])
    for name in ("worked_example_sample_tables", "same_input_real_tables"):
        note = "the standard's worked example, round by round" + (" (sample tables)" if "sample" in name else "")
        meta = Meta(f"{file}#{name}", file, name, "cipher", "EA07", source="IEC 62055-41 worked example", note=note)
        yield run_case(meta, _rounds, data, name)
    for i, v in enumerate(data["vectors"]):
        if not reproduced(v):
            yield Excluded(f"{file}#vectors/{i}", file, "vectors", UNVERIFIED)
            continue
        meta = Meta(
            f"{file}#vectors/{i}",
            file,
            "vectors",
            "cipher",
            "EA07",
            source.key_derivation(hexint(v["key_hex"])),
            source_label(v["source"]),
        )
        yield run_case(meta, _sta_block, v)


def _sta_block(ch: Checks, v: dict[str, Any]) -> None:
    _blocks(ch, STA.encrypt, STA.decrypt, v)
    _blocks(ch, lambda b, k: ea_mod.encrypt(EA.STA, b, k), lambda b, k: ea_mod.decrypt(EA.STA, b, k), v)


def _tables(ch: Checks, tables: dict[str, Any]) -> None:
    real, sample = tables["real"], tables["sample_from_IEC_62055_41"]
    for name, ours, theirs in (
        ("E1", E1, real["E1"]),
        ("E2", E2, real["E2"]),
        ("P", P, real["P"]),
        ("sample E1", SAMPLE_E1, sample["E1"]),
        ("sample E2", SAMPLE_E2, sample["E2"]),
        ("sample P", SAMPLE_P, sample["P"]),
    ):
        ch.value(f"table {name}", list(ours), theirs)
    for name, table, inverse in (
        ("D1 = inverse of E2", real["E2"], real["D1_inverse_of_E2"]),
        ("D2 = inverse of E1", real["E1"], real["D2_inverse_of_E1"]),
        ("DP = inverse of P", real["P"], real["DP_inverse_of_P"]),
        ("sample DP = inverse of sample P", sample["P"], sample["DP_inverse_of_P"]),
    ):
        ch.value(f"table {name}", _inverse(table), inverse)
    ch.equal("sample DP[7], the standard's text example (7.3.3.2)", lambda: sample["DP_inverse_of_P"][7], 52)


def _inverse(table: Sequence[int]) -> list[int]:
    return [list(table).index(i) for i in range(len(table))]


def reference_sta_rounds(
    block: int, key: int, e1: list[int], e2: list[int], perm: list[int]
) -> list[tuple[int, int, int]]:
    """SPEC.md §5.1 written out bit by bit: (round key, after substitution, after permutation) per round."""
    k = ~key & M64
    k = (k >> 12 | k << 52) & M64
    rounds = []
    x = block
    for _ in range(16):
        sub = 0
        for i in range(16):
            box = e2 if k >> (4 * i + 3) & 1 else e1
            sub |= box[x >> (4 * i) & 15] << (4 * i)
        out = 0
        for i in range(64):
            out |= (sub >> i & 1) << perm[i]
        rounds.append((k, sub, out))
        x = out
        k = (k << 1 & M64) | k >> 63
    return rounds


def _rounds(ch: Checks, data: dict[str, Any], name: str) -> None:
    example = data[name]
    sample = "sample" in name
    tables = data["tables"]["sample_from_IEC_62055_41" if sample else "real"]
    cipher = SAMPLE_STA if sample else STA
    key, plain, out = hexint(example["key_hex"]), hexint(example["plaintext_hex"]), hexint(example["ciphertext_hex"])
    ch.equal("token", lambda: to_digits(insert_class(cipher.encrypt(plain, key), 0)), example["token"])
    ch.equal("encrypt", lambda: cipher.encrypt(plain, key), out, BLOCK)
    ch.equal("decrypt", lambda: cipher.decrypt(out, key), plain, BLOCK)
    trace = reference_sta_rounds(plain, key, tables["E1"], tables["E2"], tables["P"])
    steps = example["round_trace"]
    ch.equal("rounds in the trace", lambda: len(steps), 16)
    for (k, sub, perm), step in zip(trace, steps, strict=False):
        want = (hexint(step["after_substitution_hex"]), hexint(step["after_permutation_hex"]))
        ch.value(f"round {step['round']}", (sub, perm), want, _pair)
        ch.value(f"round {step['round']} key schedule", k, hexint(step["round_key_hex"]), _hidden)
    ch.equal("reference cipher agrees", lambda: trace[-1][2], out, BLOCK)


def _pair(value: Any) -> str:
    return " ".join(f"{x:016x}" for x in value) if isinstance(value, tuple) else str(value)


#: A round key is the decoder key rotated and complemented: shown, like a key, by fingerprint only.
_hidden = show_key(64)


def run_misty1(source: Source) -> Iterator[Result]:
    file = "misty1.json"
    data = source.load(file)
    for section, label in (("rfc2994_vectors", "RFC 2994"), ("sts_token_block_vectors", "")):
        for i, v in enumerate(data[section]):
            if not reproduced(v):
                yield Excluded(f"{file}#{section}/{i}", file, section, UNVERIFIED)
                continue
            dkga = source.key_derivation(hexint(v["key_hex"]))
            meta = Meta(
                f"{file}#{section}/{i}", file, section, "cipher", "EA11", dkga, label or source_label(v["source"])
            )
            yield run_case(meta, _misty1_block, v)


def _misty1_block(ch: Checks, v: dict[str, Any]) -> None:
    _blocks(ch, misty1.encrypt, misty1.decrypt, v)
    _blocks(ch, lambda b, k: ea_mod.encrypt(EA.MISTY1, b, k), lambda b, k: ea_mod.decrypt(EA.MISTY1, b, k), v)


def run_des(source: Source) -> Iterator[Result]:
    file = "ea09_des_unverified.json"
    data = source.load(file)
    note = f"verified: {data.get('verified')} (OpenSSL DES only): a pin of the EA09 path, not cross-checked"
    for i, v in enumerate(data["vectors"]):
        meta = Meta(f"{file}#vectors/{i}", file, "vectors", "cipher", "EA09", source="OpenSSL DES", note=note)
        yield run_case(meta, _des, v)


def _des(ch: Checks, v: dict[str, Any]) -> None:
    key, plain, cipher = hexint(v["decoder_key_hex"]), hexint(v["plaintext_hex"]), hexint(v["ciphertext_hex"])
    ch.equal("encrypt", lambda: ea_mod.encrypt(EA.DEA, plain, key), cipher, BLOCK)
    ch.equal("decrypt", lambda: ea_mod.decrypt(EA.DEA, cipher, key), plain, BLOCK)
    ch.equal("single DES", lambda: ea_mod.des_encrypt(plain, key), cipher, BLOCK)
    token_class, block = extract_class(parse_digits(v["token"]))
    ch.equal("encrypted block in the token", lambda: block, cipher, BLOCK)
    ch.equal("20 digits", lambda: to_digits(insert_class(cipher, token_class)), v["token"])
    info50 = token_class << 48 | (plain >> 60) << 44 | (plain >> 16 & 0xFFFFFFFFFFF)
    if crc_field(info50) == plain & 0xFFFF:  # a real token block: the whole path both ways
        ch.equal("decode", lambda: to_block(sts.decode(v["token"], EA.DEA, key)), plain, BLOCK)
        ch.equal("encode", lambda: sts.encode(sts.decode(v["token"], EA.DEA, key), EA.DEA, key), v["token"])
    else:  # a bare DES block (its last 16 bits are no CRC): decoding must say so, not invent fields
        ch.raises("decode refuses a bare block", lambda: sts.decode(v["token"], EA.DEA, key), sts.CrcError)


def run_vendor(source: Source) -> Iterator[Result]:
    file = "vendor_sta_keyderivation_unofficial.json"
    for i, v in enumerate(source.load(file)["vectors"]):
        if not v.get("verified_independent"):
            yield Excluded(f"{file}#vectors/{i}", file, "vectors", "not reproduced independently")
            continue
        meta = Meta(
            f"{file}#vectors/{i}",
            file,
            "vectors",
            "cipher",
            "EA07",
            source="gen_meter_key.py (third party)",
            note="not an IEC key derivation: used only as an STA block",
        )
        yield run_case(meta, _vendor, v)


def _vendor(ch: Checks, v: dict[str, Any]) -> None:
    block = ~(MeterNumber.parse(v["meter_no"]).pan_block() ^ hexint(v["control_block"])) & M64
    vk, meter_key = hexint(v["vending_key"]), hexint(v["meter_key"])
    ch.equal("encrypt", lambda: STA.encrypt(block, vk), meter_key, show_key(64))  # the "meter key" is a key
    ch.equal("decrypt", lambda: STA.decrypt(meter_key, vk), block, BLOCK)
