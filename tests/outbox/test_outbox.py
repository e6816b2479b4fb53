"""The outbox as a queue (mita.outbox, ``mita worker``) on SQLite and PostgreSQL, with real worker processes.

What must hold: a vend's receipt goes out exactly once; a failed send is retried with backoff and parked dead
after the last attempt (at once for a refusal a retry cannot change); webhooks are signed and carry the
dedupe key; two workers never send one row twice; a worker killed with SIGKILL in the middle of a batch loses
nothing, and a row it had delivered but not yet marked is delivered again with the same dedupe key (the
receiver drops the repeat), never marked sent twice; a campaign's generation runs in the worker.

Marks are counted by a trigger in the test database (every update that leaves a row ``sent`` writes a line),
deliveries by a small HTTP server in this process: both independent of the code under test.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, func, select, text, update
from test_campaign import Fleet, expected_set, fleet  # noqa: F401 - the fleet fixture
from test_vend_service import engine, pg_template, sqlite_template, world  # noqa: F401 - the per-database fixtures

from cli_run import run
from mita import campaign, outbox
from mita.outbox import Message, Policy, SendError, WebhookSender, Worker
from mita.vend.schema import campaigns
from mita.vend.schema import outbox as outbox_table
from vend_fixtures import DRN, START, World, build_world, refused

SECRET = "a-test-webhook-secret-0123456789"
MITA = str(Path(sys.executable).with_name("mita"))
T0 = dt.datetime(2026, 6, 1, 12, 0)
pg_only = pytest.mark.parametrize("engine", ["postgresql"], indirect=True)


# ---------------------------------------------------------------------------------------------- helpers


class Recorder:
    """A sender that keeps what it was given, and fails as scripted (a list of SendErrors, or None: sent)."""

    def __init__(self, script: list[SendError | None] | None = None) -> None:
        self.sent: list[Message] = []
        self.script = list(script or [])

    def send(self, message: Message) -> None:
        self.sent.append(message)
        failure = self.script.pop(0) if self.script else None
        if failure is not None:
            raise failure


class Hook:
    """A webhook receiver on 127.0.0.1: records every POST (headers, body), answers the scripted statuses."""

    def __init__(self, statuses: list[int] | None = None, delay: float = 0.0) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses = list(statuses or [])
        self.lock = threading.Lock()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with hook.lock:  # delivered: what follows is the answer, which the sender may never see
                    hook.requests.append((dict(self.headers.items()), body))
                    status = hook.statuses.pop(0) if hook.statuses else 200
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/mita/events"

    def keys(self) -> list[str]:
        with self.lock:
            return [h["Idempotency-Key"] for h, _ in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks() -> Iterator[Callable[..., Hook]]:
    made: list[Hook] = []

    def make(statuses: list[int] | None = None, delay: float = 0.0) -> Hook:
        made.append(Hook(statuses, delay))
        return made[-1]

    yield make
    for h in made:
        h.close()


def url_of(db: Engine) -> str:
    return db.url.render_as_string(hide_password=False)


def count_marks(db: Engine) -> None:
    """A trigger that writes a line to ``marks`` for every update leaving an outbox row ``sent``."""
    with db.begin() as conn:
        if db.dialect.name == "postgresql":
            conn.execute(text("CREATE TABLE marks (id bigint NOT NULL)"))
            conn.execute(
                text(
                    "CREATE FUNCTION note_mark() RETURNS trigger LANGUAGE plpgsql AS "
                    "$$ BEGIN INSERT INTO marks (id) VALUES (NEW.id); RETURN NEW; END $$"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER outbox_marked AFTER UPDATE ON outbox FOR EACH ROW "
                    "WHEN (NEW.status = 'sent') EXECUTE FUNCTION note_mark()"
                )
            )
        else:
            conn.execute(text("CREATE TABLE marks (id INTEGER NOT NULL)"))
            conn.execute(
                text(
                    "CREATE TRIGGER outbox_marked AFTER UPDATE ON outbox WHEN NEW.status = 'sent' "
                    "BEGIN INSERT INTO marks (id) VALUES (NEW.id); END"
                )
            )


def marks(db: Engine) -> list[int]:
    with db.connect() as conn:
        return sorted(conn.execute(text("SELECT id FROM marks")).scalars())


def fill(db: Engine, n: int, channel: str = "webhook", at: dt.datetime | None = None) -> list[str]:
    """``n`` due rows on ``channel``; their dedupe keys."""
    at = at or dt.datetime.now() - dt.timedelta(seconds=5)
    keys = [f"test:{channel}:{i}" for i in range(n)]
    with db.begin() as conn:
        outbox.enqueue_many(conn, [outbox.Outgoing(channel, "hook", k, {"n": i}, at) for i, k in enumerate(keys)])
    return keys


def rows(db: Engine) -> list[Any]:
    with db.connect() as conn:
        return list(conn.execute(select(outbox_table).order_by(outbox_table.c.id)))


def worker_env(hook: Hook | None = None, **extra: str) -> dict[str, str]:
    env = {**os.environ, "MITA_OUTBOX_SENDERS": "webhook=webhook", "MITA_WEBHOOK_SECRET": SECRET, **extra}
    if hook is not None:
        env["MITA_WEBHOOK_URL"] = hook.url
    return env


def start_worker(db: Engine, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    command = [MITA, "worker", "--database-url", url_of(db), "--poll-interval", "0.1", *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(proc: subprocess.Popen[str], timeout: float = 60) -> dict[str, int]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    totals: dict[str, int] = json.loads(out.strip().splitlines()[-1])
    return totals


def wait_for(condition: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def signed(body: bytes) -> str:
    return "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------------------------- the vend's receipt


def test_a_vends_receipt_is_queued_with_the_vend_and_sent_exactly_once(
    world: World,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    response = world.vend(10_000)
    vend_id = response["id"]
    (row,) = rows(world.engine)
    assert (row.vend_id, row.channel, row.recipient, row.dedupe_key) == (vend_id, "receipt", DRN, f"receipt:{vend_id}")
    assert (row.status, row.attempts, row.next_attempt_at, row.sent_at) == ("pending", 0, START, None)
    assert row.payload == {"meter": DRN, "tokens": [t["digits"] for t in response["tokens"]]}

    recorder = Recorder()
    caplog.set_level(logging.INFO, logger="mita.outbox")
    first = Worker(world.engine, {"receipt": recorder}).run(once=True)
    again = Worker(world.engine, {"receipt": recorder}).run(once=True)
    assert (first.sent, again.claimed) == (1, 0)
    (sent,) = recorder.sent
    assert (sent.dedupe_key, sent.recipient, sent.attempts, sent.payload) == (row.dedupe_key, DRN, 1, row.payload)
    (after,) = rows(world.engine)
    assert (after.status, after.attempts, after.last_error) == ("sent", 1, None) and after.sent_at is not None

    # the same message cannot be queued again
    with world.engine.begin() as conn:
        assert not outbox.enqueue(conn, "receipt", DRN, f"receipt:{vend_id}", {"again": True}, START)
    assert len(rows(world.engine)) == 1

    # the log sender names channel, recipient and dedupe key, and never the tokens
    with world.engine.begin() as conn:
        conn.execute(update(outbox_table).values(status="pending", next_attempt_at=START))
    Worker(world.engine, {"receipt": outbox.LogSender()}).run(once=True)
    assert f"receipt to {DRN} [receipt:{vend_id}]" in caplog.text
    assert not any(t["digits"] in caplog.text for t in response["tokens"])


# ---------------------------------------------------------------------------------------------- retries


def test_a_failing_send_is_retried_with_backoff_then_parked_dead(engine: Engine) -> None:  # noqa: F811
    clock = [T0]
    (key,) = fill(engine, 1, "sms", at=T0)
    failing = Recorder([SendError("HTTP 503"), SendError("HTTP 500"), SendError("TimeoutError")])
    policy = Policy(max_attempts=3, backoff_base=10, backoff_max=15, lease=60)
    w = Worker(engine, {"sms": failing}, policy=policy, clock=lambda: clock[0], rnd=lambda: 1.0)

    assert w.run_batch().retried == 1
    (row,) = rows(engine)
    assert (row.status, row.attempts, row.last_error) == ("pending", 1, "HTTP 503")
    assert row.next_attempt_at == T0 + dt.timedelta(seconds=10)  # base * 2**0
    clock[0] += dt.timedelta(seconds=9)
    assert w.run_batch().claimed == 0  # not due before its backoff ends
    clock[0] += dt.timedelta(seconds=1)
    assert w.run_batch().retried == 1
    (row,) = rows(engine)
    assert (row.attempts, row.last_error, row.next_attempt_at) == (2, "HTTP 500", clock[0] + dt.timedelta(seconds=15))
    clock[0] += dt.timedelta(seconds=15)  # base * 2**1 = 20, capped at backoff_max
    assert w.run_batch().dead == 1
    (row,) = rows(engine)
    assert (row.status, row.attempts, row.last_error, row.sent_at) == ("dead", 3, "TimeoutError", None)
    clock[0] += dt.timedelta(days=1)
    assert w.run_batch().claimed == 0  # dead stays dead
    assert [m.dedupe_key for m in failing.sent] == [key] * 3 and [m.attempts for m in failing.sent] == [1, 2, 3]


def test_backoff_grows_exponentially_with_jitter_and_honours_retry_after(engine: Engine) -> None:  # noqa: F811
    p = Policy(backoff_base=30, backoff_max=3600)
    for attempts, step in ((1, 30), (2, 60), (3, 120), (8, 3600), (500, 3600)):
        assert outbox.backoff(attempts, p, lambda: 0.0) == step / 2
        assert outbox.backoff(attempts, p, lambda: 1.0) == step
    spread = {round(outbox.backoff(3, p), 3) for _ in range(50)}
    assert len(spread) > 40 and all(60 <= s <= 120 for s in spread)

    fill(engine, 1, "sms", at=T0)
    w = Worker(engine, {"sms": Recorder([SendError("HTTP 429", retry_after=600)])}, clock=lambda: T0)
    w.run_batch()
    (row,) = rows(engine)
    assert row.next_attempt_at == T0 + dt.timedelta(seconds=600)


def test_a_row_whose_worker_died_on_its_last_attempt_is_parked_dead(engine: Engine) -> None:  # noqa: F811
    clock = [T0]
    fill(engine, 1, "sms", at=T0)
    policy = Policy(max_attempts=2, lease=30)
    outbox.queue.claim(engine, ["sms"], 10, T0, T0 + dt.timedelta(seconds=30))  # a worker claims, and dies
    clock[0] += dt.timedelta(seconds=31)
    outbox.queue.claim(engine, ["sms"], 10, clock[0], clock[0] + dt.timedelta(seconds=30))  # and the next one
    clock[0] += dt.timedelta(seconds=31)
    never = Recorder()
    assert Worker(engine, {"sms": never}, policy=policy, clock=lambda: clock[0]).run_batch().dead == 1
    (row,) = rows(engine)
    assert (row.status, row.attempts, row.last_error) == ("dead", 3, "lease expired on the last attempt")
    assert never.sent == []


# ---------------------------------------------------------------------------------------------- webhooks


def test_a_webhook_is_signed_carries_the_dedupe_key_and_is_retried(
    engine: Engine,  # noqa: F811
    hooks: Callable[..., Hook],
) -> None:
    hook = hooks([503, 500, 200])
    clock = [T0]
    with engine.begin() as conn:
        outbox.enqueue(conn, "webhook", "shop", "webhook:vend:42", {"meter": DRN, "amount": 5000}, T0)
    sender = WebhookSender(hook.url, SECRET.encode(), timeout=5)
    w = Worker(engine, {"webhook": sender}, clock=lambda: clock[0], policy=Policy(backoff_base=1, backoff_max=1))
    for error in ("HTTP 503", "HTTP 500"):
        assert w.run_batch().retried == 1
        (row,) = rows(engine)
        assert (row.status, row.last_error) == ("pending", error)
        clock[0] += dt.timedelta(seconds=1)
    assert w.run_batch().sent == 1
    (row,) = rows(engine)
    assert (row.status, row.attempts) == ("sent", 3)
    assert len(hook.requests) == 3
    for headers, body in hook.requests:
        assert json.loads(body) == {"meter": DRN, "amount": 5000}
        assert headers["Idempotency-Key"] == "webhook:vend:42"
        assert headers["X-Mita-Signature"] == signed(body)  # the receiver's own check, with the shared secret
        assert headers["Content-Type"] == "application/json" and headers["X-Mita-Channel"] == "webhook"


@pytest.mark.parametrize(
    "status,outcome", [(400, "dead"), (404, "dead"), (422, "dead"), (408, "retry"), (429, "retry")]
)
def test_a_webhook_refusal_is_dead_at_once_but_408_and_429_are_retried(
    engine: Engine,  # noqa: F811
    hooks: Callable[..., Hook],
    status: int,
    outcome: str,
) -> None:
    hook = hooks([status])
    fill(engine, 1, at=T0)
    w = Worker(engine, {"webhook": WebhookSender(hook.url, SECRET.encode())}, clock=lambda: T0)
    counts = w.run_batch()
    (row,) = rows(engine)
    assert row.last_error == f"HTTP {status}" and row.attempts == 1
    if outcome == "dead":
        assert counts.dead == 1 and row.status == "dead"
    else:
        assert counts.retried == 1 and row.status == "pending" and row.next_attempt_at > T0


def test_an_unreachable_webhook_is_retried_and_its_error_names_no_url(engine: Engine) -> None:  # noqa: F811
    fill(engine, 1, at=T0)
    sender = WebhookSender("http://127.0.0.1:9/never", SECRET.encode(), timeout=2)  # the discard port: refused
    assert Worker(engine, {"webhook": sender}, clock=lambda: T0).run_batch().retried == 1
    (row,) = rows(engine)
    assert row.last_error == "ConnectionRefusedError" and row.status == "pending"


def test_webhook_configuration_is_checked(tmp_path: Path) -> None:
    env = {"MITA_WEBHOOK_URL": "https://example.org/hook"}
    refused("outbox_misconfigured", WebhookSender.from_env, env)  # no secret
    refused("outbox_misconfigured", WebhookSender.from_env, {**env, "MITA_WEBHOOK_SECRET": "short"})
    refused("outbox_misconfigured", WebhookSender.from_env, {"MITA_WEBHOOK_SECRET": SECRET})  # no URL
    bad = {"MITA_WEBHOOK_SECRET": SECRET, "MITA_WEBHOOK_URL": "https://user:pw@example.org/"}
    refused("outbox_misconfigured", WebhookSender.from_env, bad)
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")
    sender = WebhookSender.from_env({**env, "MITA_WEBHOOK_SECRET_FILE": str(secret_file)})
    assert sender.signature(b"{}") == signed(b"{}")
    both = {**env, "MITA_WEBHOOK_SECRET_FILE": str(secret_file), "MITA_WEBHOOK_SECRET": SECRET}
    refused("outbox_misconfigured", WebhookSender.from_env, both)
    named = WebhookSender.from_env({**env, "MITA_WEBHOOK_SECRET": SECRET, "MITA_WEBHOOK_URLS": "a=http://a/x"})
    assert named.urls == {"a": "http://a/x"} and named.url == "https://example.org/hook"
    assert outbox.parse_routes("receipt=webhook, sms=off x=null") == {
        "receipt": "webhook", "campaign.generate": "campaign", "x": "null",
    }  # fmt: skip
    refused("outbox_misconfigured", outbox.parse_routes, "receipt=carrier-pigeon")


# ---------------------------------------------------------------------------------------------- processes


@pg_only
def test_two_workers_on_postgresql_never_send_the_same_row_twice(
    engine: Engine,  # noqa: F811
    hooks: Callable[..., Hook],
) -> None:
    keys = fill(engine, 2000)
    count_marks(engine)
    hook = hooks()
    env = worker_env(hook)
    procs = [start_worker(engine, env, "--once", "--batch-size", "25", "--channels", "webhook") for _ in range(2)]
    totals = [finished(p) for p in procs]
    assert sorted(hook.keys()) == sorted(keys)  # each row delivered once: no key twice
    assert all(t["claimed"] > 0 for t in totals), totals  # both took part
    assert sum(t["claimed"] for t in totals) == sum(t["sent"] for t in totals) == len(keys)
    assert marks(engine) == sorted(r.id for r in rows(engine))
    assert {(r.status, r.attempts) for r in rows(engine)} == {("sent", 1)}


def test_a_worker_killed_mid_batch_loses_nothing(engine: Engine, hooks: Callable[..., Hook]) -> None:  # noqa: F811
    keys = fill(engine, 60)
    count_marks(engine)
    hook = hooks(delay=0.03)  # a slow receiver: a batch of 20 takes 0.6 s
    env = worker_env(hook)
    args = ("--batch-size", "20", "--lease", "1.5", "--channels", "webhook")
    first = start_worker(engine, env, *args)
    wait_for(lambda: len(hook.requests) >= 27, what="the first worker to be in its second batch")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    with engine.connect() as conn:  # claimed and not settled: the batch it was killed in (nothing changes them now)
        in_flight = set(
            conn.execute(
                select(outbox_table.c.dedupe_key).where(
                    outbox_table.c.status == "pending", outbox_table.c.attempts == 1
                )
            ).scalars()
        )
    assert in_flight

    second = start_worker(engine, env, *args)
    wait_for(lambda: all(r.status == "sent" for r in rows(engine)), what="every row to be sent")
    second.send_signal(signal.SIGTERM)  # a graceful stop: after its current batch, with its totals
    totals = finished(second)
    assert totals["lost"] == 0

    received = hook.keys()
    assert set(received) == set(keys)  # none lost
    repeats = {k for k in received if received.count(k) > 1}
    assert repeats <= in_flight  # only what the killed worker had claimed and not settled, with the same key
    assert all(received.count(k) == 2 for k in repeats)
    for headers, body in hook.requests:  # a repeat is the same message: same key, same body, same signature
        assert headers["X-Mita-Signature"] == signed(body)
        assert json.loads(body) == {"n": keys.index(headers["Idempotency-Key"])}
    assert marks(engine) == sorted(r.id for r in rows(engine))  # each row marked sent exactly once
    assert max(r.attempts for r in rows(engine)) == 2


# ---------------------------------------------------------------------------------------------- the CLI


def test_worker_status_and_refusals(engine: Engine) -> None:  # noqa: F811
    fill(engine, 3, "sms")
    fill(engine, 2, "receipt", at=dt.datetime.now() + dt.timedelta(hours=1))
    with engine.begin() as conn:
        first = conn.execute(select(func.min(outbox_table.c.id))).scalar_one()
        conn.execute(update(outbox_table).where(outbox_table.c.id == first).values(status="dead"))
    result = run(["worker", "--status", "--database-url", url_of(engine)])
    assert result.exit_code == 0, result.output
    status = json.loads(result.stdout)
    assert {k: status[k] for k in ("pending", "due", "waiting", "sent", "dead")} == {
        "pending": 4, "due": 2, "waiting": 2, "sent": 0, "dead": 1,
    }  # fmt: skip
    assert status["channels"]["receipt"]["waiting"] == 2
    assert status["oldest_due_s"] >= 4  # compose's clock counts whole seconds

    result = run(["worker", "--once", "--channels", "fax", "--database-url", url_of(engine)])
    assert result.exit_code == 1 and result.stderr.startswith("error[outbox_misconfigured]: ")
    no_secret = {"MITA_OUTBOX_SENDERS": "webhook=webhook", "MITA_WEBHOOK_URL": "http://127.0.0.1:9/"}
    result = run(
        ["worker", "--once", "--database-url", url_of(engine)],
        env={**no_secret, "MITA_WEBHOOK_SECRET": None, "MITA_WEBHOOK_SECRET_FILE": None},
    )
    assert result.exit_code == 1 and result.stderr.startswith("error[outbox_misconfigured]: ")


# ---------------------------------------------------------------------------------------------- campaign generation


def test_a_campaign_generates_in_the_worker(fleet: Fleet) -> None:  # noqa: F811
    f = fleet
    c = f.plan(batch_size=4, delivery="sms")
    at = f.at(hours=1)
    with f.w.engine.begin() as conn:
        assert outbox.enqueue_campaign_generation(conn, c["id"], at, f.w.admin.name)
        assert not outbox.enqueue_campaign_generation(conn, c["id"], at, f.w.admin.name)  # one at a time
    env = {**os.environ, "MITA_OUTBOX_SENDERS": ""}  # the defaults: campaign.generate=campaign
    totals = finished(start_worker(f.w.engine, env, "--once"), timeout=120)
    assert totals["sent"] == 1
    out = campaign.get_campaign(f.w.engine, c["id"])
    assert out["status"] == "generated" and out["meters"]["issued"] == c["planned"] == 11
    for drn, row in f.stored(c["id"]).items():
        assert row["tokens"] == expected_set(drn, f.base[drn]) and row["issued_at"] == at
    (job,) = [r for r in rows(f.w.engine) if r.channel == outbox.CAMPAIGN_GENERATE]
    assert (job.recipient, job.status, job.attempts) == (str(c["id"]), "sent", 1)
    assert job.payload["caller"] == f.w.admin.name

    # asked again once it ran: a new job, which finds nothing left to do
    before = f.stored(c["id"])
    with f.w.engine.begin() as conn:
        assert outbox.enqueue_campaign_generation(conn, c["id"], f.at(hours=2), f.w.admin.name)
    assert finished(start_worker(f.w.engine, env, "--once"), timeout=120)["sent"] == 1
    assert f.stored(c["id"]) == before
    assert campaign.get_campaign(f.w.engine, c["id"])["status"] == "generated"

    # the campaign's SMS go through the same queue, once per meter, to its phone
    assert campaign.queue_sms(f.w.engine, f.w.operator, c["id"], at=f.at(hours=3)) == len(f.phones)
    assert campaign.queue_sms(f.w.engine, f.w.operator, c["id"], at=f.at(hours=4)) == 0
    sms = [r for r in rows(f.w.engine) if r.channel == "sms"]
    stored = f.stored(c["id"])
    assert sorted((r.recipient, r.dedupe_key) for r in sms) == sorted(
        (r.payload["phone"], f"sms:campaign:{c['id']}:kc:{stored[r.payload['meter']]['id']}") for r in sms
    )


class StopAfter(threading.Event):
    """A stop flag that goes up by itself after ``n`` looks (a SIGTERM in the middle of a campaign)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.looks = n

    def is_set(self) -> bool:
        self.looks -= 1
        return self.looks < 0 or super().is_set()


