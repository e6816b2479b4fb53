"""USSD: the menu is a pure function of the session's input history (every path, a repeated hop, bad input, a hop
after END, any history at all), and the aggregator's callback answers it, pushing the payment after the session."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from mita.channels import texts, ussd
from mita.channels.payments import purchase_code
from mita.channels.ussd import Effect, State
from mita.vend.schema import outbox, payments
from vend_fixtures import DRN, OTHER_DRN, World

from .channel_api import SECRET, api
from .channel_world import PHONE

HOOK = f"/hooks/at/ussd/{SECRET}"


def shown(body: str) -> None:
    """A screen the aggregator can show: CON/END, at most 182 characters, GSM-7 only."""
    assert body.startswith(("CON ", "END ")), body
    assert len(body) <= ussd.SCREEN_MAX, (len(body), body)
    assert set(body) <= texts.GSM7, set(body) - texts.GSM7


# ---------------------------------------------------------------------- the pure table


@pytest.mark.parametrize(
    ("text", "state", "effect", "end"),
    [
        ("", State.MAIN, Effect.NONE, False),
        ("1", State.BUY_METER, Effect.NONE, False),
        (f"1*{DRN}", State.BUY_AMOUNT, Effect.NONE, False),
        (f"1*{DRN}*500", State.CONFIRM, Effect.QUOTE, False),
        (f"1*{DRN}*500*1", State.PAY, Effect.PAY, True),
        (f"1*{DRN}*500*2", State.CANCELLED, Effect.NONE, True),
        ("2", State.LAST_METER, Effect.NONE, False),
        (f"2*{DRN}", State.LAST, Effect.LAST, True),
        ("3", State.BALANCE_METER, Effect.NONE, False),
        (f"3*{DRN}", State.BALANCE, Effect.BALANCE, True),
        # back one screen, and home
        (f"1*{DRN}*0", State.BUY_METER, Effect.NONE, False),
        (f"1*{DRN}*500*0", State.BUY_AMOUNT, Effect.NONE, False),
        (f"1*{DRN}*500*00", State.MAIN, Effect.NONE, False),
        (f"1*{DRN}*500*0*0*0*2*{DRN}", State.LAST, Effect.LAST, True),
        # a hop after END, and a session too long
        (f"1*{DRN}*500*1*1", State.ENDED, Effect.NONE, True),
        (f"2*{DRN}*9", State.ENDED, Effect.NONE, True),
        ("4*" * 40 + "1", State.TOO_LONG, Effect.NONE, True),
    ],
)
def test_every_path_of_the_menu(text: str, state: State, effect: Effect, end: bool) -> None:
    s = ussd.step(text)
    assert (s.state, s.effect, s.screen.end) == (state, effect, end)
    shown(s.screen.body)
    assert ussd.step(text) == s  # a repeated hop: the same screen


def test_what_was_entered_is_carried_to_the_route() -> None:
    s = ussd.step(f"1*{DRN}*500*1", ussd.Menu(currency="KES"))
    assert (s.meter, s.amount) == (DRN, 500)
    assert s.screen.body == (
        f"END Approve the M-Pesa prompt on your phone to pay KES 500 for meter {DRN}. The token comes by SMS."
    )
    spaced = ussd.step(f"1* {DRN[:4]} {DRN[4:]} *500")  # a keypad's spaces are not the number's
    assert (spaced.state, spaced.meter) == (State.CONFIRM, DRN)


@pytest.mark.parametrize(
    ("text", "state", "problem"),
    [
        ("4", State.MAIN, ussd.PROBLEMS["choice"]),
        ("0", State.MAIN, ussd.PROBLEMS["choice"]),  # no way back from the first screen
        ("", State.MAIN, None),
        ("1*12345", State.BUY_METER, ussd.PROBLEMS["meter"]),
        (f"1*{DRN[:-1]}{(int(DRN[-1]) + 1) % 10}", State.BUY_METER, ussd.PROBLEMS["meter"]),  # the check digit
        ("1*abc", State.BUY_METER, ussd.PROBLEMS["meter"]),
        (f"1*{DRN}*0.5", State.BUY_AMOUNT, ussd.PROBLEMS["amount"]),
        (f"1*{DRN}*{ussd.MAX_AMOUNT + 1}", State.BUY_AMOUNT, ussd.PROBLEMS["amount"]),
        (f"1*{DRN}*", State.BUY_AMOUNT, ussd.PROBLEMS["amount"]),  # an empty input
        (f"1*{DRN}*500*3", State.CONFIRM, ussd.PROBLEMS["choice"]),
    ],
)
def test_bad_input_shows_the_screen_again_with_what_was_wrong(text: str, state: State, problem: str | None) -> None:
    s = ussd.step(text)
    assert s.state == state and not s.screen.end
    assert s.effect is Effect.NONE  # a screen shown again does nothing again (no second quote)
    if problem is not None:
        assert s.screen.text.startswith(problem)
    shown(s.screen.body)


def test_after_bad_input_the_session_goes_on() -> None:
    s = ussd.step(f"1*12345*{DRN}*abc*500*1")
    assert (s.state, s.meter, s.amount, s.effect) == (State.PAY, DRN, 500, Effect.PAY)


def test_the_screens_the_route_fills_in_fit_one_screen() -> None:
    s = ussd.step(f"1*{'4750015023' + '1'}*{ussd.MAX_AMOUNT}")
    worst = {"quantity": "123456.7", "unit": "kWh", "debt_recovered": 123_456_789}
    shown(ussd.quoted(s, worst).body)
    assert "buys 123456.7 kWh" in ussd.quoted(s, worst).body and "debt 1234567.89" in ussd.quoted(s, worst).body
    for code in [*ussd.REFUSALS, "something_else"]:
        shown(ussd.refused(s, code).body)
        assert not ussd.refused(s, code).end  # at the quote: a way back
    pay = ussd.step(f"1*{DRN}*500*1")
    assert ussd.refused(pay, "not_found").end  # at the payment: the session ends
    last = ussd.step(f"2*{DRN}")
    tokens = [{"kind": "key_change", "digits": "1" * 20}] * 2 + [{"kind": "credit", "digits": "2" * 20}] * 2
    answer = {"id": "x" * 36, "meter": DRN, "tokens": tokens, "receipt": {"quantity": "9999.9", "unit": "kWh"}}
    for allowed in (True, False):
        shown(ussd.last_token(last, answer, allowed).body)
        shown(ussd.balance(last, {**answer, "created_at": "2026-03-10T09:30:00+02:00", "amount": 10**9}, allowed).body)
    shown(ussd.last_token(last, None, True).body)
    for _, screen in ussd.screens(ussd.Menu(title="A utility with a long name", currency="KES")):
        shown(screen.body)


def test_an_aggregator_that_sends_only_the_latest_input_is_normalised() -> None:
    history = ""
    for latest in (None, "1", DRN, "500"):
        history = ussd.append(history, latest)
    assert history == f"1*{DRN}*500" and ussd.step(history).state == State.CONFIRM


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(["0", "00", "1", "2", "3", DRN, "500", ""]), st.text(max_size=25))))
def test_any_history_gives_a_screen_that_fits(inputs: list[str]) -> None:
    text = "*".join(inputs)
    s = ussd.step(text)
    shown(s.screen.body)
    assert s == ussd.step(text)
    assert s.effect is Effect.NONE or s.meter is not None
    assert s.effect not in (Effect.QUOTE, Effect.PAY) or (s.amount is not None and 1 <= s.amount <= ussd.MAX_AMOUNT)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=400))
def test_any_text_at_all(text: str) -> None:
    shown(ussd.step(text).screen.body)


# ---------------------------------------------------------------------- the callback


def hop(client: Any, text: str, session: str = "ATUid_1", phone: str = "+" + PHONE) -> Any:
    form = {"sessionId": session, "serviceCode": "*384*1234#", "phoneNumber": phone, "networkCode": "63902",
            "text": text}  # fmt: skip
    return client.post(HOOK, data=form)


def test_a_purchase_by_ussd_ends_the_session_then_pushes(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    with api(world, monkeypatch) as a:
        first = hop(a.client, "")
        assert first.status_code == 200 and first.headers["content-type"].startswith("text/plain")
        assert first.text.startswith("CON ") and "1. Buy tokens" in first.text
        confirm = hop(a.client, f"1*{DRN}*50")
        assert confirm.text.startswith(f"CON Meter {DRN}\nKES 50 buys ") and "1. Pay" in confirm.text
        shown(confirm.text)
        paid = [hop(a.client, f"1*{DRN}*50*1") for _ in range(3)]  # the aggregator repeats a slow hop
        assert {r.text for r in paid} == {paid[0].text} and paid[0].text.startswith("END Approve the M-Pesa")
        after = hop(a.client, f"1*{DRN}*50*1*1")
        assert after.text == "END " + ussd.NODES[State.ENDED].prompt
    with world.engine.connect() as conn:
        rows = conn.execute(select(payments)).all()
        pushes = conn.execute(select(outbox).where(outbox.c.channel == "mpesa.stk")).all()
    assert len(rows) == 1 and len(pushes) == 1  # one payment, one push, however many hops
    p, push = rows[0], pushes[0]
    assert (p.status, p.meter, p.amount, p.deliver_to, p.provider_ref) == (
        "initiated",
        DRN,
        5000,
        PHONE,
        purchase_code("ussd:ATUid_1"),
    )
    assert push.next_attempt_at - push.created_at == dt.timedelta(seconds=2)  # due after the session's END
    assert push.payload["phone"] == PHONE and push.payload["amount"] == 5000


def test_the_callback_refuses_what_cannot_be_sold_and_a_wrong_secret(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    with api(world, monkeypatch) as a:
        unknown = hop(a.client, f"1*{OTHER_DRN}*50")
        assert unknown.text.startswith(f"CON Meter {OTHER_DRN} is not registered") and "0 Back" in unknown.text
        pay = hop(a.client, f"1*{OTHER_DRN}*50*1")
        assert pay.text.startswith(f"END Meter {OTHER_DRN} is not registered")
        wrong = a.client.post("/hooks/at/ussd/not-the-secret-0123456789", data={"sessionId": "x", "text": ""})
        assert wrong.status_code == 404
        assert a.client.post(HOOK, data={"text": "1"}).status_code == 400  # no session, no phone
    with world.engine.connect() as conn:
        assert conn.execute(select(payments)).all() == []


def test_last_token_and_balance_go_only_to_the_meters_phone(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    vend = world.vend(5000)
    with api(world, monkeypatch) as a:
        last = hop(a.client, f"2*{DRN}")
        assert last.text.startswith("END ") and texts.grouped(vend["tokens"][-1]["digits"]) in last.text
        balance = hop(a.client, f"3*{DRN}")
        assert balance.text.startswith(f"END Meter {DRN}\nLast purchase 2026-03-10 09:30") and "kWh" in balance.text
        for text in (f"2*{DRN}", f"3*{DRN}"):
            stranger = hop(a.client, text, phone="+254700000001")
            assert (
                "only to the phone registered" in stranger.text and vend["tokens"][0]["digits"][:4] not in stranger.text
            )
        nobody = hop(a.client, f"2*{OTHER_DRN}")
        assert "only to the phone registered" in nobody.text  # an unregistered meter says no more than that
        for r in (last, balance, stranger, nobody):
            shown(r.text)
