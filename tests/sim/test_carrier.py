"""The token's octet-string (mita.sim.carrier): packed BCD and ASCII round-trip; anything else is refused."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mita.sim import carrier

tokens = st.text(alphabet="0123456789", min_size=20, max_size=20)


@given(tokens, st.sampled_from(["bcd", "ascii"]))
def test_pack_and_unpack_round_trip(token: str, encoding: carrier.Encoding) -> None:
    data = carrier.pack(token, encoding)
    assert len(data) == (10 if encoding == "bcd" else 20)
    assert carrier.unpack(data, encoding) == token


def test_bcd_puts_the_first_digit_in_the_high_nibble() -> None:
    assert carrier.pack("12345678901234567890") == bytes.fromhex("12345678901234567890")


@given(st.binary(min_size=10, max_size=10))
def test_bcd_octets_unpack_only_when_every_nibble_is_a_digit(data: bytes) -> None:
    digits = all(n <= 9 for b in data for n in (b >> 4, b & 15))
    if digits:
        assert carrier.pack(carrier.unpack(data)) == data
    else:
        with pytest.raises(carrier.CarrierError):
            carrier.unpack(data)


@pytest.mark.parametrize(
    ("data", "encoding"),
    [(b"", "bcd"), (b"\x12" * 9, "bcd"), (b"\x12" * 11, "bcd"), (b"1" * 19, "ascii"), (b"1" * 19 + b"a", "ascii")],
)
def test_wrong_lengths_and_characters_are_refused(data: bytes, encoding: carrier.Encoding) -> None:
    with pytest.raises(carrier.CarrierError):
        carrier.unpack(data, encoding)


@pytest.mark.parametrize("token", ["1234", "1234567890123456789a", "١٢٣٤٥٦٧٨٩٠١٢٣٤٥٦٧٨٩٠"])
def test_pack_refuses_what_is_not_twenty_ascii_digits(token: str) -> None:
    with pytest.raises(carrier.CarrierError):
        carrier.pack(token)


def test_every_profile_has_an_encoding() -> None:
    from mita.meter import PROFILES

    assert set(carrier.TOKEN_ENCODING) == set(PROFILES)
