"""Fixtures of the head-end's tests: simulated meters (mita.sim, gurux: the other end's library) on loopback ports.

``sim_meter(profile, encoding)`` starts one meter and returns a :class:`SimMeter`; every meter a test started is
stopped when it ends. The meter's clock is ``SimMeter.now[0]``, in the test's hand. The values below (key, DRN,
LLS secret, start time) are what tokens are made with.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from mita import sts
from mita.headend.link import Endpoint
from mita.meter import Meter, storage

SIM_KEY = 0x0123456789ABCDEF
SIM_DRN = "47500150231"
SIM_SECRET = b"mgmt-7f3a"
SIM_T0 = dt.datetime(2024, 3, 1, 12, 0)


@dataclass
class SimMeter:
    """One simulated meter being served: its port, its state file, its clock."""

    port: int
    path: Path
    now: list[dt.datetime] = field(default_factory=lambda: [SIM_T0])

    def load(self) -> Meter:
        return storage.load(self.path)

    def endpoint(self, secret: bytes | None = SIM_SECRET, **options: Any) -> Endpoint:
        """The management association by default; ``secret=None`` is the public client."""
        return Endpoint("127.0.0.1", self.port, secret, release=options.pop("release", False), **options)


def sim_token(amount: int = 100, tid: int | None = None, kind: sts.CreditKind = sts.CreditKind.ELECTRICITY) -> str:
    """A credit token for the simulated meters' key (``amount`` base units: 0.1 kWh or 0.1 m3)."""
    tid = sts.tid_from_datetime(SIM_T0) if tid is None else tid
    return sts.encode(sts.TransferCredit(tid, amount, 5, kind), sts.EA.STA, SIM_KEY)


def _serve(
    folder: Path, profile: str, encoding: str | None, prepare: Callable[[Meter], object] | None
) -> Iterator[SimMeter]:
    from mita.sim.objects import MeterObjects
    from mita.sim.server import MeterServer, serve

    path = folder / "meter.json"
    meter = Meter.create(drn=SIM_DRN, ea=7, decoder_key=SIM_KEY, sgc="123456", ti=1, krn=1, kt=2, profile=profile)
    if prepare is not None:
        prepare(meter)
    storage.save(meter, path)
    sim = SimMeter(0, path)
    objects = MeterObjects(storage.load(path), lambda m: storage.save(m, path), encoding)  # type: ignore[arg-type]
    server = MeterServer(objects, SIM_SECRET, lambda: sim.now[0])
    loop = asyncio.new_event_loop()
    listening = loop.run_until_complete(serve(server, "127.0.0.1", 0, idle_s=5))
    sim.port = listening.sockets[0].getsockname()[1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield sim
    finally:

        async def stop() -> None:
            listening.close()
            await listening.wait_closed()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


@pytest.fixture
def sim_master_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A master key of the test's own (the meter file seals its decoder key)."""
    monkeypatch.delenv("MITA_MASTER_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MITA_MASTER_KEY_FILE", str(tmp_path / "secrets" / "master.key"))


@pytest.fixture
def sim_meter(tmp_path: Path, sim_master_key: None) -> Iterator[Callable[..., SimMeter]]:
    """``sim_meter(profile="legacy-ea07", encoding=None, prepare=None)``: a simulated meter served until the test
    ends; ``prepare(meter)`` is called on the new meter before it is served (a keypad entry, consumption...)."""
    running: list[Iterator[SimMeter]] = []

    def start(
        profile: str = "legacy-ea07", encoding: str | None = None, prepare: Callable[[Meter], object] | None = None
    ) -> SimMeter:
        folder = tmp_path / f"meter{len(running)}"
        folder.mkdir()
        served = _serve(folder, profile, encoding, prepare)
        running.append(served)
        return next(served)

    yield start
    for served in reversed(running):
        next(served, None)
