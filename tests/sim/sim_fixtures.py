"""A simulated meter on a loopback port for each test, its state file in tmp_path, its clock in the test's hand.

The fixtures are in conftest.py; the values and helpers here are imported by the tests by name."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mita.meter import Meter, storage

KEY = 0x0123456789ABCDEF
DRN = "47500150231"
SECRET = b"mgmt-7f3a"
T0 = dt.datetime(2024, 3, 1, 12, 0)


@dataclass
class Sim:
    port: int
    path: Path
    now: list[dt.datetime] = field(default_factory=lambda: [T0])

    def load(self) -> Meter:
        return storage.load(self.path)


def make_meter(profile: str = "legacy-ea07") -> Meter:
    return Meter.create(drn=DRN, ea=7, decoder_key=KEY, sgc="123456", ti=1, krn=1, kt=2, profile=profile)


def start(tmp_path: Path, profile: str = "legacy-ea07", encoding: str | None = None) -> Iterator[Sim]:
    from mita.sim.objects import MeterObjects
    from mita.sim.server import MeterServer, serve

    path = tmp_path / "meter.json"
    storage.save(make_meter(profile), path)
    sim = Sim(0, path)
    objects = MeterObjects(storage.load(path), lambda m: storage.save(m, path), encoding)  # type: ignore[arg-type]
    server = MeterServer(objects, SECRET, lambda: sim.now[0])
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

        asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(cancel_the_rest())
        loop.close()


async def cancel_the_rest() -> None:
    """Connections still open when the test ends: cancelled, and waited for."""
    tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
