"""What ``make run`` shows before it serves: a customer pays by (fake) M-Pesa, the token comes back by SMS through
a real Kannel (its fake SMSC is the phone), and the customer types it into the virtual meter.

Everything runs on loopback beside the demo's API: the fake Daraja (``mita.channels.mpesa.fake``) calls the API's
M-Pesa callback, the payment is vended by an outbox worker in this process, the SMS goes through Kannel (Debian's
``kannel`` and ``kannel-extras``; without them the SMS is taken from the outbox and the story says so), and the
token is entered into the meter file in ``demo-meters/``. Then Kannel and the fake Daraja keep running with the
server, so a person can pay again (the commands are printed).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .command import say

PHONE = "254712345678"
TOKEN = re.compile(r"\d{4}-\d{4}-\d{4}-\d{4}-\d{4}")


@dataclass
class Story:
    url: str  # the demo's database
    base: str  # the demo's API
    meter_file: Path
    drn: str
    stops: list[Callable[[], None]] = field(default_factory=list)
    gateway: Any = None
    daraja: Any = None
    done: threading.Event = field(default_factory=threading.Event)
    ok: bool = False

    def stop(self) -> None:
        for stop in reversed(self.stops):
            with contextlib.suppress(Exception):
                stop()


def prepare(url: str, host: str, port: int, meter_file: Path, drn: str) -> Story:
    """Start the fake Daraja and Kannel, and point the API (this process's environment) at them."""
    from mita.channels.mpesa import fake
    from mita.channels.sms import box

    base = f"http://{host}:{port}"
    story = Story(url, base, meter_file, drn)
    secret = secrets.token_urlsafe(24)
    story.daraja = fake.serve()
    story.stops.append(story.daraja.stop)
    os.environ.update({
        "MITA_HOOK_SECRET": secret, "MITA_PUBLIC_URL": base, "MITA_MPESA_URL": story.daraja.url,
        "MITA_MPESA_CONSUMER_KEY": "demo", "MITA_MPESA_CONSUMER_SECRET": "demo", "MITA_MPESA_PASSKEY": fake.PASSKEY,
        "MITA_MPESA_SHORTCODE": fake.SHORTCODE,
    })  # fmt: skip
    if box.installed():
        folder = Path(tempfile.mkdtemp(prefix="mita-demo-kannel-"))
        story.stops.append(functools.partial(shutil.rmtree, folder, ignore_errors=True))  # after Kannel stops
        story.gateway = box.Box(folder, f"{base}/hooks/kannel/mo/{secret}").start()
        story.stops.append(story.gateway.stop)
        os.environ.update(
            {"MITA_KANNEL_URL": story.gateway.sendsms_url, "MITA_KANNEL_PASSWORD": story.gateway.password}
        )
    return story


def tell(story: Story, on_end: Callable[[], None] | None = None) -> threading.Thread:
    """The story, in a thread that waits for the API to answer first."""
    thread = threading.Thread(target=_run, args=(story, on_end), name="demo-story", daemon=True)
    thread.start()
    return thread


def _run(story: Story, on_end: Callable[[], None] | None) -> None:
    try:
        story.ok = _story(story)
    except Exception as exc:
        say(f"\n[story] stopped: {type(exc).__name__}: {exc}")
    finally:
        story.done.set()
        if on_end is not None:
            on_end()


def _story(story: Story) -> bool:
    import httpx

    from mita import compose
    from mita.channels import senders as channel_senders
    from mita.channels.hooks import HookSecret
    from mita.channels.mpesa.client import Credentials, Daraja
    from mita.meter import storage
    from mita.outbox import DEFAULT_ROUTES, SenderContext, Worker, build_senders, parse_routes, register_kind

    for _ in range(150):
        try:
            urllib.request.urlopen(f"{story.base}/readyz", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    runtime = compose.build(database_url=story.url)
    story.stops.append(runtime.close)
    settings = runtime.settings
    defaults = {c: k for c, k in DEFAULT_ROUTES.items() if k != "campaign"}  # no campaigns in the story
    routes = parse_routes(None, {**defaults, **channel_senders.install(runtime.payments, settings, register_kind)})
    stopping = threading.Event()
    senders = build_senders(routes, SenderContext(runtime.engine, stopping, {}))
    worker = Worker(runtime.engine, senders, batch_size=20, stopping=stopping, name="demo worker")
    threading.Thread(target=worker.run, kwargs={"poll_interval": 0.3}, name="demo-worker", daemon=True).start()
    story.stops.append(stopping.set)
    hooks = HookSecret.from_settings(settings)
    daraja = Daraja(settings.mpesa_url, Credentials.from_settings(settings))
    daraja.register_urls(hooks.path(story.base, "ke1/c2b/confirm"), hooks.path(story.base, "ke1/c2b/validate"))
    daraja.close()
    say("\n[story] A customer pays 100.00 by M-Pesa to paybill "
        f"{settings.mpesa_shortcode}, account {story.drn} (the fake Daraja on {story.daraja.url})")  # fmt: skip
    with httpx.Client(timeout=30) as http:
        paid = http.post(f"{story.daraja.url}/fake/c2b", json={"msisdn": PHONE, "amount": 100, "bill_ref": story.drn})
    say(f"[story] M-Pesa confirmed {paid.json()['trans_id']}; Mita stored the payment, then answered M-Pesa")
    text = _wait_sms(story, runtime)
    if text is None:
        say("[story] no SMS within 30 s: see `mita channels payments`")
        return False
    via = "Kannel's fake SMSC (the customer's phone)" if story.gateway is not None else "the outbox (no Kannel here)"
    say(f"[story] SMS to {PHONE}, from {via}:\n          {text}")
    meter = storage.load(story.meter_file)
    now = dt.datetime.now().replace(microsecond=0)
    for token in TOKEN.findall(text):
        result = meter.enter(token.replace("-", ""), now)
        say(f"[story] typed {token} on meter {story.drn}: {result.result.value}")
    storage.save(meter, story.meter_file)
    credit = meter.registers().get("electricity", 0) / 10  # base units of 0.1 kWh
    say(f"[story] the meter now holds {credit:.1f} kWh of credit ({story.meter_file})\n")
    say(f"Pay again: curl -s {story.daraja.url}/fake/c2b -H 'Content-Type: application/json' "
        f"-d '{{\"msisdn\":\"{PHONE}\",\"amount\":50,\"bill_ref\":\"{story.drn}\"}}'")  # fmt: skip
    return True


def _wait_sms(story: Story, runtime: Any) -> str | None:
    from sqlalchemy import select

    from mita.vend.schema import outbox

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if story.gateway is not None:
            got = story.gateway.messages_to(PHONE)
            if got:
                return str(got[0])
        else:
            with runtime.engine.connect() as conn:
                payload = conn.execute(
                    select(outbox.c.payload).where(outbox.c.channel == "sms", outbox.c.recipient == PHONE)
                ).scalar()
            if payload:
                return str(payload["text"])
        time.sleep(0.2)
    return None
