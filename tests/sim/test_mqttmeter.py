"""The MQTT-native simulated meter (mita.sim.mqttmeter, mqttload, mqttfleet): consumption through the meter model,
readings and events in the mita/v1 format, sequence numbers that survive a restart, commands answered once per id,
injected faults; and on a broker of the test's own: the retained status and last will, commands over MQTT v5 with
correlation data, a persistent session keeping an offline meter's command."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mita import sts
from mita.meter import Meter, storage
from mita.meter.state import PER_BASE_UNIT
from mita.sim import mqttload
from mita.sim.faults import FaultKind
from mita.sim.meterfile import MeterFile
from mita.sim.mqttfleet import ManualClock, MqttFleetThread
from mita.sim.mqttmeter import Message, MeterSim, SideFile
from mita.telemetry.obis import Medium
from mita.telemetry.payload import Ack, Command, Events, Readings, Status
from mita.telemetry.topics import Kind

KEY = 0x0123456789ABCDEF
DRN = "47500150231"
OTHER = "4750015024" + str(sts.luhn_digit("4750015024"))
T0 = dt.datetime(2026, 3, 2, 0, 0)  # a Monday, local time
START = int(T0.timestamp())
HOUR = 3600
WALL = START  # the meters' communication clock in these tests


def new_meter(drn: str = DRN, credit_wh: int = 5000, profile: str = "legacy-ea07") -> Meter:
    meter = Meter.create(drn=drn, ea=7, decoder_key=KEY, sgc="123456", ti=1, krn=1, kt=2, profile=profile)
    if credit_wh:
        unit = 1 if profile == "water-valve" else 0
        meter.state.registers[unit] = credit_wh * 3600
    return meter


def token(amount: int, minutes: int = 0) -> str:
    """A credit token (``amount`` base units of 0.1 kWh = 100 Wh) with its own TID."""
    tid = sts.tid_from_datetime(dt.datetime(2024, 3, 1, 12, 0) + dt.timedelta(minutes=minutes))  # base 1993
    return sts.encode(sts.TransferCredit(tid, amount, 5, sts.CreditKind.ELECTRICITY), sts.EA.STA, KEY)


def sim_of(meter: Meter, faults: list[str] = (), **options: Any) -> MeterSim:  # type: ignore[assignment]
    parsed = [mqttload.parse_fault(text, START)[1] for text in faults]
    load = mqttload.make(meter.state.drn, Medium(meter.profile.utility), 900, parsed, shape="simple", utc_offset_s=0)
    return MeterSim(meter, load, **options)


def command(cid: int, kind: str, params: dict[str, Any] | None = None, expires: int = WALL + HOUR) -> bytes:
    return Command(cid, kind, params or {}, expires).encode()


def decoded(messages: list[Message]) -> tuple[list[Any], list[Any]]:
    """(readings, events) of published messages, in order."""
    readings = [r for m in messages if m.kind is Kind.READINGS for r in Readings.decode(m.payload).readings]
    events = [e for m in messages if m.kind is Kind.EVENTS for e in Events.decode(m.payload).events]
    return readings, events


@pytest.fixture(autouse=True)
def master_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MITA_MASTER_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MITA_MASTER_KEY_FILE", str(tmp_path / "secrets" / "master.key"))


# ---------------------------------------------------------------------- consumption, readings, events


def test_credit_falls_through_the_model_and_the_relay_opens_at_zero_credit() -> None:
    sim = sim_of(new_meter(credit_wh=4000))
    out = sim.start(START)
    out += sim.advance(START + 24 * HOUR)
    readings, events = decoded(out)
    assert len(readings) == 96 and [r.at for r in readings] == [START + 900 * i for i in range(1, 97)]
    seqs = sorted([r.seq for r in readings] + [e.seq for e in events])
    assert seqs == list(range(1, len(seqs) + 1))  # one counter for readings and events, nothing skipped
    names = [e.name for e in events]
    assert names == ["power_up", "low_credit", "relay_opened"]  # under 3 kWh, then empty
    opened = next(e for e in events if e.name == "relay_opened")
    after = [r for r in readings if r.at >= opened.at]
    assert after and all(not r.relay and r.credit == 0 and r.demand == 0 for r in after)
    low = next(e for e in events if e.name == "low_credit")
    assert [r.credit for r in readings if r.at <= low.at][-2:][0] >= 3000 > next(r.credit for r in readings
                                                                                if r.at == low.at)  # fmt: skip
    assert readings[-1].register == 4000  # all the credit and only it registered, in Wh
    before = [r for r in readings if r.at < opened.at]
    assert all(r.relay and abs(r.credit + r.register - 4000) <= 1 for r in before)  # credit falls as it climbs
    assert sim.meter.state.consumed // 3600 == 4000


def test_readings_are_pushed_in_blocks_of_push_every() -> None:
    sim = sim_of(new_meter(credit_wh=100_000), push_every=4)
    sim.start(START)
    out = sim.advance(START + 2 * HOUR + 30 * 60)  # ten intervals
    blocks = [Readings.decode(m.payload) for m in out if m.kind is Kind.READINGS]
    assert [len(b.readings) for b in blocks] == [4, 4] and {b.interval for b in blocks} == {900}
    rest = sim.flush()
    assert len(Readings.decode(rest[0].payload).readings) == 2 and sim.flush() == []


def test_sequence_numbers_are_reserved_in_blocks_beside_the_meter_file_and_never_reused(tmp_path: Path) -> None:
    path = tmp_path / "meter.json"
    side = SideFile.beside(path, DRN, block=10)
    assert side.path == str(tmp_path / ".meter.json.mqtt")
    used = [side.seq() for _ in range(25)]
    assert used == list(range(1, 26))
    assert json.loads(Path(side.path).read_text())["seq"] == 31  # three blocks written down, the third reserved
    again = SideFile.beside(path, DRN, block=10)  # a restart, even after a crash: after every number handed out
    assert again.seq() == 31
    with pytest.raises(Exception, match="not this meter's"):
        SideFile.beside(path, OTHER)


def test_the_sensor_faults_dead_meter_and_drifting_clock() -> None:
    faults = [f"{DRN}=magnetic:0.5@1-3", f"{DRN}=clock_drift:8640", f"{DRN}=dead@5"]
    sim = sim_of(new_meter(credit_wh=100_000), faults)
    sim.start(START)
    readings, events = decoded(sim.advance(START + 6 * HOUR))
    fast = 8640 / 86400  # the meter's clock gains 6 minutes a day: its stamps run a tenth ahead
    assert [(e.name, e.at) for e in events if e.name != "power_up"] == [
        ("strong_dc_field_detected", START + round(HOUR * (1 + fast))),
        ("no_strong_dc_field_anymore", START + round(3 * HOUR * (1 + fast))),
    ]
    assert sim.dead and readings[-1].at == START + round((4 * HOUR + 2700) * (1 + fast))
    assert len(readings) == 19  # up to 04:45; the reading of 05:00 is never taken
    assert sim.advance(START + 8 * HOUR) == []


def test_a_bypass_registers_its_fraction_of_the_load() -> None:
    plain, bypassed = sim_of(new_meter(credit_wh=100_000)), sim_of(new_meter(credit_wh=100_000), [f"{DRN}=bypass:0.25"])
    totals = []
    for sim in (plain, bypassed):
        sim.start(START)
        readings, _ = decoded(sim.advance(START + 24 * HOUR))
        totals.append(readings[-1].register)
    assert totals[1] == pytest.approx(totals[0] * 0.25, rel=0.01)


def test_a_leak_flows_all_night_on_a_water_meter() -> None:
    sim = sim_of(new_meter(credit_wh=100_000, profile="water-valve"), [f"{DRN}=leak:40"])
    sim.start(START)
    readings, _ = decoded(sim.advance(START + 24 * HOUR))
    assert all(r.medium is Medium.WATER for r in readings)
    night = [b.register - a.register for a, b in itertools.pairwise(readings) if b.at - START <= 4 * HOUR]
    assert all(litres >= 10 for litres in night)  # 40 L/h: 10 L every quarter of an hour at least


def test_the_load_shapes_of_mita_sim_loads_are_drawn_per_meter_and_seed() -> None:
    one = mqttload.make(DRN, Medium.ELECTRICITY, 900, seed=3, utc_offset_s=0)
    two = mqttload.make(DRN, Medium.ELECTRICITY, 900, seed=3, utc_offset_s=0)
    other = mqttload.make(OTHER, Medium.ELECTRICITY, 900, seed=3, utc_offset_s=0)
    ends = [START + 900 * i for i in range(1, 97 * 3)]
    a, b, c = ([load.energy(t) for t in ends] for load in (one, two, other))
    assert a == b and a != c and all(x >= 0 for x in a) and sum(a) > 1000


@pytest.mark.parametrize(
    ("text", "kind", "start", "end", "params"),
    [
        (f"{DRN}=bypass", FaultKind.BYPASS, 0, None, {"fraction": 0.3}),
        (f"{DRN}=bypass:0.25@48", FaultKind.BYPASS, 48, None, {"fraction": 0.25}),
        (f"{DRN}=cover:1@2-30", FaultKind.COVER, 2, 30, {"terminal": 1.0}),
        (f"{DRN}=dead@10", FaultKind.DEAD, 10, None, {}),
    ],
)
def test_a_fault_from_the_command_line(text: str, kind: FaultKind, start: int, end: int | None, params: Any) -> None:
    drn, fault = mqttload.parse_fault(text, START)
    assert drn == DRN and fault.kind is kind and fault.start == START + start * HOUR
    assert fault.end == (None if end is None else START + end * HOUR) and dict(fault.params) == params


@pytest.mark.parametrize("text", ["bypass", f"{DRN}=melt", f"{DRN}=bypass:2", f"{DRN}=dead:1", f"{DRN}=cover@5-2"])
def test_a_fault_that_does_not_parse(text: str) -> None:
    with pytest.raises(mqttload.FaultError):
        mqttload.parse_fault(text, START)


# ---------------------------------------------------------------------- commands


def test_tokens_are_entered_once_and_a_repeated_command_answers_its_first_outcome(tmp_path: Path) -> None:
    side = SideFile.beside(tmp_path / "m.json", DRN)
    sim = sim_of(new_meter(credit_wh=0), side=side)
    sim.start(START)
    tokens = [token(10), token(5, minutes=1)]
    ack, out = sim.command(command(7, "deliver_tokens", {"tokens": tokens}), START, WALL, b"7")
    assert ack is not None and ack.ok and ack.error is None
    accepted = [{"token": t, "status": 3, "result": "accept"} for t in tokens]
    assert ack.result == {"tokens": accepted, "credit": 1500}
    assert [e.name for e in decoded(out)[1]] == ["token_accepted", "token_accepted", "relay_closed"]
    again, out = sim.command(command(7, "deliver_tokens", {"tokens": tokens}), START + 60, WALL, b"7")
    assert again == ack and out == [] and sim.credit() == 1500  # answered from memory: nothing entered twice
    restarted = SideFile.beside(tmp_path / "m.json", DRN)  # and after a restart
    assert restarted.recalled(7) == ack


def test_a_refused_token_stops_the_delivery_and_used_goes_on() -> None:
    sim = sim_of(new_meter(credit_wh=0))
    sim.start(START)
    first = token(10)
    sim.command(command(1, "deliver_tokens", {"tokens": [first]}), START, WALL)
    bad = token(5, minutes=2)[:-1] + str((int(token(5, minutes=2)[-1]) + 1) % 10)
    ack, _ = sim.command(command(2, "deliver_tokens", {"tokens": [first, bad, token(7, 3)]}), START, WALL)
    assert ack is not None and not ack.ok and ack.error == "token_refused: crc_error"
    assert [(t["status"], t["result"]) for t in ack.result["tokens"]] == [(6, "used"), (5, "crc_error")]  # type: ignore[index]
    assert sim.credit() == 1000  # the third token never entered


def test_an_expired_command_answers_expired_and_does_nothing() -> None:
    sim = sim_of(new_meter())
    sim.start(START)
    ack, out = sim.command(command(3, "disconnect", expires=WALL - 1), START, WALL)
    assert ack == Ack(3, False, None, "expired") and out == [] and sim.meter.switch_closed(sim.local(START))


def test_disconnect_reconnect_registers_and_clock() -> None:
    sim = sim_of(new_meter())
    sim.start(START)
    ack, out = sim.command(command(4, "disconnect"), START + 10, WALL)
    assert ack is not None and ack.result == {"switch": {"output": False, "control": "disconnected"}}
    assert [e.name for e in decoded(out)[1]] == ["relay_opened"]
    ack, out = sim.command(command(5, "reconnect"), START + 20, WALL)
    assert ack is not None and ack.result == {"switch": {"output": True, "control": "connected"}}
    assert [e.name for e in decoded(out)[1]] == ["relay_closed"]
    sim.advance(START + HOUR)
    ack, _ = sim.command(command(6, "read_registers"), START + HOUR, WALL)
    assert ack is not None and ack.ok and ack.result is not None
    energy = ack.result["registers"]["energy"]
    assert energy == {"value": sim.register(), "unit": "Wh", "raw": sim.register(), "scaler": 0}
    assert ack.result["credit"] == 5000 - sim.register() and ack.result["power_limit"] is None
    assert ack.result["clock"] == (T0 + dt.timedelta(hours=1)).isoformat()
    ack, out = sim.command(command(8, "set_clock", {"t": START + 2 * HOUR}), START + HOUR, WALL)
    assert ack is not None and ack.result == {"before": (T0 + dt.timedelta(hours=1)).isoformat(),
                                              "clock": (T0 + dt.timedelta(hours=2)).isoformat()}  # fmt: skip
    assert [e.name for e in decoded(out)[1]] == ["clock_adjusted"] and sim.meter_time(START + HOUR) == START + 2 * HOUR
    ack, _ = sim.command(command(9, "read_events", {"logs": ["disconnector"]}), START + HOUR, WALL)
    assert ack is not None and [row[1] for row in ack.result["logs"]["disconnector"]] == [62, 63]  # type: ignore[index]
    ack, _ = sim.command(command(10, "firmware_update"), START, WALL)
    assert ack == Ack(10, False, None, "unsupported: firmware_update")
    ack, _ = sim.command(b'{"v": 1, "id": "x"}', START, WALL, b"11")
    assert ack == Ack(11, False, None, "bad_command: bad_field")


def test_a_keypad_token_in_the_shared_file_is_taken_and_reported(tmp_path: Path) -> None:
    path = tmp_path / "meter.json"
    storage.save(new_meter(credit_wh=0), path)
    file = MeterFile(path)
    sim = sim_of(file.load(), file=file)
    sim.start(START)
    with storage.FileLock(path):  # mita meter enter, beside the simulated meter
        keypad = storage.load(path)
        assert str(keypad.enter(token(20), T0).result) == "accept"
        storage.save(keypad, path)
    readings, events = decoded(sim.advance(START + 900))
    assert [e.name for e in events] == ["token_accepted", "relay_closed"]
    assert readings[0].credit == 2000 - readings[0].register
    assert storage.load(path).state.registers[0] == readings[0].credit * 3600 + sim.meter.state.registers[0] % 3600
    assert sim.meter.state.registers[0] <= 20 * PER_BASE_UNIT


# ---------------------------------------------------------------------- on a broker


class Watcher:
    """A client subscribed to ``mita/v1/#``: every message it got, as (topic, payload, retain, properties)."""

    def __init__(self, url: str, topic: str = "mita/v1/#") -> None:
        host, port = url.removeprefix("mqtt://").split(":")
        self.got: list[tuple[str, bytes, bool, Any]] = []
        self.lock = threading.Lock()
        name = f"watch-{uuid.uuid4().hex[:8]}"
        self.client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=name, protocol=MQTTProtocolVersion.MQTTv5
        )
        self.client.on_message = self._got
        self.client.connect(host, int(port))
        self.client.subscribe(topic, qos=1)
        self.client.loop_start()

    def _got(self, _client: Any, _userdata: Any, m: paho.MQTTMessage) -> None:
        with self.lock:
            self.got.append((m.topic, bytes(m.payload), bool(m.retain), m.properties))

    def wait(self, found: Callable[[list[tuple[str, bytes, bool, Any]]], Any], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                value = found(list(self.got))
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"not seen in {timeout} s: {self.got!r}")

    def command(self, drn: str, payload: bytes, cid: int, expiry: int = 60) -> None:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.CorrelationData, props.ResponseTopic = str(cid).encode(), f"mita/v1/{drn}/ack"
        props.MessageExpiryInterval = expiry
        self.client.publish(f"mita/v1/{drn}/cmd", payload, qos=1, properties=props).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def watcher(mqtt_broker: Any) -> Iterator[Watcher]:
    w = Watcher(mqtt_broker.url)
    yield w
    w.close()


