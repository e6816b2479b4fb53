"""Fixtures of the channels' tests: a migrated database of each kind with the vending tests' utility (one meter,
its customer with a phone), the payment pipeline over it, and an outbox worker step that sends through given
senders."""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import update

from mita.channels.payments import Payments
from mita.outbox import Policy, Worker
from mita.outbox.senders import Sender
from mita.vend import database
from mita.vend.schema import customers
from vend_fixtures import World, build_world

from .channel_world import PHONE


@pytest.fixture
def world(url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    """The vending tests' utility on an empty database of each kind (``url``), its customer reachable at PHONE."""
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
    database.upgrade(url)
    engine = database.make_engine(url)
    w = build_world(engine)
    with engine.begin() as conn:
        conn.execute(update(customers).values(phone=PHONE))
    yield w
    engine.dispose()


@pytest.fixture
def payments(world: World) -> Payments:
    return Payments(world.svc, currency="KES", unverified_cap=100_000)


Drain = Callable[[Mapping[str, Sender]], dict[str, Any]]


@pytest.fixture
def drain(world: World) -> Drain:
    """Run the outbox once over ``senders`` (channel -> sender) until nothing is due; the worker's counts."""

    def run(senders: Mapping[str, Sender]) -> dict[str, Any]:
        def clock() -> dt.datetime:  # rows a server wrote on the wall clock are due too
            return max(world.now[0], dt.datetime.now().replace(microsecond=0))

        worker = Worker(world.engine, dict(senders), batch_size=50, policy=Policy(max_attempts=5), clock=clock)
        return worker.run(once=True).as_dict()

    return run


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path
