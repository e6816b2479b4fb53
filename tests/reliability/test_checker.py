"""The checker itself, on a small consistent world made by hand (tokens really encrypted under the meter's key):
the world passes, and each single defect planted in it is reported under its invariant's name. Fast: no server."""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from mita import sts
from mita.sts import recipes
from mita.vend import sample

from .checker import Checker, Key, Story

VENDING_KEY = bytes.fromhex(sample.TEST_VENDING_KEY)
DRN = sample.meter_number("4700000000")
BASE = 2014
TIDS = (6_000_000, 6_000_001, 6_000_005)

World = tuple[Story, dict[str, list[dict[str, Any]]]]


def digits(tid: int, units: int) -> str:
    key = sts.derive_decoder_key(2, VENDING_KEY, sts.MeterNumber.parse(DRN), 2, sample.SGC, 1, 1, sts.BaseDate(BASE),
                                 sts.EA(7))  # fmt: skip
    return str(sts.encode(recipes.credit_token("electricity", tid, units, 5), sts.EA(7), key))


def world() -> World:
    """Three vends of 50 units, each paid 1000 with 100 of debt recovered; all answered, stored, sent."""
    vends, tokens, ledger, idem, audit, outbox, keys = [], [], [], [], [], [], {}
    for i, tid in enumerate(TIDS):
        vid, key = f"v{i}", f"k{i}"
        d = digits(tid, 50)
        vends.append({"id": vid, "vendor_id": 1, "api_key_id": 1, "meter_id": 1, "customer_id": 1,
                      "kind": "purchase", "amount": 1000, "units": 50, "status": "completed"})  # fmt: skip
        tokens.append({"id": i + 1, "vend_id": vid, "meter_id": 1, "seq": 0, "kind": "credit", "tid": tid,
                       "base_date": BASE, "token_class": 0, "subclass": 0, "digits": d, "units": 50})  # fmt: skip
        ledger += [{"vend_id": vid, "account": "vendor:1", "debit": 1000, "credit": 0},
                   {"vend_id": vid, "account": "customer:1:debt", "debit": 0, "credit": 100},
                   {"vend_id": vid, "account": "revenue:energy", "debit": 0, "credit": 900}]  # fmt: skip
        idem.append({"api_key_id": 1, "key": key, "status_code": 201, "vend_id": vid})
        audit.append({"id": i + 1, "entity_id": vid})
        outbox.append({"id": i + 1, "vend_id": vid, "channel": "receipt", "dedupe_key": f"receipt:{vid}",
                       "status": "sent", "attempts": 1})  # fmt: skip
        answer = {"vend_id": vid, "meter": DRN, "tokens": [{"digits": d, "tid": tid, "units": 50}], "units": 50}
        keys[("till0", key)] = Key("till0", key, {"{}"}, {vid}, [answer], ["info", "ok"] if i == 1 else ["ok"])
    db = {
        "vends": vends, "tokens": tokens, "ledger": ledger, "idempotency": idem, "audit": audit, "outbox": outbox,
        "meters": [{"id": 1, "drn": DRN, "iin": "600727", "ti": 1, "kt": 2, "krn": 1, "ea": 7, "ken": 255,
                    "base_date": BASE, "pending_key": None, "sgc": sample.SGC, "dkga": 2}],
        "customers": [{"id": 1, "debt": 20_000 - 300, "carried": 0, "refund_balance": 0}],
        "commands": [], "payments": [], "endpoints": [], "api_keys": [{"id": 1, "name": "till0"}],
        "triggers": [{"tgname": "audit_no_change"}],
    }  # fmt: skip
    setup = {"api_key_ids": {"till0": 1}, "customers": {"1": {"debt": 20_000, "carried": 0, "refund_balance": 0}}}
    story = Story(setup, keys, [], [{"t": 1.0, "fault": "kill_api_worker"}], [0.5, 1.2, 2.0], Counter(ops=4, ok=3))
    return story, db


def check(w: World) -> list[str]:
    story, db = w
    return Checker(story, db, VENDING_KEY, drained=True, recovery_limit_s=30).run().failed


def test_the_consistent_world_passes_every_invariant() -> None:
    story, db = world()
    report = Checker(story, db, VENDING_KEY, drained=True).run()
    assert report.ok, report.as_json()
    assert report.figures["acknowledged"] == 3 and report.figures["meter_replay_tokens"] == 3
    assert report.figures["in_doubt_keys"] == 1 and report.figures["in_doubt_committed"] == 1
    assert report.figures["ledger_balanced"] is True


