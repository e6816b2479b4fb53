"""An MQTT command the broker took (PUBACK) and then lost is published again, on a real Mosquitto of the test's
own (no persistence: a restart loses every session and queued message) and both databases.

The sweep of the ack listener (``CommandSender.sweep``) publishes a ``sent`` command with no ack again after
``resend_after`` seconds of the head-end's clock, then after twice that, until ``max_sends`` publishes: the lost
command arrives and is acknowledged; a lost *ack* brings the same command again, which the meter answers with its
first outcome without entering the tokens twice; an offline meter, whose persistent session queues every copy,
gets ``max_sends`` copies and no more, and acts once."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt import client as paho
from sqlalchemy import insert, select

from mita.headend import commands, mqttlink, registry
from mita.headend.mqttclient import Session
from mita.headend.mqttlink import AckListener, Publisher
from mita.headend.runner import CommandSender, resend_due
from mita.meter import Meter, storage
from mita.outbox import Worker
from mita.sim.meterfile import MeterFile
from mita.sim.mqttfleet import ManualClock, MqttFleetThread
from mita.sim.mqttmeter import MeterSim, SideFile
from mita.vend import database
from mita.vend.schema import meter_commands, meters, outbox
from vend_fixtures import DRN, World, build_world

from .test_mqtt_commands import FAST, WAIT_S, Still, worker_world

RESEND_AFTER = 60.0
MAX_SENDS = 3


@dataclass
class ResendRig:
    world: World
    broker: Any
    path: Path
    fleet: MqttFleetThread
    sender: CommandSender
    publisher: Publisher
    tag: str
    listening: tuple[AckListener, threading.Event, threading.Thread] | None = None

    def listen(self) -> AckListener:
        """The ack listener (its sweep every 0.1 s), on a thread until :meth:`deaf` or the test's end."""
        listener = AckListener(self.broker.url, settle=self.sender.settle, sweep=self.sender.sweep,
                               group=f"test-{self.tag}", client_id=f"acks-{self.tag}", sweep_every=0.1)  # fmt: skip
        stopping = threading.Event()
        thread = threading.Thread(target=listener.run, args=(stopping,), daemon=True)
        thread.start()
        listener.session.wait_connected(WAIT_S)
        self.listening = (listener, stopping, thread)
        return listener

    def deaf(self) -> None:
        """The listener stopped: its persistent session keeps what comes meanwhile (until the broker loses it)."""
        if self.listening is not None:
            _listener, stopping, thread = self.listening
            stopping.set()
            thread.join(10)
            self.listening = None

    def run_worker(self) -> None:
        Worker(self.world.engine, {"headend": self.sender}, policy=FAST, clock=lambda: self.world.now[0]).run(once=True)

    def command(self, command_id: int) -> dict[str, Any]:
        return dict(commands.get(self.world.engine, command_id))

    def until(self, what: Callable[[], bool], why: str) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if what():
                return
            time.sleep(0.02)
        raise AssertionError(f"not {why} in {WAIT_S} s")

    def meter(self) -> Meter:
        return storage.load(self.path)

    def restart_broker(self) -> None:
        """A crash of a broker without persistence: what it took (PUBACKed) and the sessions are gone. Back when
        the head-end's clients have connected again (and subscribed: the listener on its connection)."""
        sessions = [self.publisher.session] + ([self.listening[0].session] if self.listening else [])
        before = [s.generation for s in sessions]
        self.broker.restart()
        self.until(lambda: all(s.generation > b for s, b in zip(sessions, before, strict=True)), "reconnected")
        time.sleep(0.3)  # the listener's SUBACK

    def online(self) -> None:
        """The meter back on the broker, subscribed to its commands."""
        self.fleet.call(lambda: self.fleet.fleet.online(DRN))
        self.until(lambda: DRN in self.fleet.fleet.connected, "the meter connected")
        time.sleep(0.3)  # its SUBACK


@pytest.fixture
def lossy_broker(tmp_path: Path) -> Iterator[Any]:
    from mqtt_broker import broker

    with broker(tmp_path / "mosquitto", persistence=False) as started:
        yield started


@pytest.fixture
def rig(url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, lossy_broker: Any) -> Iterator[ResendRig]:
    monkeypatch.setenv("MITA_MASTER_KEY", uuid.uuid4().hex * 2)
    database.upgrade(url)
    engine = database.make_engine(url, pool_size=4)
    world = build_world(engine)
    path = tmp_path / "meter.json"
    storage.save(world.meter, path)
    file = MeterFile(path)
    sim = MeterSim(file.load(), Still(), file=file, side=SideFile.beside(path, DRN))
    fleet = MqttFleetThread([sim], lossy_broker.url, clock=ManualClock(mqttlink.epoch(world.now[0])),
                            wall=lambda: world.now[0].timestamp())  # fmt: skip
    fleet.start()
    tag = uuid.uuid4().hex[:8]
    publisher = Publisher(lossy_broker.url, client_id=f"test-commands-{tag}")
    sender = CommandSender(world.engine, clock=lambda: world.now[0], publisher=publisher, resend_after=RESEND_AFTER,
                           max_sends=MAX_SENDS)  # fmt: skip
    registry.register(world.engine, world.admin, DRN, host=lossy_broker.host, port=lossy_broker.port, secret=None,
                      at=world.now[0], transport="mqtt")  # fmt: skip
    made = ResendRig(world, lossy_broker, path, fleet, sender, publisher, tag)
    made.listen()
    try:
        yield made
    finally:
        made.deaf()
        publisher.close()
        fleet.stop(flush=False)
        engine.dispose()


