"""Remote vending end to end: a vend for a connected meter -> its command and outbox row in the vend's
transaction -> ``mita worker``'s head-end sender -> the simulated meter's token gateway over DLMS -> the status
and the credit read back; and the commands an operator sends (disconnect, reconnect, power limit, tariff rate)
on every meter profile. The meter side is gurux (mita.sim), the head-end dlms-cosem: two codecs."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update

from headend_pass import run_headend
from mita.headend import commands, registry
from mita.vend import database, provision
from mita.vend.schema import audit, meter_commands, meters, outbox
from vend_fixtures import DRN, SECOND_KEY, World, build_world, decoder_key, rotate_vending_key

from .online import serve_meter

SECRET = b"lls-" + bytes(range(8))


@pytest.fixture
def world(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
    database.upgrade(url)
    engine = database.make_engine(url, pool_size=2)
    try:
        yield build_world(engine)
    finally:
        engine.dispose()


def run_worker(world: World) -> None:
    """One ``mita worker`` pass over the head-end channel: everything due now."""
    run_headend(world.engine, world.svc, world.admin, lambda: world.now[0])


def ask(world: World, kind: str, params: dict[str, int] | None = None) -> dict[str, Any]:
    """An operator's command, queued as the API and the CLI queue one."""
    return commands.queue(
        world.engine, world.svc.engineering, world.operator, DRN, kind, params or {}, at=world.now[0],
        expiry=dt.timedelta(hours=1),
    )  # fmt: skip


def connect(world: World, port: int, secret: bytes | None = SECRET) -> None:
    registry.register(world.engine, world.admin, DRN, host="127.0.0.1", port=port, secret=secret, at=world.now[0])


def test_a_vend_for_a_connected_meter_reaches_it_and_the_keypad_then_answers_used(world: World, tmp_path: Path) -> None:
    with serve_meter(world.meter, tmp_path / "meter.json", SECRET, lambda: world.now[0]) as online:
        connect(world, online.port)
        vend = world.vend(10_000)
        queued = commands.for_vend(world.engine, vend["id"])
        assert queued is not None and queued["status"] == "queued" and queued["kind"] == "deliver_tokens"
        assert queued["params"]["tokens"] == [t["digits"] for t in vend["tokens"]]  # in the vend's order
        run_worker(world)
        done = commands.get(world.engine, queued["id"])
        assert done["status"] == "acknowledged", done
        assert [t["result"] for t in done["result"]["tokens"]] == ["accept"] * len(vend["tokens"])
        assert {t["status"] for t in done["result"]["tokens"]} == {3}
        units = sum(t["units"] for t in vend["tokens"])
        assert done["result"]["credit"] == units * 100  # base units of 0.1 kWh, read back in Wh
        meter = online.load()
    now = world.now[0]
    assert [str(meter.enter(t["digits"], now).result) for t in vend["tokens"]] == ["used"] * len(vend["tokens"])
    assert meter.registers()["electricity"] == units  # counted once (base units)


def test_a_keypad_meter_gets_no_command_and_connecting_it_changes_nothing_of_its_keys(world: World) -> None:
    world.vend(5000)
    with world.engine.connect() as conn:
        assert conn.execute(select(meter_commands)).first() is None
        before = conn.execute(select(meters).where(meters.c.drn == DRN)).one()._asdict()
    connect(world, 4059)
    assert registry.describe(world.engine, DRN) == {
        "meter": DRN, "host": "127.0.0.1", "port": 4059, "client": 1, "server": 1, "token_encoding": "bcd",
        "secret": True, "created_at": world.now[0], "updated_at": world.now[0], "transport": "dlms",
    }  # fmt: skip
    assert registry.unregister(world.engine, world.admin, DRN, world.now[0])
    with world.engine.connect() as conn:
        assert conn.execute(select(meters).where(meters.c.drn == DRN)).one()._asdict() == before
    assert registry.describe(world.engine, DRN) is None
    world.vend(5000)
    with world.engine.connect() as conn:
        assert conn.execute(select(meter_commands)).first() is None


def test_a_key_change_set_goes_first_and_the_meter_that_executed_it_confirms_the_key_change(
    world: World, tmp_path: Path
) -> None:
    rotate_vending_key(world)  # the supply group moves to KRN 2: the meter's next vend carries its key change
    with serve_meter(world.meter, tmp_path / "meter.json", SECRET, lambda: world.now[0]) as online:
        connect(world, online.port)
        vend = world.vend(10_000, include_key_change=True)
        queued = commands.for_vend(world.engine, vend["id"])
        assert queued is not None
        assert [t["kind"] for t in vend["tokens"]] == ["key_change", "key_change", "credit", "fbe"]
        assert queued["params"]["tokens"] == [t["digits"] for t in vend["tokens"]]
        assert world.meter_row().pending_key is not None
        run_worker(world)
        done = commands.get(world.engine, queued["id"])
        meter = online.load()
    assert done["status"] == "acknowledged", done
    assert [t["result"] for t in done["result"]["tokens"]] == ["kct_pending", "key_changed", "accept", "accept"]
    assert (meter.state.krn, meter.state.decoder_key) == (2, decoder_key(SECOND_KEY, krn=2))
    row = world.meter_row()  # the meter said it took the new key: the change is confirmed, not pending
    assert row.krn == 2 and row.pending_key is None
    with world.engine.connect() as conn:
        confirmed = conn.execute(select(audit).where(audit.c.action == "confirm_key_change")).one()
    assert confirmed.detail["via"] == "meter"


