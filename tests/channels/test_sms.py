"""SMS without a running Kannel: the sender against a stand-in for sendsms (its answers, the row made before the
call, the login kept out of logs and errors), delivery reports in any order, the sweep, inbound messages once per
id, and ``mita sms`` (a configuration Kannel accepts, the sweep)."""

from __future__ import annotations

import datetime as dt
import http.server
import io
import json
import logging
import subprocess
import threading
from collections.abc import Iterator
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from sqlalchemy import func, select, update

from mita.channels.hooks import HookSecret
from mita.channels.payments import PaymentFact, Payments
from mita.channels.senders import PaymentSender
from mita.channels.sms import box, inbound, reports
from mita.channels.sms.kannel import KannelSender
from mita.cli.main import main as cli
from mita.outbox.senders import Message, SendError
from mita.vend.schema import outbox, sms_inbound, sms_messages
from mita.vend.schema import payments as payments_table
from vend_fixtures import DRN, World

from .channel_world import PHONE, Collect

PASSWORD = "kannel-pw-never-shown"
SECRET = "hook-secret-for-sms-tests-0123"


class Sendsms:
    """Kannel's sendsms as far as Mita sees it: answers ``status`` and ``body`` to each GET, keeps the queries."""

    def __init__(self) -> None:
        self.status, self.body = 202, "0: Accepted for delivery"
        self.queries: list[dict[str, str]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.queries.append({k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()})
                self.send_response(outer.status)
                self.end_headers()
                self.wfile.write(outer.body.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def sendsms() -> Iterator[Sendsms]:
    fake = Sendsms()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()


def sender(world: World, url: str) -> KannelSender:
    return KannelSender(world.engine, url, "mita", PASSWORD, "MITA", HookSecret(SECRET), "https://vend.example",
                        lambda: world.now[0], timeout=15)  # fmt: skip


def message(key: str = "sms:pay:1", payload: Any = None, n: int = 1) -> Message:
    payload = {"kind": "token", "text": "Token: 5566 7788 9900"} if payload is None else payload
    return Message(n, "sms", PHONE, key, payload, 1, dt.datetime(2026, 1, 1), None)


def rows(world: World) -> list[dict[str, Any]]:
    with world.engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(select(sms_messages).order_by(sms_messages.c.id))]


def test_the_sender_makes_the_row_first_and_reads_kannels_answers(
    world: World, sendsms: Sendsms, caplog: pytest.LogCaptureFixture
) -> None:
    s = sender(world, sendsms.url)
    caplog.set_level(logging.INFO)
    s.send(message(payload={"text": "Meter 1: low credit"}, key="sms:x/low_credit/1"))
    q = sendsms.queries[-1]
    assert (q["username"], q["password"], q["to"], q["from"]) == ("mita", PASSWORD, PHONE, "MITA")
    assert q["dlr-mask"] == "27" and q["text"] == "Meter 1: low credit"
    (row,) = rows(world)
    assert row["kind"] == "low_credit" and row["status"] == "submitted" and row["submits"] == 1
    assert q["dlr-url"] == f"https://vend.example/hooks/kannel/dlr/{SECRET}?d={row['id']}&type=%d&reply=%A"
    sendsms.body = "3: Queued for later delivery"  # no SMSC connected: Kannel keeps it
    s.send(message(payload={"text": "Meter 1: low credit"}, key="sms:x/low_credit/1"))  # the outbox's retry
    assert [r["submits"] for r in rows(world)] == [2] and sendsms.queries[-1]["text"] == q["text"]
    for status, body, permanent in ((403, "Authorization failed for sendsms", True), (400, "bad to", True),
                                    (503, "Service unavailable", False)):  # fmt: skip
        sendsms.status, sendsms.body = status, body
        with pytest.raises(SendError) as err:
            s.send(message())
        assert err.value.permanent is permanent and PASSWORD not in str(err.value)
    with pytest.raises(SendError) as err:
        sender(world, "http://127.0.0.1:9").send(message())  # nothing listening: tried again later
    assert not err.value.permanent and PASSWORD not in str(err.value)
    with pytest.raises(SendError) as err:
        s.send(message(payload={"kind": "token"}))  # no text: nothing to send, ever
    assert err.value.permanent
    logged = caplog.text
    assert (
        "/cgi-bin/sendsms" in logged and PASSWORD not in logged and SECRET not in logged and "5566 7788" not in logged
    )


def vended(payments: Payments, drain: Any) -> int:
    """A payment vended, its token SMS queued (channel sms, dedupe ``sms:pay:<id>``)."""
    r = payments.record(PaymentFact("mpesa", "c2b", "RKL51ZDR4F", 10_000, account_ref=DRN, meter=DRN))
    drain({"payment": PaymentSender(payments), "receipt": Collect()})
    assert payments.get(r.id)["status"] == "vended"
    return r.id


def submitted(world: World, key: str) -> int:
    """The ``sms_messages`` row of an outbox row, as the sender makes it before it calls Kannel."""
    with world.engine.connect() as conn:
        got = conn.execute(select(outbox).where(outbox.c.dedupe_key == key)).one()
    return sender(world, "http://127.0.0.1:9")._row(message(got.dedupe_key, got.payload, got.id))


def test_reports_move_messages_forward_only_and_end_the_payment(world: World, payments: Payments, drain: Any) -> None:
    pid = vended(payments, drain)
    sms_id = submitted(world, f"sms:pay:{pid}")
    assert reports.apply(payments, reports.Report(sms_id, 8, "at the SMSC")) == "smsc"
    assert reports.apply(payments, reports.Report(sms_id, 1, "DELIVRD")) == "delivered"
    assert reports.apply(payments, reports.Report(sms_id, 8, "late")) == "delivered"  # never backwards
    assert reports.apply(payments, reports.Report(sms_id, 2, "late")) == "delivered"
    assert reports.apply(payments, reports.Report(10_000, 1, "")) is None
    assert payments.get(pid)["status"] == "delivered"


def test_a_report_and_its_payments_end_are_one_transaction(
    world: World, payments: Payments, drain: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that dies between the message's move and the payment's left the payment at vended for good (the
    reliability soak saw 3 in 3,628): now both go, or neither, and the report's retry ends the payment."""
    pid = vended(payments, drain)
    sms_id = submitted(world, f"sms:pay:{pid}")

    def dies(*_: Any, **__: Any) -> str:
        raise RuntimeError("killed between the two writes")

    with monkeypatch.context() as patched:
        patched.setattr(payments, "move_in", dies)
        with pytest.raises(RuntimeError):
            reports.apply(payments, reports.Report(sms_id, 1, "DELIVRD"))
    with world.engine.connect() as conn:
        assert conn.execute(select(sms_messages.c.status).where(sms_messages.c.id == sms_id)).scalar() != "delivered"
    assert payments.get(pid)["status"] == "vended"
    assert reports.apply(payments, reports.Report(sms_id, 1, "DELIVRD")) == "delivered"  # Kannel retries its report
    assert payments.get(pid)["status"] == "delivered"


def test_a_refused_token_is_sent_again_twice_then_its_payment_is_flagged(
    world: World, payments: Payments, drain: Any
) -> None:
    pid = vended(payments, drain)
    key = f"sms:pay:{pid}"
    for n in range(reports.RESENDS + 1):
        sms_id = submitted(world, key)
        assert reports.apply(payments, reports.Report(sms_id, 16 if n else 2, "UNDELIV")) == "rejected"
        assert reports.apply(payments, reports.Report(sms_id, 2, "again")) == "rejected"  # twice: one resend
        key = f"sms:pay:{pid}:resend{n + 1}"
    with world.engine.connect() as conn:
        sent = conn.execute(select(outbox.c.dedupe_key, outbox.c.payload).where(outbox.c.channel == "sms")).all()
    assert [k for k, _ in sent] == [f"sms:pay:{pid}", f"sms:pay:{pid}:resend1", f"sms:pay:{pid}:resend2"]
    assert len({json.dumps(p, sort_keys=True) for _, p in sent}) == 1  # the same text every time
    assert payments.get(pid)["status"] == "flagged"
    first = rows(world)[0]["id"]  # the operator delivered the first copy after all
    assert reports.apply(payments, reports.Report(first, 1, "DELIVRD")) == "delivered"
    assert payments.get(pid)["status"] == "delivered"


def test_a_late_refusal_of_a_copy_leaves_a_delivered_payment_delivered(
    world: World, payments: Payments, drain: Any
) -> None:
    pid = vended(payments, drain)
    keys = [f"sms:pay:{pid}", f"sms:pay:{pid}:resend1", f"sms:pay:{pid}:resend2"]
    ids = []
    for key in keys:
        ids.append(submitted(world, key))
        reports.apply(payments, reports.Report(ids[-1], 2, "UNDELIV"))
        if key == keys[0]:
            reports.apply(payments, reports.Report(ids[0], 1, "DELIVRD"))  # rejected, then delivered
            assert payments.get(pid)["status"] == "delivered"
    assert payments.get(pid)["status"] == "delivered"


def test_the_sweep_closes_silent_messages_and_flags_unconfirmed_payments(
    world: World, payments: Payments, drain: Any
) -> None:
    pid = vended(payments, drain)
    submitted(world, f"sms:pay:{pid}")
    assert reports.sweep(payments) == reports.Swept(0, 0)
    world.now[0] += dt.timedelta(hours=2)
    assert reports.sweep(payments) == reports.Swept(unknown=1, flagged=0)
    assert rows(world)[0]["status"] == "unknown" and payments.get(pid)["status"] == "vended"
    world.now[0] += dt.timedelta(hours=23)
    assert reports.sweep(payments) == reports.Swept(unknown=0, flagged=1)
    assert payments.get(pid)["status"] == "flagged"
    assert reports.apply(payments, reports.Report(rows(world)[0]["id"], 1, "late")) == "delivered"
    assert payments.get(pid)["status"] == "delivered"  # a late report still counts


def test_an_inbound_sms_acts_and_answers_once_per_gateway_id(world: World, payments: Payments) -> None:
    assert inbound.receive(payments, "kannel-id-1", "+" + PHONE, f"BUY {DRN} 150")
    assert not inbound.receive(payments, "kannel-id-1", "+" + PHONE, f"BUY {DRN} 150")
    with world.engine.connect() as conn:
        channels = sorted(conn.execute(select(outbox.c.channel, outbox.c.dedupe_key)).all())
        stored = conn.execute(select(func.count()).select_from(sms_inbound)).scalar()
    assert [c for c, _ in channels] == ["mpesa.stk", "sms"] and ("sms", "sms:reply:kannel-id-1") in channels
    assert stored == 1


def test_tokens_go_only_to_the_registered_phone(world: World, payments: Payments, drain: Any) -> None:
    vended(payments, drain)
    last = inbound.Command("last", DRN)
    assert "Token" in inbound.answer(payments, last, "+254 712-345678", "sms:1")
    for stranger in ("254712345679", "712345678", "4712345678", ""):
        assert "registered" in inbound.answer(payments, last, stranger, "sms:1")
    assert inbound.same_phone("+254712345678", "254712345678") and not inbound.same_phone(None, PHONE)


def run_cli(*words: str) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = cli(list(words))
    return code, out.getvalue()


def test_kannel_config_is_one_kannel_accepts_and_keeps_its_secrets_to_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert box.installed(), "Kannel is needed: make kannel (Debian's kannel and kannel-extras)"
    monkeypatch.setenv("MITA_KANNEL_PASSWORD", PASSWORD)
    monkeypatch.setenv("MITA_HOOK_SECRET", SECRET)
    monkeypatch.setenv("MITA_PUBLIC_URL", "https://vend.example")
    out = tmp_path / "kannel.conf"
    code, printed = run_cli("sms", "kannel-config", "--out", str(out), "--port-base", "14000")
    assert code == 0 and printed == ""
    assert out.stat().st_mode & 0o777 == 0o600
    text = out.read_text()
    assert f'get-url = "https://vend.example/hooks/kannel/mo/{SECRET}?id=%I' in text and "max-messages = 0" in text
    assert "sendsms-port = 14013" in text and "store-type = file" in text and f"password = {PASSWORD}" in text
    assert PASSWORD not in capsys.readouterr().err
    checked = subprocess.run(["/usr/lib/kannel/test/test_cfg", str(out)], capture_output=True, text=True, timeout=30)
    assert "cfg_read returned 0" in checked.stderr, checked.stderr
    monkeypatch.delenv("MITA_KANNEL_PASSWORD")
    assert run_cli("sms", "kannel-config")[0] != 0


def test_mita_sms_sweep(world: World, payments: Payments, drain: Any, url: str) -> None:
    """On the wall clock: a message two hours silent is unknown, its payment (vended just now) waits."""
    pid = vended(payments, drain)
    submitted(world, f"sms:pay:{pid}")
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with world.engine.begin() as conn:
        conn.execute(update(sms_messages).values(updated_at=now - dt.timedelta(hours=2)))
        conn.execute(update(payments_table).values(updated_at=now - dt.timedelta(minutes=1)))
    code, printed = run_cli("sms", "sweep", "--json", "--database-url", url)
    assert code == 0 and json.loads(printed) == {"unknown": 1, "flagged": 0}
    code, printed = run_cli("sms", "sweep", "--json", "--database-url", url, "--confirm-hours", "0")
    assert code == 0 and json.loads(printed) == {"unknown": 0, "flagged": 1}
