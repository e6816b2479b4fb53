"""Commands to MQTT-native meters, end to end on a real broker (a Mosquitto of the test's own) and both databases:
a vend -> its command and outbox row -> the worker's sender publishes it (QoS 1, correlation data, response topic,
message expiry) -> the simulated meter (mita.sim.mqttmeter) enters the tokens through its model -> its ack ->
the ack listener applies it (acknowledged, the same result as over DLMS) -> the vend's delivery says so. And: an
offline meter gets its command from its persistent session when it is back before the deadline, and the command
expires after; a duplicate delivery acts once; disconnect and reconnect; an ack on another meter's topic is
refused; ``mita worker`` runs the ack listener by itself when a meter is registered on MQTT."""

from __future__ import annotations

import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mita.headend import commands, mqttlink, registry
from mita.headend.mqttlink import AckListener, Publisher, outcome
from mita.headend.runner import CommandSender
from mita.meter import Meter, storage
from mita.outbox import Policy, Worker
from mita.sim.meterfile import MeterFile
from mita.sim.mqttfleet import ManualClock, MqttFleetThread
from mita.sim.mqttmeter import MeterSim, SideFile
from mita.telemetry.payload import Ack
from mita.vend import database
from mita.vend.lifecycles import CommandKind, CommandStatus
from mita.vend.schema import audit, outbox
from vend_fixtures import DRN, SECOND_KEY, World, build_world, decoder_key, rotate_vending_key

FAST = Policy(max_attempts=1000, backoff_base=0.001, backoff_max=0.001)
WAIT_S = 10.0


class Still:
    """A customer who draws nothing: the credit a test reads is what the tokens brought."""

    interval = 900

    def energy(self, end: int) -> int:
        return 0

    def sensor_events(self, after: int, until: int) -> list[tuple[int, str]]:
        return []

    def dead(self, t: int) -> bool:
        return False

    def clock_error(self, t: int) -> int:
        return 0


