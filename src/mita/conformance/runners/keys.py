"""dkga02.json, dkga04.json, luhn_pan.json: decoder key generation and the meter identity it reads.

Keys (vending, decoder, and the intermediates a decoder key can be read back from) are compared as numbers and
shown only by fingerprint; the PANBlock, CONTROLBlock and KDF input are public and shown as they are.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator
from typing import Any

from mita import sts
from mita.conformance.case import Checks, Excluded, Meta, run_case, show_hex, show_key
from mita.conformance.reading import hexint, source_label
from mita.conformance.vectors import reproduced
from mita.sts import EA, BaseDate, MeterNumber
from mita.sts import ea as ea_mod
from mita.sts.dkga import dkga04_input

from .source import Result, Source

BASE_BY_CODE = {b.code: b for b in BaseDate}  # "93", "14", "35" as DKGA04 vectors write them
UNVERIFIED = "not reproduced by every implementation that checked it (its 'verified' flags)"


def run_dkga02(source: Source) -> Iterator[Result]:
    file = "dkga02.json"
    for i, v in enumerate(source.load(file)["vectors"]):
        if not reproduced(v):
            yield Excluded(f"{file}#vectors/{i}", file, "vectors", UNVERIFIED)
            continue
        meta = Meta(
            f"{file}#vectors/{i}", file, "vectors", "key_derivation", "EA07", "DKGA02", source_label(v["source"])
        )
        yield run_case(meta, _dkga02, v)


def _dkga02(ch: Checks, v: dict[str, Any]) -> None:
    meter = MeterNumber(v["iin"], v["drn_iain"])
    kt, sgc, ti, krn = v["key_type"], v["sgc"], int(v["ti"]), v["krn"]
    vk = bytes.fromhex(v["vending_key_hex"])
    key = hexint(v["decoder_key_hex"])
    ch.equal("decoder key", lambda: sts.dkga02(vk, meter, kt, sgc, ti, krn), key, show_key(64))
    ch.equal("PANBlock", lambda: meter.pan_block(common=kt == 3), hexint(v["pan_block_hex"]), show_hex(16))
    ch.equal("CONTROLBlock", lambda: sts.control_block(kt, sgc, ti, krn), hexint(v["control_block_hex"]), show_hex(16))
    if "intermediate" in v:
        x = meter.pan_block(common=kt == 3) ^ sts.control_block(kt, sgc, ti, krn)
        step = v["intermediate"]
        ch.equal("PANBlock xor CONTROLBlock", lambda: x, hexint(step["pan_xor_ctrl_hex"]), show_hex(16))

        def des() -> Any:
            return ea_mod.des_encrypt(x, int.from_bytes(vk, "big"))

        ch.equal("DES under the vending key", des, hexint(step["des_vk_of_that_hex"]), show_key(64))
    ch.equal(
        "through derive_decoder_key", lambda: sts.derive_decoder_key(2, vk, meter, kt, sgc, ti, krn), key, show_key(64)
    )
    ch.equal(
        "the byte-reversed form NectarAPI prints",
        lambda: int.from_bytes(key.to_bytes(8, "big")[::-1], "big"),
        hexint(v["decoder_key_hex_nectar_byte_order"]),
        show_key(64),
    )


def _meter_from_pan(pan: str) -> MeterNumber:
    iin = "600727" if pan.startswith("600727") else "0000"
    return MeterNumber(iin, pan[len(iin) : -1])


def run_dkga04(source: Source) -> Iterator[Result]:
    file = "dkga04.json"
    for i, v in enumerate(source.load(file)["vectors"]):
        if not reproduced(v):
            yield Excluded(f"{file}#vectors/{i}", file, "vectors", UNVERIFIED)
            continue
        algorithm = f"EA{int(v['ea']):02d}"
        meta = Meta(
            f"{file}#vectors/{i}", file, "vectors", "key_derivation", algorithm, "DKGA04", source_label(v["source"])
        )
        yield run_case(meta, _dkga04, v)


def _dkga04(ch: Checks, v: dict[str, Any]) -> None:
    meter = _meter_from_pan(v["meter_pan"])
    base, ea = BASE_BY_CODE[v["base_date"]], EA.parse(v["ea"])
    kt, sgc, ti, krn = v["key_type"], v["sgc"], int(v["ti"]), v["krn"]
    vk = bytes.fromhex(v["vending_key_hex"])
    key, bits = hexint(v["decoder_key_hex"]), len(v["decoder_key_hex"]) * 4
    ch.equal("decoder key", lambda: sts.dkga04(vk, meter, kt, sgc, ti, krn, base, ea), key, show_key(bits))
    ch.equal("decoder key size", lambda: ea.key_bits, bits)
    ch.equal("MeterPAN", lambda: meter.pan, v["meter_pan"])

    def kdf_input() -> Any:
        return dkga04_input(meter, kt, sgc, ti, krn, base, ea)

    ch.equal("KDF input", lambda: kdf_input().hex(), v["kdf_input_hex"])

    def mac() -> Any:
        return int.from_bytes(hmac.digest(vk, kdf_input(), "sha256"), "big")

    ch.equal("HMAC-SHA-256", mac, hexint(v["hmac_sha256_hex"]), show_key(256))

    def derive() -> Any:
        return sts.derive_decoder_key(4, vk, meter, kt, sgc, ti, krn, base, ea)

    ch.equal("through derive_decoder_key", derive, key, show_key(bits))
    ch.equal("base date code", lambda: BaseDate.parse(int(base)).code, v["base_date"])


def run_identity(source: Source) -> Iterator[Result]:
    file = "luhn_pan.json"
    data = source.load(file)
    for i, v in enumerate(data["luhn"]):
        meta = Meta(f"{file}#luhn/{i}", file, "luhn", "meter_identity", source=source_label(v.get("source")))
        if not v.get("verified"):
            yield Excluded(meta.id, file, "luhn", "not marked verified")
            continue
        yield run_case(meta, _luhn, v)
    for i, v in enumerate(data["meter_pan_examples"]):
        meta = Meta(f"{file}#meter_pan_examples/{i}", file, "meter_pan_examples", "meter_identity", source="SPEC.md §8")
        yield run_case(meta, _meter_pan, v)
    for i, v in enumerate(data["pan_block_examples"]):
        meta = Meta(
            f"{file}#pan_block_examples/{i}",
            file,
            "pan_block_examples",
            "meter_identity",
            source=source_label(v.get("source")),
        )
        if not v.get("verified"):
            yield Excluded(
                meta.id,
                file,
                "pan_block_examples",
                "not marked verified: NectarAPI's own examples (IINs the standard does not define, KT 3 zeros)",
            )
            continue
        yield run_case(meta, _pan_block, v)
    for i, v in enumerate(data["control_block_examples"]):
        meta = Meta(
            f"{file}#control_block_examples/{i}",
            file,
            "control_block_examples",
            "meter_identity",
            source=source_label(v.get("source")),
        )
        yield run_case(meta, _control_block, v)


def _luhn(ch: Checks, v: dict[str, Any]) -> None:
    ch.equal("Luhn check digit", lambda: sts.luhn_digit(v["payload"]), v["check_digit"])


def _pan_block(ch: Checks, v: dict[str, Any]) -> None:
    ch.equal("PANBlock", lambda: MeterNumber(v["iin"], v["drn"]).pan_block(), hexint(v["pan_block"]), show_hex(16))


def _control_block(ch: Checks, v: dict[str, Any]) -> None:
    def control() -> Any:
        return sts.control_block(v["kt"], v["sgc"], int(v["ti"]), v["krn"])

    ch.equal("CONTROLBlock", control, hexint(v["control_block"]), show_hex(16))


def _meter_pan(ch: Checks, v: dict[str, Any]) -> None:
    meter = MeterNumber(v["iin"], v["drn"])
    ch.equal("MeterPAN", lambda: meter.pan, v["pan"])
    ch.equal("PAN check digit", lambda: int(meter.pan[-1]), v["pan_check"])
    ch.equal("PANBlock", lambda: meter.pan_block(), hexint(v["pan_block"]), show_hex(16))
    ch.equal(
        "IIN from the meter number's length",
        lambda: MeterNumber.parse(v["drn"]),
        meter,
        lambda m: str(getattr(m, "pan", m)),
    )
    if "mfr_code" in v:
        ch.equal("manufacturer code", lambda: meter.mfr_code, v["mfr_code"])
        ch.equal("meter number", lambda: meter.drn, v["mfr_code"] + v["dsn"] + str(v["drn_check"]))
