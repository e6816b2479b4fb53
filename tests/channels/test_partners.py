"""Partners' webhooks: a real HTTP server on loopback receives a partner's vend and delivery events, signed, once
each; other vendors' vends post nothing; a webhook name without a URL is a dead row, not a silent loss."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select

from mita.channels import partners
from mita.channels.payments import PaymentFact, Payments
from mita.channels.senders import PaymentSender
from mita.outbox.senders import Sender, SenderContext
from mita.settings import Settings
from mita.vend.errors import VendError
from mita.vend.schema import audit, outbox, vendors
from vend_fixtures import DRN, World

from .channel_world import Collect

pytestmark = pytest.mark.slow
SECRET = "partner-signing-secret-0123456789"


class Partner:
    """A partner's webhook endpoint: keeps what it was posted."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict[str, str], bytes]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mita/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def events(self) -> list[dict[str, Any]]:
        out = []
        for headers, body in self.posts:
            expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
            assert hmac.compare_digest(headers["x-mita-signature"], expected)  # signed with the shared secret
            event = json.loads(body)
            assert headers["idempotency-key"] == event["id"]
            out.append(event)
        return out

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def partner() -> Iterator[Partner]:
    served = Partner()
    yield served
    served.stop()


def sender_for(world: World, payments: Payments, settings: Settings) -> Sender:
    made: dict[str, Callable[[SenderContext], Sender]] = {}
    routes = partners.install(payments, settings, lambda kind, factory: made.__setitem__(kind, factory))
    assert routes == {"receipt": "partner", "partner": "partner"}
    return made["partner"](SenderContext(world.engine, threading.Event(), settings.sender_env()))


def test_without_webhooks_nothing_is_installed(payments: Payments) -> None:
    made: list[str] = []
    assert partners.install(payments, Settings(webhook_urls=""), lambda kind, _: made.append(kind)) == {}
    assert made == []


def test_a_partners_vends_and_deliveries_reach_its_webhook_signed_once(
    world: World, payments: Payments, partner: Partner, drain: Any
) -> None:
    settings = Settings(webhook_urls=f"bank={partner.url}", webhook_secret=SECRET)
    known = partners.configured(settings)
    assert known == {"bank": partner.url}
    shop = partners.set_webhook(world.engine, world.admin, world.vendor.vendor_id, "bank", known, world.now[0])
    assert shop["webhook"] == "bank"
    sender = sender_for(world, payments, settings)
    made = world.vend(5000)  # the partner's own vend
    paid = payments.record(PaymentFact("mpesa", "c2b", "RKL51ZDR4F", 10_000, account_ref=DRN, meter=DRN))
    senders = {"receipt": sender, "partner": sender, "payment": PaymentSender(payments), "sms": Collect()}
    drain(senders)
    drain(senders)
    created = partner.events()
    assert [e["event"] for e in created] == ["vend.created"]  # the M-Pesa vend is not the partner's: nothing posted
    event = created[0]
    assert event["vend_id"] == made["id"] and event["meter"] == DRN and event["id"] == f"vend.created:{made['id']}"
    assert [t["digits"] for t in event["tokens"]] == [t["digits"] for t in made["tokens"]]
    assert event["receipt"]["paid"] == made["receipt"]["paid"]
    assert payments.get(paid.id)["status"] == "vended"

    channel_vend = payments.get(paid.id)["vend_id"]
    with world.engine.begin() as conn:
        assert partners.queue_delivery_event(conn, made["id"], world.now[0], detail="DLR 1")
        assert not partners.queue_delivery_event(conn, made["id"], world.now[0])  # the same event: once
        assert not partners.queue_delivery_event(conn, channel_vend, world.now[0])  # not a partner's vend
    drain(senders)
    events = partner.events()
    assert [e["event"] for e in events] == ["vend.created", "vend.delivered"]
    assert events[1]["vend_id"] == made["id"] and events[1]["via"] == "sms" and events[1]["detail"] == "DLR 1"
    with world.engine.connect() as conn:
        rows = conn.execute(select(outbox.c.channel, outbox.c.status)).all()
    assert {status for _, status in rows} == {"sent"}


def test_a_webhook_without_a_url_is_a_dead_row(world: World, payments: Payments, partner: Partner, drain: Any) -> None:
    settings = Settings(webhook_urls=f"bank={partner.url}", webhook_secret=SECRET)
    with world.engine.begin() as conn:  # configured once, then the name dropped from MITA_WEBHOOK_URLS
        conn.execute(vendors.update().where(vendors.c.id == world.vendor.vendor_id).values(webhook="gone"))
    sender = sender_for(world, payments, settings)
    world.vend(5000)
    counts = drain({"receipt": sender})
    assert partner.posts == []
    with world.engine.connect() as conn:
        row = conn.execute(select(outbox.c.status, outbox.c.last_error).where(outbox.c.channel == "receipt")).one()
    assert row.status == "dead" and "gone" in row.last_error and counts


def test_setting_a_webhook_is_for_admins_names_a_configured_one_and_is_audited(world: World) -> None:
    known = {"bank": "http://127.0.0.1:9/x"}
    vid = world.vendor.vendor_id
    at = world.now[0]
    for caller in (world.operator, world.vendor):
        with pytest.raises(VendError) as forbidden:
            partners.set_webhook(world.engine, caller, vid, "bank", known, at)
        assert forbidden.value.code == "forbidden"
    with pytest.raises(VendError) as unknown:
        partners.set_webhook(world.engine, world.admin, vid, "elsewhere", known, at)
    assert unknown.value.code == "invalid_request"
    with pytest.raises(VendError) as missing:
        partners.set_webhook(world.engine, world.admin, 999_999, "bank", known, at)
    assert missing.value.code == "not_found"
    assert partners.set_webhook(world.engine, world.admin, vid, "bank", known, at)["webhook"] == "bank"
    assert partners.set_webhook(world.engine, world.admin, vid, None, known, at)["webhook"] is None
    with world.engine.connect() as conn:
        entries = conn.execute(select(audit.c.detail).where(audit.c.action == "set_webhook")).scalars().all()
    assert [e["webhook"] for e in entries] == ["bank", None]