@dataclass
class Rig:
    """The world, its meter on the broker (MQTT-native), the worker's sender and the ack listener."""

    world: World
    broker: Any
    path: Path
    fleet: MqttFleetThread
    sender: CommandSender
    publisher: Publisher
    listener: AckListener
    skew: list[float] = field(default_factory=lambda: [0.0])  # the meter's communication clock against the world's

    def run_worker(self) -> None:
        """One ``mita worker`` pass over the head-end channel: everything due now."""
        clock = lambda: self.world.now[0]  # noqa: E731
        Worker(self.world.engine, {"headend": self.sender}, policy=FAST, clock=clock).run(once=True)

    def command(self, command_id: int) -> dict[str, Any]:
        return commands.get(self.world.engine, command_id)

    def wait(self, command_id: int, status: str = "acknowledged") -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            got = self.command(command_id)
            if got["status"] == status:
                return got
            time.sleep(0.02)
        raise AssertionError(f"command {command_id} not {status} in {WAIT_S} s: {self.command(command_id)}")

    def meter(self) -> Meter:
        return storage.load(self.path)

    def until(self, what: Callable[[], bool], why: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while not what():
            if time.monotonic() > deadline:
                raise AssertionError(f"not {why} in {WAIT_S} s: {self.listener.counts}")
            time.sleep(0.02)


@pytest.fixture
def world(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
    database.upgrade(url)
    engine = database.make_engine(url, pool_size=4)
    try:
        yield build_world(engine)
    finally:
        engine.dispose()


@pytest.fixture
def rig(world: World, mqtt_broker: Any, tmp_path: Path) -> Iterator[Rig]:
    path = tmp_path / "meter.json"
    storage.save(world.meter, path)
    file = MeterFile(path)
    sim = MeterSim(file.load(), Still(), file=file, side=SideFile.beside(path, DRN))
    skew = [0.0]
    clock = ManualClock(mqttlink.epoch(world.now[0]))
    fleet = MqttFleetThread([sim], mqtt_broker.url, clock=clock, wall=lambda: world.now[0].timestamp() + skew[0])
    fleet.start()
    tag = uuid.uuid4().hex[:8]
    publisher = Publisher(mqtt_broker.url, client_id=f"test-commands-{tag}")
    confirm = lambda drn: world.svc.confirm_key_change(world.admin, drn, via="meter")  # noqa: E731
    sender = CommandSender(world.engine, clock=lambda: world.now[0], confirm_key_change=confirm, publisher=publisher)
    listener = AckListener(mqtt_broker.url, settle=sender.settle, sweep=sender.sweep, group=f"test-{tag}",
                           client_id=f"test-acks-{tag}", sweep_every=0.1)  # fmt: skip
    stopping = threading.Event()
    thread = threading.Thread(target=listener.run, args=(stopping,), daemon=True)
    thread.start()
    listener.session.wait_connected(WAIT_S)
    registry.register(world.engine, world.admin, DRN, host=mqtt_broker.host, port=mqtt_broker.port, secret=None,
                      at=world.now[0], transport="mqtt")  # fmt: skip
    try:
        yield Rig(world, mqtt_broker, path, fleet, sender, publisher, listener, skew)
    finally:
        stopping.set()
        thread.join(10)
        publisher.close()
        fleet.stop()


def ask(world: World, kind: str, params: dict[str, Any] | None = None, expiry: dt.timedelta | None = None) -> int:
    """An operator's command, queued as the API and the CLI queue one; its id."""
    made = commands.queue(
        world.engine, world.svc.engineering, world.operator, DRN, kind, params or {}, at=world.now[0],
        expiry=expiry or dt.timedelta(hours=1),
    )  # fmt: skip
    return int(made["id"])


# ---------------------------------------------------------------------- end to end


def test_a_vend_for_an_mqtt_meter_is_published_entered_acknowledged_and_its_delivery_shows_it(rig: Rig) -> None:
    world = rig.world
    assert registry.describe(world.engine, DRN)["transport"] == "mqtt"  # type: ignore[index]
    vend = world.vend(10_000)
    queued = commands.for_vend(world.engine, vend["id"])
    assert queued is not None and queued["status"] == "queued"
    rig.run_worker()
    assert rig.command(queued["id"])["status"] in ("sent", "acknowledged")  # published: the outbox row is done
    with world.engine.connect() as conn:
        row = select(outbox.c.status).where(outbox.c.vend_id == vend["id"], outbox.c.channel == "headend")
        assert conn.execute(row).scalar() == "sent"
    done = rig.wait(queued["id"])
    digits = [t["digits"] for t in vend["tokens"]]
    units = sum(t["units"] for t in vend["tokens"])
    assert done["result"] == {  # what the DLMS path stores: each token's status and result, the credit in Wh
        "tokens": [{"token": d, "status": 3, "result": "accept"} for d in digits],
        "credit": units * 100,
    }
    assert done["error"] is None and done["finished_at"] is not None and done["attempts"] == 1
    assert world.svc.get_vend(world.vendor, vend["id"])["delivery"]["status"] == "acknowledged"
    meter = rig.meter()
    assert meter.registers()["electricity"] == units and meter.state.last_entry.via == "remote"  # type: ignore[union-attr]
    assert [str(meter.enter(d, world.now[0]).result) for d in digits] == ["used"] * len(digits)


def test_a_key_change_the_mqtt_meter_executed_is_confirmed_as_over_dlms(rig: Rig) -> None:
    world = rig.world
    rotate_vending_key(world)  # the supply group moves to KRN 2: the meter's next vend carries its key change
    vend = world.vend(10_000, include_key_change=True)
    command_id = commands.for_vend(world.engine, vend["id"])["id"]  # type: ignore[index]
    rig.run_worker()
    done = rig.wait(command_id)
    assert [t["result"] for t in done["result"]["tokens"]] == ["kct_pending", "key_changed", "accept", "accept"]
    meter = rig.meter()
    assert (meter.state.krn, meter.state.decoder_key) == (2, decoder_key(SECOND_KEY, krn=2))
    # the listener confirms the key change in its own transaction, just after the command's: wait for it too
    deadline = time.monotonic() + WAIT_S
    while world.meter_row().krn != 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    row = world.meter_row()
    assert row.krn == 2 and row.pending_key is None
    with world.engine.connect() as conn:
        confirmed = conn.execute(select(audit).where(audit.c.action == "confirm_key_change")).one()
    assert confirmed.detail["via"] == "meter"


def test_an_offline_meter_gets_its_command_when_back_before_the_deadline(rig: Rig) -> None:
    world = rig.world
    rig.fleet.call(lambda: rig.fleet.fleet.offline(DRN))
    vend = world.vend(5000)
    command_id = commands.for_vend(world.engine, vend["id"])["id"]  # type: ignore[index]
    rig.run_worker()
    time.sleep(0.3)
    assert rig.command(command_id)["status"] == "sent"  # the broker keeps it in the meter's session
    rig.fleet.call(lambda: rig.fleet.fleet.online(DRN))
    units = sum(t["units"] for t in vend["tokens"])
    assert rig.wait(command_id)["result"]["credit"] == units * 100
    assert rig.meter().registers()["electricity"] == units


def test_a_command_not_answered_by_its_deadline_expires_and_the_broker_drops_it(rig: Rig) -> None:
    world = rig.world
    rig.fleet.call(lambda: rig.fleet.fleet.offline(DRN))
    command_id = ask(world, "disconnect", expiry=dt.timedelta(seconds=2))
    rig.run_worker()
    assert rig.command(command_id)["status"] == "sent"
    time.sleep(2.5)  # the message's expiry interval, in the broker's real time
    world.advance(seconds=3)  # and the head-end's clock past the deadline: the listener's sweep
    expired = rig.wait(command_id, "expired")
    assert expired["error"] == "expired: no acknowledgement by its deadline"
    rig.fleet.call(lambda: rig.fleet.fleet.online(DRN))
    time.sleep(1.0)
    assert not rig.meter().state.remote_open  # the broker dropped the command: never executed
    assert rig.command(command_id)["status"] == "expired"


def test_a_meter_that_has_a_command_after_its_deadline_answers_expired(rig: Rig) -> None:
    rig.skew[0] = 7200.0  # the meter's clock two hours ahead of the head-end's
    command_id = ask(rig.world, "disconnect", expiry=dt.timedelta(hours=1))
    rig.run_worker()
    got = rig.wait(command_id, "expired")
    assert got["error"] == "expired: the meter had it after its deadline"
    assert not rig.meter().state.remote_open


def test_a_command_delivered_twice_acts_once_and_the_second_ack_changes_nothing(rig: Rig) -> None:
    world = rig.world
    vend = world.vend(10_000)
    command_id = commands.for_vend(world.engine, vend["id"])["id"]  # type: ignore[index]
    row = commands.get(world.engine, command_id)
    message = mqttlink.command_message(DRN, command_id, row["kind"], row["params"], row["expires_at"], world.now[0])
    rig.run_worker()
    rig.publisher.publish(*message)  # again, as a worker that died before the PUBACK would have it sent again
    done = rig.wait(command_id)
    rig.until(lambda: rig.listener.counts["applied"] == 2, "both acks applied")  # the second found it ended
    time.sleep(0.3)  # nothing more comes
    assert rig.listener.counts["applied"] == 2
    assert rig.command(command_id)["finished_at"] == done["finished_at"]
    units = sum(t["units"] for t in vend["tokens"])
    assert rig.meter().registers()["electricity"] == units  # entered once


def test_disconnect_and_reconnect_over_mqtt(rig: Rig) -> None:
    world = rig.world
    vend = world.vend(10_000)  # credit first: without it a reconnect leaves the supply off, as a meter does
    rig.run_worker()
    rig.wait(commands.for_vend(world.engine, vend["id"])["id"])  # type: ignore[index]
    off = ask(world, "disconnect")
    rig.run_worker()
    assert rig.wait(off)["result"] == {"switch": {"output": False, "control": "disconnected"}}
    assert rig.meter().state.remote_open
    on = ask(world, "reconnect")
    rig.run_worker()
    assert rig.wait(on)["result"] == {"switch": {"output": True, "control": "connected"}}
    assert not rig.meter().state.remote_open
    regs = ask(world, "read_registers")
    rig.run_worker()
    result = rig.wait(regs)["result"]
    assert result["registers"] == {"energy": {"value": 0, "unit": "Wh", "raw": 0, "scaler": 0}}
    assert result["switch"] == {"output": True, "control": "connected"}


def test_an_ack_on_another_meters_topic_or_malformed_is_refused(rig: Rig) -> None:
    world = rig.world
    rig.fleet.call(lambda: rig.fleet.fleet.offline(DRN, will=False))
    command_id = ask(world, "disconnect")
    rig.run_worker()
    other = "4750015024" + "9"  # any 11 digits: a topic the listener parses
    forged = Ack(command_id, True, {"switch": {"output": False, "control": "disconnected"}}).encode()
    info = rig.publisher.session.client.publish(f"mita/v1/{other}/ack", forged, qos=1)
    info.wait_for_publish(5)
    rig.publisher.session.client.publish(f"mita/v1/{DRN}/ack", b"not json", qos=1).wait_for_publish(5)
    rig.until(lambda: rig.listener.counts["malformed"] == 1, "the malformed ack refused")  # published after
    assert rig.command(command_id)["status"] == "sent"  # the forged one (settled as another meter's: no change)
    assert rig.sender.settle(DRN, Ack(999_999, True, {})) is None  # no such command


# ---------------------------------------------------------------------- an ack read as the DLMS path reads the meter


@pytest.mark.parametrize(
    ("kind", "ack", "status", "error"),
    [
        (CommandKind.DELIVER_TOKENS, Ack(1, True, {"tokens": [{"status": 3, "result": "accept"}]}), "acknowledged",
         None),
        (CommandKind.DELIVER_TOKENS, Ack(1, True, {"tokens": [{"status": 6, "result": "used"},
                                                              {"status": 2, "result": "kct_pending"}]}),
         "acknowledged", None),
        (CommandKind.DELIVER_TOKENS, Ack(1, True, {"tokens": [{"status": 5, "result": "crc_error"}]}), "failed",
         "token_refused: crc_error"),  # the meter's ok is not taken on trust
        (CommandKind.DELIVER_TOKENS, Ack(1, False, {"tokens": []}, "token_refused: old"), "failed",
         "token_refused: old"),
        (CommandKind.SET_POWER_LIMIT, Ack(1, True, {}), "failed", "protocol: the meter's answer has no token statuses"),
        (CommandKind.DISCONNECT, Ack(1, False, None, "expired"), "expired",
         "expired: the meter had it after its deadline"),
        (CommandKind.DISCONNECT, Ack(1, False, None, "unsupported"), "failed", "unsupported: refused by the meter"),
        (CommandKind.READ_REGISTERS, Ack(1, True, None), "acknowledged", None),
    ],
)  # fmt: skip
def test_outcome(kind: CommandKind, ack: Ack, status: str, error: str | None) -> None:
    got = outcome(kind, ack)
    assert (got.status, got.error) == (CommandStatus(status), error)


# ---------------------------------------------------------------------- mita worker


def worker_world(tmp_path: Path, broker: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str, World, MeterSim]:
    """For a real ``mita worker`` process: a master key (set here too), a SQLite file's URL, the world at the wall
    clock's second, and its meter registered on ``broker`` as MQTT-native, simulated."""
    key = secrets.token_hex(32)
    monkeypatch.setenv("MITA_MASTER_KEY", key)
    url = f"sqlite:///{tmp_path / 'mita.db'}"
    database.upgrade(url)
    engine = database.make_engine(url, pool_size=2)
    now = dt.datetime.now().replace(microsecond=0)
    world = build_world(engine, now)
    world.now[0] = now
    path = tmp_path / "meter.json"
    storage.save(world.meter, path)
    file = MeterFile(path)
    sim = MeterSim(file.load(), Still(), file=file, side=SideFile.beside(path, DRN))
    registry.register(engine, world.admin, DRN, host=broker.host, port=broker.port, secret=None, at=now,
                      transport="mqtt")  # fmt: skip
    return key, url, world, sim


@pytest.mark.slow
def test_mita_worker_listens_for_acks_when_a_meter_is_on_mqtt(
    tmp_path: Path, mqtt_broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real ``mita worker`` process, on SQLite, on real time: it publishes a vend's tokens and applies the ack,
    with nothing but its settings (the listener starts because a meter is registered on MQTT)."""
    key, url, world, sim = worker_world(tmp_path, mqtt_broker, monkeypatch)
    path = tmp_path / "meter.json"  # the meter file worker_world saved
    engine = world.engine
    tag = uuid.uuid4().hex[:8]
    env = {**os.environ, "MITA_MASTER_KEY": key, "MITA_MQTT_URL": mqtt_broker.url, "MITA_MQTT_GROUP": f"t-{tag}"}
    argv = [sys.executable, "-m", "mita.cli.main", "worker", "--database-url", url, "--poll-interval", "0.05",
            "--mqtt-client-id", f"test-worker-{tag}"]  # fmt: skip
    with MqttFleetThread([sim], mqtt_broker.url, clock=ManualClock(int(time.time()))):
        worker = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            world.now[0] = dt.datetime.now().replace(microsecond=0)
            vend = world.vend(10_000)
            command_id = commands.for_vend(engine, vend["id"])["id"]  # type: ignore[index]
            deadline = time.monotonic() + 30
            while commands.get(engine, command_id)["status"] != "acknowledged" and time.monotonic() < deadline:
                time.sleep(0.1)
            assert commands.get(engine, command_id)["status"] == "acknowledged"
        finally:
            worker.send_signal(signal.SIGTERM)
            out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "listening for MQTT acknowledgements" in err and json.loads(out.strip().splitlines()[-1])["sent"] >= 1
    assert storage.load(path).registers()["electricity"] == sum(t["units"] for t in vend["tokens"])
    engine.dispose()


# ---------------------------------------------------------------------- registering


def test_mita_headend_register_transport_mqtt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cli_run import run

    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
    url = f"sqlite:///{tmp_path / 'mita.db'}"
    database.upgrade(url)
    engine = database.make_engine(url, pool_size=2)
    world = build_world(engine)
    env = {"MITA_MQTT_URL": "mqtt://broker.example:1884"}
    done = run(["headend", "register", DRN, "--transport", "mqtt", "--database-url", url, "--json"], env=env)
    assert done.exit_code == 0, done.output
    shown = json.loads(done.stdout)
    assert (shown["transport"], shown["host"], shown["port"], shown["secret"]) == ("mqtt", "broker.example", 1884,
                                                                                    False)  # fmt: skip
    assert registry.any_mqtt(world.engine)
    text = run(["headend", "show", DRN, "--database-url", url]).stdout
    assert "broker" in text and "broker.example:1884" in text
    dlms = run(["headend", "register", DRN, "--database-url", url])  # a DLMS meter needs its address
    assert dlms.exit_code != 0 and "--host and --port" in dlms.output
    many = [{"drn": DRN, "host": "127.0.0.1", "port": 1883, "secret": None, "transport": "mqtt"}]
    assert registry.register_many(world.engine, world.admin, many, world.now[0]) == 1  # mita sim mqtt --register
    with pytest.raises(Exception, match="no LLS secret"):
        registry.register(world.engine, world.admin, DRN, host="h", port=1, secret=b"s", at=world.now[0],
                          transport="mqtt")  # fmt: skip
    engine.dispose()
