"""A delivery report that meets Mita unavailable for a while still arrives (a real Kannel on loopback).

Kannel's smsbox acknowledges a report to bearerbox *before* calling Mita's ``dlr-url``, and keeps its retries in
memory: once they run out, nothing in Kannel holds the report any more, and its payment stays ``vended`` until the
delivery sweep flags it a day later. With 5 retries a second apart, an outage of Mita longer than about 5 s (a
database restart or failover, the API restarted) lost every report that came meanwhile.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from mita.channels.payments import PaymentFact, Payments
from mita.channels.senders import PaymentSender
from mita.channels.sms import box as kannel
from mita.channels.sms import reports
from mita.vend.errors import VendError
from vend_fixtures import DRN, World

from .channel_world import PHONE, Collect
from .test_kannel import sender, served, status, until

__all__ = ["served"]  # the fixture, imported to be used here

pytestmark = pytest.mark.slow

OUTAGE_S = 12.0  # more than the old 5 retries a second apart; far less than the retries' reach now


def test_the_retries_reach_past_a_restart_of_mita() -> None:
    conf = kannel.config(mo_url="http://127.0.0.1:1/mo", folder=Path("/k"), admin=1, smsbox=2, sendsms=3,
                         smsc=4, password="pw")  # fmt: skip
    assert f"http-request-retry = {kannel.CALLBACK_RETRIES}\n" in conf
    assert f"http-queue-delay = {kannel.CALLBACK_RETRY_DELAY_S}\n" in conf
    assert kannel.CALLBACK_RETRIES * kannel.CALLBACK_RETRY_DELAY_S >= 300  # five minutes of Mita away


def test_a_report_that_meets_mita_unavailable_for_seconds_still_ends_its_payment(
    world: World, payments: Payments, drain: Any, served: tuple[str, kannel.Box], monkeypatch: pytest.MonkeyPatch
) -> None:
    base, gateway = served
    apply = reports.apply
    down_until = time.monotonic() + 3600.0
    refused: list[tuple[int, int]] = []

    def unavailable(pay: Payments, report: reports.Report) -> str | None:
        if time.monotonic() < down_until:
            refused.append((report.sms_id, report.kind))
            raise VendError("database_unavailable", "the database restarts")  # Mita answers 503
        return apply(pay, report)

    monkeypatch.setattr(reports, "apply", unavailable)
    r = payments.record(PaymentFact("mpesa", "c2b", "RKL51ZDR9X", 10_000, account_ref=DRN, meter=DRN))
    drain({"payment": PaymentSender(payments), "sms": sender(world, base, gateway), "receipt": Collect()})
    until(lambda: len(gateway.messages_to(PHONE)) == 1)
    until(lambda: bool(refused))
    down_until = time.monotonic() + OUTAGE_S  # from the first refused report: down for OUTAGE_S more
    time.sleep(OUTAGE_S)
    assert status(payments, r.id) == "vended"
    until(lambda: status(payments, r.id) == "delivered", timeout=kannel.CALLBACK_RETRY_DELAY_S + 15)
    assert len({kind for _, kind in refused}) == 2, refused  # both reports (at the SMSC, delivered) met the outage