def test_a_stopped_campaign_job_gives_its_row_back_and_resumes(fleet: Fleet) -> None:  # noqa: F811
    f = fleet
    c = f.plan(batch_size=4, delivery="csv")
    with f.w.engine.begin() as conn:
        outbox.enqueue_campaign_generation(conn, c["id"], f.at(hours=1), f.w.admin.name)
    stop = StopAfter(1)  # looked at before the first batch (go on) and after it (stop)
    generator = outbox.CampaignGenerator(f.w.engine, campaign.generate, stopping=stop)
    counts = Worker(f.w.engine, {outbox.CAMPAIGN_GENERATE: generator}, stopping=threading.Event()).run_batch()
    assert counts.released == 1
    assert campaign.get_campaign(f.w.engine, c["id"])["meters"]["issued"] == 4  # one batch, committed
    (job,) = rows(f.w.engine)
    assert (job.status, job.attempts) == ("pending", 0)  # due again at once, the try not counted

    generator = outbox.CampaignGenerator(f.w.engine, campaign.generate)
    assert Worker(f.w.engine, {outbox.CAMPAIGN_GENERATE: generator}).run(once=True).sent == 1
    assert campaign.get_campaign(f.w.engine, c["id"])["status"] == "generated"


def test_a_refused_campaign_job_is_dead_at_once(fleet: Fleet) -> None:  # noqa: F811
    f = fleet
    c = f.plan()
    with f.w.engine.begin() as conn:
        conn.execute(update(campaigns).where(campaigns.c.id == c["id"]).values(status="closed"))
        outbox.enqueue_campaign_generation(conn, c["id"], f.at(hours=1), f.w.admin.name)
    generator = outbox.CampaignGenerator(f.w.engine, campaign.generate)
    assert Worker(f.w.engine, {outbox.CAMPAIGN_GENERATE: generator}).run_batch().dead == 1
    (job,) = rows(f.w.engine)
    assert (job.status, job.last_error) == ("dead", "conflict")
    with f.w.engine.begin() as conn:
        refused("not_found", outbox.enqueue_campaign_generation, conn, 999, f.at(hours=1), f.w.admin.name)


def test_the_vend_world_is_untouched_by_a_worker_with_no_channels(engine: Engine) -> None:  # noqa: F811
    w = build_world(engine)
    w.vend(5000)
    assert Worker(engine, {}).run(once=True).claimed == 0
    assert rows(engine)[0].status == "pending"