def _drop_vend(w: World) -> None:
    w[1]["vends"].pop()


def _other_digits(w: World) -> None:
    w[0].keys[("till0", "k0")].answers[0]["tokens"][0]["digits"] = digits(TIDS[0], 51)


def _two_answers(w: World) -> None:
    w[0].keys[("till0", "k0")].vend_ids.add("v1")
    w[0].keys[("till0", "k0")].answers.append(w[0].keys[("till0", "k1")].answers[0])


def _two_rows(w: World) -> None:
    w[1]["idempotency"].append({"api_key_id": 1, "key": "k0", "status_code": 201, "vend_id": "v0"})


def _unknown(w: World) -> None:
    w[0].keys[("till0", "k9")] = Key("till0", "k9", {"{}"}, set(), [], ["info", "info"])


def _unsent_key(w: World) -> None:
    w[1]["idempotency"][2]["key"] = "never-sent"


def _no_idempotency(w: World) -> None:
    w[1]["idempotency"].pop()


def _tid_twice(w: World) -> None:
    w[1]["tokens"][2]["tid"] = TIDS[1]


def _tid_backwards(w: World) -> None:
    w[1]["tokens"][1], w[1]["tokens"][2] = w[1]["tokens"][2], w[1]["tokens"][1]


def _row_units(w: World) -> None:
    w[1]["tokens"][0]["units"] = 49


def _sold_more(w: World) -> None:
    w[1]["vends"][0]["units"] = 60


def _unbalanced(w: World) -> None:
    w[1]["ledger"][2]["credit"] = 899


def _debt_moved(w: World) -> None:
    w[1]["customers"][0]["debt"] = 20_000


def _no_audit(w: World) -> None:
    w[1]["audit"].pop()


def _no_trigger(w: World) -> None:
    w[1]["triggers"].clear()


def _two_receipts(w: World) -> None:
    w[1]["outbox"].append({**w[1]["outbox"][0], "id": 99})


def _pending_after_drain(w: World) -> None:
    w[1]["outbox"][0]["status"] = "pending"


def _open_payment(w: World) -> None:
    w[1]["payments"].append({"id": 1, "provider": "mpesa", "provider_ref": "Q1", "receipt": None,
                             "status": "received", "vend_id": None, "amount": 100})  # fmt: skip


def _unpaid(w: World) -> None:
    w[0].payments.append({"trans_id": "Q404"})


def _slow_recovery(w: World) -> None:
    w[0].ok_times[:] = [0.5, 99.0]


DEFECTS: dict[str, tuple[Callable[[World], None], str]] = {
    "an answered vend missing": (_drop_vend, "lost"),
    "an answer's digits not the stored ones": (_other_digits, "lost"),
    "one key answered with two vends": (_two_answers, "duplicated"),
    "one key with two vends in the database": (_two_rows, "duplicated"),
    "an unknown outcome never retried": (_unknown, "unresolved"),
    "a vend under a key never sent": (_unsent_key, "phantom"),
    "a vend without an idempotency row": (_no_idempotency, "phantom"),
    "a TID issued twice": (_tid_twice, "tid"),
    "a TID lower than the one before": (_tid_backwards, "tid"),
    "a token's row not what it decodes to": (_row_units, "decode"),
    "more sold than the tokens carry": (_sold_more, "meter_replay"),
    "a vend's lines unbalanced": (_unbalanced, "ledger"),
    "a customer's debt not what the ledger recovered": (_debt_moved, "ledger"),
    "a vend without its audit entry": (_no_audit, "audit"),
    "the append-only trigger gone": (_no_trigger, "audit"),
    "two receipt rows for one vend": (_two_receipts, "outbox"),
    "a row pending after draining": (_pending_after_drain, "outbox"),
    "a payment not in a final state": (_open_payment, "payments"),
    "a paid transaction with no payment": (_unpaid, "payments"),
    "no acknowledgement for long after a fault": (_slow_recovery, "recovery"),
}


@pytest.mark.parametrize("defect", list(DEFECTS))
def test_each_defect_is_reported_under_its_invariant(defect: str) -> None:
    plant, name = DEFECTS[defect]
    w = copy.deepcopy(world())
    plant(w)
    assert name in check(w)
