"""The vend's stored JSON texts (orjson) against the standard library's compact encoding, the answer's."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from mita.vend.jsontext import json_text
from mita.vend.purchase import encoded

#: What a vend's documents hold: text (any Unicode, control characters included), integers as wide as a bigint,
#: booleans, None, and lists and objects of them. No float: money is integers, quantities decimal text.
VALUES: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@given(VALUES)
def test_a_document_reads_back_as_it_was_and_is_the_answers_encoding(value: Any) -> None:
    text = json_text(value)
    assert json.loads(text) == value
    assert text == json.dumps(value, ensure_ascii=False, separators=(",", ":"))  # the bytes a replay would be


@given(st.dictionaries(st.text(), VALUES, max_size=8))
def test_the_answer_and_the_stored_documents_agree_byte_for_byte(answer: dict[str, Any]) -> None:
    assert encoded(answer) == json_text(answer)
