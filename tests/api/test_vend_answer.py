"""A new vend's answer is encoded once (mita.vend.purchase.encoded): the bytes sent are those stored for a replay,
and the same bytes and headers the route's JSONResponse would have sent."""

from __future__ import annotations

import json

import pytest

from mita.api.deps import vend_json
from mita.api.routes.vends import _encoded
from mita.vend.purchase import Answered, encoded

ANSWER = {
    "id": "0b9f6c1e-5d0a-4b8e-9a57-1f1f0c1c2d3e",
    "meter": "47000000007",
    "tokens": [{"kind": "credit", "digits": "12345678901234567890", "units": 12.5}],
    "receipt": {"customer": "Zoë Ndlovu", "lines": [{"item": "tariff – block 1", "amount": 1000}]},
    "warnings": [],
    "delivery": None,
}


def test_the_answer_goes_out_as_the_route_would_send_it() -> None:
    sent = _encoded(Answered(ANSWER, text=encoded(ANSWER)))
    route = vend_json(ANSWER, 201)
    assert sent.status_code == route.status_code == 201
    assert sent.body == route.body
    assert sent.headers.raw == route.headers.raw  # Content-Type, Content-Length, Location, Cache-Control
    assert json.loads(bytes(sent.body)) == ANSWER


def test_an_answer_that_is_not_json_is_refused_before_it_is_stored() -> None:
    with pytest.raises(ValueError):
        encoded({**ANSWER, "units": float("nan")})
