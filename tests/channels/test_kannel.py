"""SMS through a real Kannel (Debian's kannel, with kannel-extras' fake SMSC) on loopback: token SMS delivered and
reported, customers' requests answered once, and nothing lost when bearerbox is killed with messages queued."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from mita.channels.hooks import HookSecret
from mita.channels.payments import PaymentFact, Payments
from mita.channels.senders import PaymentSender
from mita.channels.sms import box as kannel
from mita.channels.sms import reports
from mita.channels.sms.kannel import KannelSender
from mita.outbox.queue import Outgoing, enqueue_many
from mita.vend.schema import outbox, sms_inbound, sms_messages
from mita.vend.schema import payments as payments_table
from vend_fixtures import DRN, World

from .channel_world import PHONE, Collect
from .servers import SECRET, mita_server

pytestmark = pytest.mark.slow


def until(check: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.fixture
def served(world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[tuple[str, kannel.Box]]:
    assert kannel.installed(), "Kannel is needed: make kannel (Debian's kannel and kannel-extras)"
    with mita_server(str(world.engine.url), monkeypatch) as base:
        gateway = kannel.Box(tmp_path / "kannel", HookSecret(SECRET).path(base, "kannel/mo")).start()
        try:
            yield base, gateway
        finally:
            gateway.stop()


def sender(world: World, base: str, gateway: kannel.Box) -> KannelSender:
    return KannelSender(world.engine, gateway.sendsms_url, "mita", gateway.password, "MITA", HookSecret(SECRET), base,
                        lambda: world.now[0])  # fmt: skip


def status(payments: Payments, payment_id: int) -> str:
    return str(payments.get(payment_id)["status"])


def test_a_token_sms_reaches_the_phone_and_its_report_ends_the_payment(
    world: World, payments: Payments, drain: Any, served: tuple[str, kannel.Box]
) -> None:
    base, gateway = served
    r = payments.record(PaymentFact("mpesa", "c2b", "RKL51ZDR4F", 10_000, account_ref=DRN, meter=DRN))
    drain({"payment": PaymentSender(payments), "sms": sender(world, base, gateway), "receipt": Collect()})
    until(lambda: len(gateway.messages_to(PHONE)) == 1)
    assert "Token: " in gateway.messages_to(PHONE)[0] and DRN in gateway.messages_to(PHONE)[0]
    until(lambda: status(payments, r.id) == "delivered")


def test_kannel_gets_an_answer_it_takes_as_done_so_each_report_comes_once(
    world: World, payments: Payments, drain: Any, served: tuple[str, kannel.Box], monkeypatch: pytest.MonkeyPatch
) -> None:
    """smsbox retries a callback answered anything but 200 or 202 (a 204 brought every report six times)."""
    base, gateway = served
    seen: list[tuple[int, int]] = []
    apply = reports.apply

    def counted(pay: Payments, report: reports.Report) -> str | None:
        seen.append((report.sms_id, report.kind))
        return apply(pay, report)

    monkeypatch.setattr(reports, "apply", counted)
    r = payments.record(PaymentFact("mpesa", "c2b", "RKL51ZDR4G", 10_000, account_ref=DRN, meter=DRN))
    drain({"payment": PaymentSender(payments), "sms": sender(world, base, gateway), "receipt": Collect()})
    until(lambda: status(payments, r.id) == "delivered")
    time.sleep(kannel.CALLBACK_RETRY_DELAY_S + 1.5)  # a retry of a report would have come by now (http-queue-delay)
    assert seen and len(seen) == len(set(seen)), seen


def test_low_credit_and_key_change_sms_leave_through_kannel_too(
    world: World, drain: Any, served: tuple[str, kannel.Box]
) -> None:
    base, gateway = served
    with world.engine.begin() as conn:  # as the detection and a campaign queue them (channel sms, text, phone)
        enqueue_many(conn, [
            Outgoing("sms", PHONE, f"sms:{DRN}/low_credit/1", {"meter": DRN, "text": "Meter 47500150231: about 2 days "
                     "of credit left."}, world.now[0]),
            Outgoing("sms", PHONE, "sms:campaign:1:kc:1", {"meter": DRN, "text": "Meter 47500150231: enter these key "
                     "change tokens in order: 1111 2222"}, world.now[0]),
        ])  # fmt: skip
    drain({"sms": sender(world, base, gateway)})
    until(lambda: len(gateway.messages_to(PHONE)) == 2)
    with world.engine.connect() as conn:
        kinds = sorted(conn.execute(select(sms_messages.c.kind)).scalars())
    assert kinds == ["key_change", "low_credit"]
    until(lambda: _statuses(world) == ["delivered", "delivered"])


def _statuses(world: World) -> list[str]:
    with world.engine.connect() as conn:
        return sorted(conn.execute(select(sms_messages.c.status)).scalars())


def test_customers_requests_are_answered_once_and_tokens_only_to_the_registered_phone(
    world: World, payments: Payments, drain: Any, served: tuple[str, kannel.Box]
) -> None:
    base, gateway = served
    payments.record(PaymentFact("mpesa", "c2b", "RKL51ZDR4F", 10_000, account_ref=DRN, meter=DRN))
    sms = sender(world, base, gateway)
    drain({"payment": PaymentSender(payments), "sms": sms, "receipt": Collect()})
    until(lambda: len(gateway.messages_to(PHONE)) == 1)
    token = gateway.messages_to(PHONE)[0]
    asked = [(PHONE, f"last {DRN}"), ("254799999999", f"LAST {DRN}"), ("254799999999", f"BUY {DRN} 150")]
    for k, (phone, text) in enumerate(asked, 1):  # one in at a time: fakesmsc can lose lines read together
        gateway.send_mo(phone, text)
        until(lambda: _count(world, sms_inbound) == k)  # noqa: B023
    mo = f"{base}/hooks/kannel/mo/{SECRET}"
    for _ in range(2):  # Kannel retrying one message: the same id
        assert httpx.get(mo, params={"id": "same-id", "from": PHONE, "text": f"BAL {DRN}"}).status_code == 200
    drain({"sms": sms})
    until(lambda: len(gateway.messages_to(PHONE)) == 3 and len(gateway.messages_to("254799999999")) == 2)
    mine = gateway.messages_to(PHONE)
    assert mine[1] == token  # the same text again, never a new token
    assert mine[2].startswith(f"Meter {DRN}: last purchase")
    strangers = gateway.messages_to("254799999999")
    assert any("registered" in t for t in strangers) and any("M-Pesa prompt" in t for t in strangers), strangers
    assert not any("Token" in t for t in strangers)
    with world.engine.connect() as conn:
        pushes = conn.execute(select(func.count()).select_from(outbox).where(outbox.c.channel == "mpesa.stk")).scalar()
    assert pushes == 1


def test_bearerbox_killed_with_messages_queued_loses_none_and_doubles_none(
    world: World, payments: Payments, drain: Any, served: tuple[str, kannel.Box]
) -> None:
    base, gateway = served
    gateway.stop_smsc()  # the operator's link is down: Kannel queues in its store
    for i in range(5):
        payments.record(PaymentFact("mpesa", "c2b", f"RKL51ZDR{i:02d}", 5_000, account_ref=DRN, meter=DRN))
    counts = drain({"payment": PaymentSender(payments), "sms": sender(world, base, gateway), "receipt": Collect()})
    assert counts["dead"] == 0
    time.sleep(1)
    gateway.kill_bearerbox()
    gateway.start_bearerbox()
    gateway.restart_smsbox()
    gateway.start_smsc()
    until(lambda: len(gateway.messages_to(PHONE)) >= 5, timeout=40)
    time.sleep(2)
    texts = gateway.messages_to(PHONE)
    assert len(texts) == 5 and len(set(texts)) == 5
    with world.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(payments_table)).scalar() == 5


def _count(world: World, table: Any) -> int:
    with world.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())
