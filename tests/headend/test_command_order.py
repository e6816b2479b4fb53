"""A meter's commands reach it in TID order (issue 16, finding 2), over a real broker, on both databases.

The meter (``legacy-ea07``) remembers 20 TIDs and refuses a token older than all of them (``old``). So a command
whose publish failed (the broker restarting) must not be overtaken by the meter's later commands while it waits
out its backoff; and a command that ends without reaching the meter (expired) must not hold the later ones: they
go, and what the meter then has is every credit but the expired command's, whose tokens the customer can still
key in from the receipt while fewer than 20 newer tokens have been entered.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import update

from mita.headend import commands
from mita.headend.mqttclient import MqttError
from mita.headend.mqttlink import Publisher
from mita.headend.runner import CommandSender
from mita.outbox import Worker
from mita.vend.schema import meter_commands

from .test_mqtt_commands import FAST, Rig, rig, world  # noqa: F401 - the world and its MQTT meter

STORE = 20  # the legacy-ea07 profile's TID store


class Flaky:
    """The broker as a publisher sees it: the first ``fail`` publishes are not taken (no PUBACK), the rest are;
    the command ids in the order they were tried and taken."""

    def __init__(self, publisher: Publisher, fail: int) -> None:
        self.publisher, self.fail = publisher, fail
        self.tried: list[int] = []
        self.taken: list[int] = []

    def publish(self, topic: str, payload: bytes, properties: Any) -> None:
        command_id = int(bytes(properties.CorrelationData))
        self.tried.append(command_id)
        if self.fail > 0:
            self.fail -= 1
            raise MqttError("mqtt_unreachable", "the broker is restarting")
        self.publisher.publish(topic, payload, properties)
        self.taken.append(command_id)


def queued(on: Rig, n: int) -> tuple[list[dict[str, Any]], list[int]]:
    vends = [on.world.vend(5000) for _ in range(n)]
    ids = [commands.for_vend(on.world.engine, v["id"])["id"] for v in vends]  # type: ignore[index]
    return vends, ids


def units(vends: list[dict[str, Any]]) -> int:
    return sum(int(t["units"]) for v in vends for t in v["tokens"])


def worker(on: Rig, publisher: Flaky) -> Worker:
    now = on.world.now
    sender = CommandSender(on.world.engine, clock=lambda: now[0], publisher=publisher)  # type: ignore[arg-type]
    return Worker(on.world.engine, {"headend": sender}, policy=FAST, clock=lambda: now[0])


def test_a_failed_publish_holds_the_meters_later_commands_back_until_it_went(rig: Rig) -> None:  # noqa: F811
    vends, ids = queued(rig, STORE + 4)
    flaky = Flaky(rig.publisher, fail=1)
    w = worker(rig, flaky)
    w.run(once=True)  # the first publish fails: back to queued, due after its backoff; nothing behind it goes
    assert (flaky.tried, flaky.taken) == ([ids[0]], [])
    assert {rig.command(i)["status"] for i in ids} == {"queued"}
    rig.world.advance(seconds=1)
    w.run(once=True)
    assert flaky.taken == ids  # in TID order, each once
    done = [rig.wait(i) for i in ids]
    assert all(d["error"] is None for d in done)
    assert rig.meter().registers()["electricity"] == units(vends)  # every credit in the meter, none refused old


def test_an_expired_command_lets_the_later_ones_go_and_its_tokens_still_key_in(rig: Rig) -> None:  # noqa: F811
    now, engine = rig.world.now, rig.world.engine
    vends, ids = queued(rig, 3)
    with engine.begin() as conn:  # the first one's deadline passed before it was sent
        conn.execute(
            update(meter_commands)
            .where(meter_commands.c.id == ids[0])
            .values(expires_at=now[0] - dt.timedelta(seconds=1))
        )
    flaky = Flaky(rig.publisher, fail=0)
    worker(rig, flaky).run(once=True)
    expired = rig.command(ids[0])
    assert expired["status"] == "expired" and expired["error"].startswith("expired: not reached by")
    assert flaky.taken == ids[1:]
    for i in ids[1:]:
        rig.wait(i)
    meter = rig.meter()
    assert meter.registers()["electricity"] == units(vends[1:])  # the expired command's credit is not in it
    # the meter remembers fewer than 20 newer TIDs: the receipt's tokens are still accepted from the keypad
    keyed = [str(meter.enter(t["digits"], now[0]).result) for t in vends[0]["tokens"]]
    assert keyed == ["accept"] * len(vends[0]["tokens"])
    assert meter.registers()["electricity"] == units(vends)