def _vend(rig: ResendRig, amount: int = 10_000) -> tuple[int, int]:
    """A vend for the MQTT meter: its command's id and the units its tokens carry."""
    vend = rig.world.vend(amount)
    command = commands.for_vend(rig.world.engine, vend["id"])
    assert command is not None
    return int(command["id"]), sum(t["units"] for t in vend["tokens"])


def test_a_command_the_broker_took_and_lost_is_sent_again_and_acknowledged(rig: ResendRig) -> None:
    rig.fleet.call(lambda: rig.fleet.fleet.offline(DRN))  # its session at the broker holds the command...
    command_id, units = _vend(rig)
    rig.run_worker()
    assert rig.command(command_id)["status"] == "sent"  # PUBACKed: the outbox row is done
    rig.restart_broker()  # ...until the broker crashes without persistence
    rig.online()
    rig.world.advance(seconds=RESEND_AFTER - 1)
    time.sleep(1.0)
    assert rig.command(command_id)["status"] == "sent"  # lost: no meter answered, and not yet re-sent
    assert rig.meter().registers().get("electricity", 0) == 0
    rig.world.advance(seconds=2)  # the re-send is due
    rig.until(lambda: rig.command(command_id)["status"] == "acknowledged", "acknowledged after the re-send")
    done = rig.command(command_id)
    assert done["attempts"] == 2 and done["result"]["credit"] == units * 100
    assert rig.meter().registers()["electricity"] == units


def test_a_lost_ack_brings_the_command_again_and_the_meter_answers_it_without_crediting_twice(rig: ResendRig) -> None:
    rig.deaf()  # the meter's ack waits in the listener's session at the broker...
    command_id, units = _vend(rig)
    rig.run_worker()
    rig.until(lambda: rig.meter().registers().get("electricity", 0) == units, "credited by the meter")
    rig.restart_broker()  # ...which loses it
    rig.until(lambda: DRN in rig.fleet.fleet.connected, "the meter connected again")  # by itself, with its back-off
    time.sleep(0.3)
    rig.listen()
    time.sleep(0.5)
    assert rig.command(command_id)["status"] == "sent"
    rig.world.advance(seconds=RESEND_AFTER + 1)
    rig.until(lambda: rig.command(command_id)["status"] == "acknowledged", "acknowledged after the re-send")
    done = rig.command(command_id)
    assert done["attempts"] == 2 and done["result"]["credit"] == units * 100  # the first outcome, answered again
    assert {t["result"] for t in done["result"]["tokens"]} == {"accept"}  # not entered again: that says `used`
    assert rig.meter().registers()["electricity"] == units  # credited once


def test_an_offline_meter_gets_a_bounded_number_of_copies_with_back_off_and_acts_once(rig: ResendRig) -> None:
    seen: list[paho.MQTTMessage] = []
    spy: Session = Session(rig.broker.url, f"test-spy-{rig.tag}", clean_start=True, session_expiry=0,
                           on_connect=lambda _present: spy.subscribe([f"mita/v1/{DRN}/cmd"]),
                           on_message=seen.append)  # fmt: skip
    spy.start()
    spy.wait_connected(WAIT_S)
    time.sleep(0.2)  # its subscription taken
    try:
        rig.fleet.call(lambda: rig.fleet.fleet.offline(DRN))
        command_id, units = _vend(rig)
        rig.run_worker()
        schedule = [  # seconds of the head-end's clock since the first publish -> publishes by then
            (RESEND_AFTER - 1, 1),
            (RESEND_AFTER + 1, 2),  # the first re-send, 60 s after the first publish
            (RESEND_AFTER + 1 + 2 * RESEND_AFTER - 2, 2),  # the next waits twice as long
            (RESEND_AFTER + 1 + 2 * RESEND_AFTER + 1, 3),
            (86_400 - 60, 3),  # the bound: no more until the deadline (a day)
        ]
        start = rig.world.now[0]
        for after, publishes in schedule:
            rig.world.now[0] = start + dt.timedelta(seconds=after)
            rig.until(lambda: bool(rig.command(command_id)["attempts"] == publishes), f"{publishes} publishes")  # noqa: B023
            time.sleep(0.4)  # a few more sweeps: nothing more
            assert rig.command(command_id)["attempts"] == publishes
        rig.until(lambda: len(seen) == MAX_SENDS, "every copy at the broker")
        assert {bytes(m.payload) for m in seen} == {bytes(seen[0].payload)}  # the same command each time
        assert rig.command(command_id)["status"] == "sent"
        rig.fleet.call(lambda: rig.fleet.fleet.online(DRN))  # its session hands it the three copies
        rig.until(lambda: rig.command(command_id)["status"] == "acknowledged", "acknowledged")
        time.sleep(0.5)
        assert rig.meter().registers()["electricity"] == units  # the copies entered once
        assert len(seen) == MAX_SENDS
    finally:
        spy.stop()