def test_an_offline_meter_gets_its_tokens_when_it_answers_again(world: World, tmp_path: Path) -> None:
    with serve_meter(world.meter, tmp_path / "meter.json", SECRET, lambda: world.now[0]) as online:
        port = online.port
    connect(world, port)  # nothing listens there now
    vend = world.vend(5000)
    run_worker(world)
    waiting = commands.for_vend(world.engine, vend["id"])
    assert waiting is not None and waiting["status"] == "queued" and waiting["error"].startswith("unreachable")
    assert waiting["attempts"] >= 1
    with serve_meter(world.meter, tmp_path / "meter.json", SECRET, lambda: world.now[0]) as online:
        registry.register(world.engine, world.admin, DRN, host="127.0.0.1", port=online.port, secret=SECRET,
                          at=world.now[0])  # fmt: skip
        world.advance(seconds=1)
        run_worker(world)
        done = commands.get(world.engine, waiting["id"])
        assert done["status"] == "acknowledged" and done["error"] is None


def test_a_worker_that_died_mid_delivery_leaves_the_command_to_the_next_which_counts_used_as_delivered(
    world: World, tmp_path: Path
) -> None:
    connect(world, 9)
    vend = world.vend(5000)
    queued = commands.for_vend(world.engine, vend["id"])
    assert queued is not None
    for token in vend["tokens"]:  # the first worker entered the tokens, then died before it wrote what came of it
        assert str(world.meter.enter(token["digits"], world.now[0]).result) == "accept"
    with world.engine.begin() as conn:
        conn.execute(update(meter_commands).where(meter_commands.c.id == queued["id"]).values(status="sent"))
    with serve_meter(world.meter, tmp_path / "meter.json", SECRET, lambda: world.now[0]) as online:
        connect(world, online.port)
        world.advance(minutes=10)  # its outbox lease has run out
        run_worker(world)
        done = commands.get(world.engine, queued["id"])
        credit = online.load().registers()["electricity"]
    assert done["status"] == "acknowledged", done
    assert {t["result"] for t in done["result"]["tokens"]} == {"used"}  # on the meter already: delivered, once
    assert credit == sum(t["units"] for t in vend["tokens"])


def test_an_expired_command_is_reported_and_never_tried_again(world: World, tmp_path: Path) -> None:
    connect(world, 9)  # discard: nothing answers
    vend = world.vend(5000)
    run_worker(world)
    world.advance(hours=25)  # past the 24 h delivery expiry
    run_worker(world)
    done = commands.for_vend(world.engine, vend["id"])
    assert done is not None and done["status"] == "expired" and done["error"].startswith("expired")
    attempts = done["attempts"]
    with world.engine.connect() as conn:
        row = conn.execute(select(outbox).where(outbox.c.channel == "headend")).one()
    assert row.status == "sent"  # the outbox row is settled: nothing is due any more
    world.advance(hours=1)
    run_worker(world)
    assert commands.get(world.engine, done["id"])["attempts"] == attempts


def test_a_wrong_secret_fails_the_command_at_once(world: World, tmp_path: Path) -> None:
    with serve_meter(world.meter, tmp_path / "meter.json", SECRET, lambda: world.now[0]) as online:
        connect(world, online.port, secret=b"not-the-secret")
        vend = world.vend(5000)
        run_worker(world)
    done = commands.for_vend(world.engine, vend["id"])
    assert done is not None and done["status"] == "failed" and done["error"].startswith("refused")
    assert "not-the-secret" not in str(done)


@pytest.mark.parametrize("profile", ["legacy-ea07", "edition2-ea11", "water-valve"])
def test_disconnect_reconnect_power_limit_and_tariff_rate_on_every_profile(
    world: World, tmp_path: Path, profile: str
) -> None:
    if profile == "water-valve":  # a water meter's credit is water
        with world.engine.begin() as conn:
            conn.execute(update(meters).where(meters.c.drn == DRN).values(utility="water"))
    meter = provision.virtual_meter(world.engine, DRN, profile)
    with serve_meter(meter, tmp_path / "meter.json", SECRET, lambda: world.now[0]) as online:
        connect(world, online.port)
        world.vend(10_000)  # credit, so that a reconnect closes the relay
        run_worker(world)
        asked = {"disconnect": ask(world, "disconnect")}
        run_worker(world)
        assert not online.load().switch_closed(world.now[0])
        for kind, value in (("reconnect", None), ("set_power_limit", 4600), ("set_tariff_rate", 123)):
            asked[kind] = ask(world, kind, {} if value is None else {"value": value})
            run_worker(world)
        done = {k: commands.get(world.engine, c["id"]) for k, c in asked.items()}
        assert {k: c["status"] for k, c in done.items()} == dict.fromkeys(asked, "acknowledged"), done
        assert done["disconnect"]["result"]["switch"]["output"] is False
        assert done["reconnect"]["result"]["switch"]["output"] is True
        limit = done["set_power_limit"]
        assert limit["vend_id"] and limit["result"]["tokens"][0]["result"] == "accept"
        state = online.load().state
    assert state.mpl == 4600 and state.tariff_rate == 123
