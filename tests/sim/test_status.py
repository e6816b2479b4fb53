"""The token status table (mita.sim.status) covers every meter result, within the standard's codes."""

from __future__ import annotations

from mita.meter import Result
from mita.meter.model import ACCEPTED
from mita.sim import status

from .dlms_client import parse_token_status


def test_every_result_has_a_status_code_of_the_standard() -> None:
    assert set(status.STATUS_CODE) == set(Result)
    assert set(status.STATUS_CODE.values()) <= set(range(9))


def test_only_accepted_results_are_ok_codes() -> None:
    for result, code in status.STATUS_CODE.items():
        assert (code <= 3) == (result in ACCEPTED), result


def test_the_data_bits_name_the_result_exactly() -> None:
    bits = {status.data_bits(r) for r in Result}
    assert len(bits) == len(Result)
    assert all(len(b) == 8 and set(b) <= {"0", "1"} for b in bits)


def test_the_test_helper_parses_a_token_status() -> None:
    assert parse_token_status(bytes.fromhex("02021603040800")) == (3, "00000000")
    assert parse_token_status(bytes.fromhex("0202160604030a")) == (6, "000")  # 3 bits of 0x0a's top: 000
    assert parse_token_status(bytes.fromhex("020216050481090000")) == (5, "000000000")
