"""The runners: one per vector file, each turning every entry of the file into a case (or an exclusion).

``RUNNERS`` is the table of which runner reads which file; :func:`run` walks it. A runner makes the same checks
the test suite makes on the same entries (tests/sts/test_vectors.py), and tests/conformance asserts that every
entry of every list in every shipped file is either a case or excluded with a reason, so a vector cannot be
dropped by a filter without a test failing.
"""

from __future__ import annotations

from collections.abc import Iterator

from . import ciphers, fields, keychange, keys, tokens
from .source import Result, Runner, Source

#: Vector file -> its runner, in the order the report lists them (tests/conformance: one per shipped file).
RUNNERS: dict[str, Runner] = {
    "tokens.json": tokens.run,
    "key_change.json": keychange.run,
    "dkga02.json": keys.run_dkga02,
    "dkga04.json": keys.run_dkga04,
    "luhn_pan.json": keys.run_identity,
    "sta.json": ciphers.run_sta,
    "misty1.json": ciphers.run_misty1,
    "ea09_des_unverified.json": ciphers.run_des,
    "vendor_sta_keyderivation_unofficial.json": ciphers.run_vendor,
    "crc.json": fields.run_crc,
    "amount.json": fields.run_amount,
    "tid.json": fields.run_tid,
}


def run(source: Source | None = None) -> Iterator[Result]:
    """Every case and exclusion of every vector file, file by file."""
    source = source or Source()
    for runner in RUNNERS.values():
        yield from runner(source)


__all__ = ["RUNNERS", "Result", "Runner", "Source", "run"]