def on(topic: str, kind: str = "") -> Callable[[list[tuple[str, bytes, bool, Any]]], list[tuple[str, bytes]]]:
    return lambda got: [(t, p) for t, p, *_ in got if t == topic and kind.encode() in p]


def test_meters_on_a_broker_publish_status_readings_events_and_answer_commands(mqtt_broker: Any,
                                                                                watcher: Watcher) -> None:  # fmt: skip
    clock = ManualClock(START)
    sims = [sim_of(new_meter()), sim_of(new_meter(OTHER), [f"{OTHER}=dead@1"])]
    with MqttFleetThread(sims, mqtt_broker.url, clock=clock, wall=lambda: WALL) as fleet:
        watcher.wait(on(f"mita/v1/{DRN}/status", '"online":true'))
        clock.t = START + 2 * HOUR
        fleet.call(fleet.fleet.tick)
        watcher.wait(lambda got: len([1 for t, *_ in got if t == f"mita/v1/{DRN}/readings"]) == 8)
        will = watcher.wait(on(f"mita/v1/{OTHER}/status", '"online":false'))  # the dead meter's last will
        assert Status.decode(will[0][1]) == Status(False)
        watcher.command(DRN, command(41, "disconnect"), 41)
        acks = watcher.wait(lambda got: [g for g in got if g[0] == f"mita/v1/{DRN}/ack"])
        assert Ack.decode(acks[0][1]) == Ack(41, True, {"switch": {"output": False, "control": "disconnected"}})
        assert acks[0][3].CorrelationData == b"41"
        watcher.command(DRN, command(41, "disconnect"), 41)  # delivered again: the same answer, not acted on again
        twice = watcher.wait(lambda got: [g for g in got if g[0] == f"mita/v1/{DRN}/ack"][1:])
        assert twice[0][1] == acks[0][1]
        events = watcher.wait(lambda got: [e.name for t, p, *_ in got if t == f"mita/v1/{DRN}/events"
                                           for e in Events.decode(p).events if e.name.startswith("relay")])  # fmt: skip
        assert events == ["relay_opened"]
    late = Watcher(mqtt_broker.url, f"mita/v1/{DRN}/status")  # retained: what a newcomer reads
    try:
        assert Status.decode(late.wait(on(f"mita/v1/{DRN}/status"))[0][1]).online is False  # stopped cleanly
    finally:
        late.close()


