"""The event loop's vend dumps its statements' parameters itself (``hotpath._texts``): byte for byte what psycopg's
adapters dump, or nothing (and psycopg dumps them) for what it does not know."""

from __future__ import annotations

import datetime as dt
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from psycopg.adapt import PyFormat, Transformer

from mita.vend.hotpath import _texts

VALUES = st.one_of(
    st.none(),
    st.text().filter(lambda t: "\x00" not in t),  # any Unicode
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.datetimes(),  # no zone, any microsecond, years 1 to 9999
)


@given(st.lists(VALUES, max_size=8))
def test_the_parameters_are_dumped_as_psycopg_dumps_them(values: list[Any]) -> None:
    tx = Transformer()  # UTF-8
    assert tx.encoding == "utf-8"
    dumped = _texts(values)
    assert dumped is not None
    assert dumped == [None if d is None else bytes(d) for d in tx.dump_sequence(values, [PyFormat.TEXT] * len(values))]


@given(st.lists(VALUES, max_size=3), st.sampled_from(["a\x00b", True, 1.5, b"x", dt.date(2026, 1, 1)]))
def test_anything_else_is_left_to_psycopg(values: list[Any], other: Any) -> None:
    """A NUL in a text (refused by psycopg), a bool (an int's subclass), a float, bytes, a date."""
    assert _texts([*values, other]) is None
    assert _texts([other, *values]) is None


def test_a_time_with_a_zone_is_left_to_psycopg() -> None:
    assert _texts([dt.datetime(2026, 1, 1, tzinfo=dt.UTC)]) is None
