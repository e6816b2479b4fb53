"""``POST /v1/tokens/doctor``: the service's diagnosis over HTTP, every answer checked against the document.

A meter of the database with an engineering token issued to it (the meter is assumed to have entered it: used), the
same token mistyped (the digit named), the meter known by its decoder key alone (the key never in an answer), and
the refusals: a vendor's key, a meter that does not exist, a decoder key of the wrong length.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from keyed_utility import Utility, keyed_utility

import contract
from mita import sts
from mita.api.routes import doctor as doctor_routes
from mita.vend import registry

VENDING_KEY = "abababababababab"
DRN = "47500150231"
PATH = "/v1/tokens/doctor"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Utility]]:
    with keyed_utility(f"sqlite:///{tmp_path_factory.mktemp('doctor') / 'mita.db'}", VENDING_KEY) as u:
        u.registry.create_meter(registry.SYSTEM, drn=DRN, sgc="123456")
        with TestClient(u.app) as client:
            client.event_hooks["response"] = [contract.checker(u.app)]
            yield client, u


def issue(client: TestClient, u: Utility) -> str:
    r = client.post(f"/v1/meters/{DRN}/engineering-tokens", json={"kind": "clear_tamper"},
                    headers={**u.operator, "Idempotency-Key": str(uuid.uuid4())})  # fmt: skip
    assert r.status_code == 201, r.text
    digits: str = r.json()["tokens"][0]["digits"]
    return digits


def ask(client: TestClient, u: Utility, status: int = 200, **body: Any) -> dict[str, Any]:
    r = client.post(PATH, json=body, headers=u.operator)
    assert r.status_code == status, r.text
    answer: dict[str, Any] = r.json()
    return answer


def test_an_issued_token_is_used_and_a_mistyped_one_fixed(served: tuple[TestClient, Utility]) -> None:
    client, u = served
    token = issue(client, u)
    out = ask(client, u, token=token, meter=DRN)
    assert (out["verdict"], out["token"]["kind"], out["meter"]) == ("used", "clear tamper token", DRN)
    assert out["issued"]["vend_kind"] == "engineering" and out["meter_key"]["krn"] == 1
    assert out["token"]["issued_at"][-6] in "+-" or out["token"]["issued_at"].endswith("Z")  # an offset
    typo = token[:11] + str((int(token[11]) + 4) % 10) + token[12:]
    fixed = ask(client, u, token=" ".join([typo[:6], typo[6:]]), meter=DRN)
    assert (fixed["verdict"], fixed["position"], fixed["suggested"]) == ("crc_error", 12, token)
    for answer in (out, fixed):  # every field sent is one the document declares
        assert contract.undeclared(doctor_routes.DoctorOut, answer) == []


def test_a_meter_known_by_its_key_alone(served: tuple[TestClient, Utility]) -> None:
    client, u = served
    token = issue(client, u)
    key = f"{sts.dkga02(bytes.fromhex(VENDING_KEY), sts.MeterNumber.parse(DRN), 2, '123456', 1, 1):016x}"
    r = client.post(PATH, json={"token": token, "decoder_key": key, "ea": 7}, headers=u.admin)
    assert r.status_code == 200, r.text
    assert r.json()["verdict"] == "accepted" and key not in r.text.lower()


def test_refusals(served: tuple[TestClient, Utility]) -> None:
    client, u = served
    token = issue(client, u)
    r = client.post(PATH, json={"token": token, "meter": DRN}, headers=u.vendor)
    assert r.status_code == 403
    other = "4750015024" + str(sts.luhn_digit("4750015024"))
    assert ask(client, u, 404, token=token, meter=other)["code"] == "not_found"
    bad = ask(client, u, 422, token=token, decoder_key="ab" * 7, ea=7)
    assert bad["code"] == "invalid_decoder_key" and "ab" * 7 not in str(bad)
    assert ask(client, u, 422, token=token, meter=DRN, decoder_key="ab" * 8, ea=7)["code"] == "invalid_request"
    assert ask(client, u, 422, token=token, meter=DRN, extra=1)["code"] == "invalid_request"