def test_an_offline_meter_gets_its_command_from_its_persistent_session_when_back(mqtt_broker: Any,
                                                                                 watcher: Watcher) -> None:  # fmt: skip
    with MqttFleetThread([sim_of(new_meter())], mqtt_broker.url, clock=ManualClock(START), wall=lambda: WALL) as fleet:
        fleet.call(lambda: fleet.fleet.offline(DRN))
        watcher.wait(on(f"mita/v1/{DRN}/status", '"online":false'))  # a power cut: its will
        watcher.command(DRN, command(51, "disconnect"), 51)
        time.sleep(0.3)
        assert not [g for g in watcher.got if g[0].endswith("/ack")]
        fleet.call(lambda: fleet.fleet.online(DRN))
        acks = watcher.wait(lambda got: [g for g in got if g[0] == f"mita/v1/{DRN}/ack"])
        assert Ack.decode(acks[0][1]).ok


def test_mita_sim_mqtt_runs_meter_files_on_a_broker(tmp_path: Path, mqtt_broker: Any, watcher: Watcher) -> None:
    """The command: a folder of meter files, a clock 9,000 times real time (ten intervals a second), hourly
    blocks, a fault; one JSON line when connected, the counts on standard error when stopped."""
    import os
    import signal
    import subprocess
    import sys

    folder = tmp_path / "meters"
    folder.mkdir()
    storage.save(new_meter(), folder / f"{DRN}.json")
    storage.save(new_meter(OTHER), folder / f"{OTHER}.json")
    argv = [sys.executable, "-m", "mita.cli.main", "sim", "mqtt", str(folder), "--mqtt-url", mqtt_broker.url,
            "--speed", "9000", "--push-every", "4", "--load", "simple", "--no-sync",
            "--fault", f"{OTHER}=dead@1"]  # fmt: skip
    process = subprocess.Popen(argv, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        line = json.loads(process.stdout.readline())
        assert line["meters"] == 2 and line["speed"] == 9000 and line["push_every"] == 4
        blocks = watcher.wait(lambda got: [p for t, p, *_ in got if t == f"mita/v1/{DRN}/readings"][2:])
        assert len(Readings.decode(blocks[0]).readings) == 4
        watcher.wait(on(f"mita/v1/{OTHER}/status", '"online":false'))  # dead after an hour: its will
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert json.loads(err.strip().splitlines()[-1])["published"]["readings"] >= 3
    assert json.loads((folder / f".{DRN}.json.mqtt").read_text())["seq"] > 1
    bad = subprocess.run([*argv[:6], "--fault", "melt"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "invalid_fault" in bad.stderr + bad.stdout