@pytest.mark.parametrize(
    ("after", "attempts", "due"),
    [(59, 1, False), (60, 1, True), (119, 2, False), (120, 2, True), (10**6, 3, False), (10**6, 4, False)],
)
def test_resend_due_backs_off_and_stops_at_max_sends(
    url: str, monkeypatch: pytest.MonkeyPatch, after: int, attempts: int, due: bool
) -> None:
    """The re-send's clause over the database's own times: after 60 s, 120 s after the second publish, none past
    the third (``MAX_SENDS``)."""
    monkeypatch.setenv("MITA_MASTER_KEY", uuid.uuid4().hex * 2)
    database.upgrade(url)
    engine = database.make_engine(url, pool_size=1)
    try:
        build_world(engine)
        sent = dt.datetime(2026, 1, 1, 12, 0)
        with engine.begin() as conn:
            meter_id = conn.execute(select(meters.c.id)).scalar()
            conn.execute(insert(meter_commands).values(
                meter_id=meter_id, kind="disconnect", params={}, status="sent", actor="t", attempts=attempts,
                expires_at=sent + dt.timedelta(days=30), sent_at=sent, created_at=sent))  # fmt: skip
            at = sent + dt.timedelta(seconds=after)
            found = conn.execute(select(meter_commands.c.id).where(resend_due(at, RESEND_AFTER, MAX_SENDS))).all()
        assert bool(found) is due
    finally:
        engine.dispose()


@pytest.mark.slow
def test_mita_worker_re_sends_what_a_restarted_broker_lost(
    tmp_path: Path, lossy_broker: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real ``mita worker``, on SQLite and real time, with nothing but its settings (``MITA_MQTT_RESEND_AFTER``
    of 1 s): its ack listener's sweep publishes again the command a crashed broker lost."""
    key, url, world, sim = worker_world(tmp_path, lossy_broker, monkeypatch)
    path = tmp_path / "meter.json"  # the meter file worker_world saved
    engine = world.engine
    tag = uuid.uuid4().hex[:8]
    env = {**os.environ, "MITA_MASTER_KEY": key, "MITA_MQTT_URL": lossy_broker.url, "MITA_MQTT_GROUP": f"t-{tag}",
           "MITA_MQTT_RESEND_AFTER": "1", "MITA_MQTT_MAX_SENDS": "20"}  # fmt: skip
    argv = [sys.executable, "-m", "mita.cli.main", "worker", "--database-url", url, "--poll-interval", "0.05",
            "--mqtt-client-id", f"test-worker-{tag}"]  # fmt: skip
    with MqttFleetThread([sim], lossy_broker.url, clock=ManualClock(int(time.time()))) as fleet:
        deadline = time.monotonic() + 30
        while DRN not in fleet.fleet.connected and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # subscribed: its session will hold the command
        fleet.call(lambda: fleet.fleet.offline(DRN))
        worker = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            world.now[0] = dt.datetime.now().replace(microsecond=0)
            vend = world.vend(10_000)
            command_id = commands.for_vend(engine, vend["id"])["id"]  # type: ignore[index]
            # not once taken (attempts 1: before the publish, CI at 6108c29) but once PUBACKed (its outbox row
            # sent): a broker restarted before its PUBACK has paho publish it again on reconnecting, nothing lost
            row = select(outbox.c.status).where(outbox.c.vend_id == vend["id"], outbox.c.channel == "headend")
            while time.monotonic() < deadline:
                with engine.connect() as conn:
                    if conn.execute(row).scalar() == "sent":
                        break
                time.sleep(0.05)
            else:
                raise AssertionError("the command was not PUBACKed in 30 s")
            lossy_broker.restart()  # the command, PUBACKed and queued for the offline meter, is gone
            fleet.call(lambda: fleet.fleet.online(DRN))
            # re-sends 1, 2, 4, 8... s apart: one that came before the meter or the listener was back is lost too
            deadline = time.monotonic() + 90
            while commands.get(engine, command_id)["status"] != "acknowledged" and time.monotonic() < deadline:
                time.sleep(0.1)
            done = commands.get(engine, command_id)
        finally:
            worker.send_signal(signal.SIGTERM)
            _out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert done["status"] == "acknowledged" and done["attempts"] >= 2, (done, err[-2000:])
    assert "re-sent" in err
    assert storage.load(path).registers()["electricity"] == sum(t["units"] for t in vend["tokens"])
    engine.dispose()
