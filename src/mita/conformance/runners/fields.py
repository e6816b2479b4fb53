"""crc.json, amount.json, tid.json: the field encodings every token shares.

Where an entry records another implementation's deviation (``"agree": false``: NectarAPI's truncated 1.82 kWh,
the CTSA09 minute), the standard's value is the expected one and the deviation is checked as something we must
not produce.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from typing import Any

from mita import sts
from mita.conformance.case import Checks, Excluded, Meta, run_case, show_hex
from mita.conformance.reading import hexint, source_label
from mita.conformance.vectors import reproduced
from mita.sts import BaseDate
from mita.sts.amount import MAX_UNITS, OFFSETS, decode_amount, encode_amount
from mita.sts.crc import crc16_modbus, crc_field
from mita.sts.tid import TID_MAX

from .source import Result, Source

FIELD, CRC = show_hex(4), show_hex(4)


def run_crc(source: Source) -> Iterator[Result]:
    file = "crc.json"
    data = source.load(file)
    for i, v in enumerate(data["vectors"]):
        meta = Meta(f"{file}#vectors/{i}", file, "vectors", "crc", source=source_label(v.get("source")))
        if not reproduced(v):
            yield Excluded(meta.id, file, "vectors", "not reproduced by every implementation that checked it")
            continue
        yield run_case(meta, _crc, v)
    example = data["crc_c_example"]
    meta = Meta(f"{file}#crc_c_example", file, "crc_c_example", "crc_c", source=source_label(example.get("source")))
    yield run_case(meta, _crc_c, example)


def _crc(ch: Checks, v: dict[str, Any]) -> None:
    info50 = hexint(v.get("input_50bit_hex") or v["bytes7_hex"])
    data = bytes.fromhex(v["bytes7_hex"])
    ch.equal("CRC field", lambda: crc_field(info50), hexint(v["crc_field_hex"]), CRC)
    ch.holds("50 information bits", lambda: info50 < 1 << 50, "the input fits in 50 bits")
    ch.equal("7 bytes big-endian", lambda: int.from_bytes(data, "big"), info50, show_hex(14))

    def crc() -> Any:
        return crc16_modbus(data)

    ch.equal("CRC-16/MODBUS, byte-swapped", lambda: (crc() & 0xFF) << 8 | crc() >> 8, hexint(v["crc_field_hex"]), CRC)
    if "crc16_modbus_hex" in v:
        ch.equal("CRC-16/MODBUS", crc, hexint(v["crc16_modbus_hex"]), CRC)


def _crc_c(ch: Checks, example: dict[str, Any]) -> None:
    data = bytes.fromhex(example["bytes8_hex"])
    info50 = int.from_bytes(data[:7], "big")
    want = hexint(example["crc_field_hex"])
    ch.equal("CRC_C field", lambda: crc_field(info50, currency=True), want, CRC)
    ch.equal("0x01 appended", lambda: data[-1], 0x01)
    ch.equal("CRC-16/MODBUS over 8 bytes, byte-swapped", lambda: _swapped(crc16_modbus(data)), want, CRC)
    ch.differs("the plain CRC differs", lambda: crc_field(info50), want, CRC)


def _swapped(crc: int) -> int:
    return (crc & 0xFF) << 8 | crc >> 8


def run_amount(source: Source) -> Iterator[Result]:
    file = "amount.json"
    data = source.load(file)
    for i, band in enumerate(data["ranges"]):
        meta = Meta(f"{file}#ranges/{i}", file, "ranges", "amount", source="IEC 62055-41 6.3.6.2 band table")
        yield run_case(meta, _band, band)
    for i, v in enumerate(data["boundary_vectors"]):
        meta = Meta(f"{file}#boundary_vectors/{i}", file, "boundary_vectors", "amount", source="band boundaries")
        yield run_case(meta, _boundary, v)
    for i, v in enumerate(data["nectar_vectors"]):
        note = "" if v["agree"] else "NectarAPI truncates here; the standard rounds up, and so must we"
        meta = Meta(
            f"{file}#nectar_vectors/{i}", file, "nectar_vectors", "amount", source=source_label(v["source"]), note=note
        )
        yield run_case(meta, _nectar_amount, v)


def _band(ch: Checks, band: dict[str, Any]) -> None:
    e = band["e"]
    ch.equal("offset", lambda: OFFSETS[e], band["offset"])
    ch.equal("first value decoded", lambda: decode_amount(e << 14), band["min"])
    ch.equal("first value encoded", lambda: encode_amount(band["min"]), e << 14, FIELD)
    ch.equal("last value decoded", lambda: decode_amount(e << 14 | 0x3FFF), band["max"])
    ch.equal("last value encoded", lambda: encode_amount(band["max"]), e << 14 | 0x3FFF, FIELD)
    ch.equal("step", lambda: decode_amount(e << 14 | 1) - decode_amount(e << 14), band["step"])
    ch.equal("just above the first value: the next step", lambda: encode_amount(band["min"] + 1), e << 14 | 1, FIELD)

    def rounding() -> Any:
        return decode_amount(encode_amount(band["min"] + 1)) - (band["min"] + 1)

    ch.equal("largest rounding up", rounding, band["max_rounding_error"])
    if e == 3:
        ch.equal("maximum amount", lambda: MAX_UNITS, band["max"])


def _boundary(ch: Checks, v: dict[str, Any]) -> None:
    field = hexint(v["field_hex"])
    ch.equal("amount encoded", lambda: encode_amount(v["base_units"]), field, FIELD)
    ch.equal("exponent and mantissa", lambda: (field >> 14, field & 0x3FFF), (v["exponent"], v["mantissa"]))
    ch.equal("amount decoded", lambda: decode_amount(field), v["decoded_base_units"])
    ch.equal("rounded up by", lambda: v["decoded_base_units"] - v["base_units"], v["rounding_error"])
    ch.holds("rounded up, never down", lambda: v["rounding_error"] >= 0, "the decoded amount is at least the input")


def _nectar_amount(ch: Checks, v: dict[str, Any]) -> None:
    field = hexint(v["field_hex_standard_roundup"])
    ch.equal("amount encoded (rounded up)", lambda: encode_amount(v["base_units_0p1"]), field, FIELD)
    ch.equal("amount decoded", lambda: decode_amount(field), v["decoded_base_units"])
    ch.holds("rounded up, never down", lambda: v["decoded_base_units"] >= v["base_units_0p1"], "decoded >= input")
    if not v["agree"]:
        truncated = hexint(v["field_hex_nectar"])
        ch.differs("not NectarAPI's truncation", lambda: encode_amount(v["base_units_0p1"]), truncated, FIELD)


def run_tid(source: Source) -> Iterator[Result]:
    file = "tid.json"
    data = source.load(file)
    for i, v in enumerate(data["vectors"]):
        note = "" if v["agree"] else "CTSA09: the stated minute and the token's TID differ; the token is the truth"
        if v["tid"] > TID_MAX:
            note = "beyond 24 bits: the time must be refused, never wrapped"
        meta = Meta(f"{file}#vectors/{i}", file, "vectors", "tid", source=source_label(v.get("source")), note=note)
        yield run_case(meta, _tid, v)
    for year, text in data["rollover"].items():
        meta = Meta(f"{file}#rollover/{year}", file, "rollover", "tid", source="tidrollover.com; computed")
        yield run_case(meta, _rollover, year, text)


def _tid(ch: Checks, v: dict[str, Any]) -> None:
    issued = dt.datetime.fromisoformat(v["issue_time"])
    base = BaseDate.parse(v["base_date"])
    if v["tid"] > TID_MAX:
        # NectarAPI's unit test computes a 25-bit count for 2026 on base 1993; a TID has 24 bits and base 1993
        # ran out on 2024-11-24 20:16 (SPEC.md §4.2, §10), so the time is refused.
        ch.raises("TID out of range", lambda: sts.tid_from_datetime(issued, base), sts.TidOutOfRangeError)
    else:
        ch.equal("TID", lambda: sts.tid_from_datetime(issued, base), v["tid"])
        ch.equal("time from the TID", lambda: sts.datetime_from_tid(v["tid"], base), issued.replace(second=0))
    ch.equal("TID in hex", lambda: hexint(v["tid_hex"]), v["tid"])
    if not v["agree"] and v["tid"] <= TID_MAX:
        ch.differs("no +1 minute hack", lambda: sts.tid_from_datetime(issued, base), v["tid_used_in_nectar_token"])


def _rollover(ch: Checks, year: str, text: str) -> None:
    rollover = dt.datetime.fromisoformat(re.findall(r"\d{4}-\d\d-\d\d \d\d:\d\d", text)[-1])
    base = BaseDate(int(year))
    ch.equal("roll-over minute", lambda: base.rollover, rollover)
    last = rollover - dt.timedelta(minutes=1)
    ch.equal("last minute: TID FFFFFF", lambda: sts.tid_from_datetime(last, base), TID_MAX, show_hex(6))
    ch.raises("roll-over minute refused", lambda: sts.tid_from_datetime(rollover, base), sts.TidOutOfRangeError)
