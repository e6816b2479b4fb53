"""A simulated meter on a loopback port for each test, its state file in tmp_path (shared with ``mita meter``, as
``mita sim serve`` shares it), its clock in the test's hand.

The fixtures are in conftest.py; the values and helpers here are imported by the tests by name."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mita import sts
from mita.meter import Meter, storage
from mita.sim import carrier
from mita.sts.identity import luhn_digit

KEY = 0x0123456789ABCDEF
DRN = "47500150231"
SECRET = b"mgmt-7f3a"
T0 = dt.datetime(2024, 3, 1, 12, 0)
#: 100 base units (10 kWh) of electricity for a meter with KEY, TID at T0, as packed BCD: what enter carries.
CREDIT_TOKEN = carrier.pack(
    sts.encode(sts.TransferCredit(sts.tid_from_datetime(T0), 100, 5, sts.CreditKind.ELECTRICITY), sts.EA.STA, KEY)
)


@dataclass
class Sim:
    port: int
    path: Path
    now: list[dt.datetime] = field(default_factory=lambda: [T0])
    objects: Any = None  # the meter's MeterObjects, on the loop's thread: reach it through call()
    loop: asyncio.AbstractEventLoop | None = None

    def load(self) -> Meter:
        return storage.load(self.path)

    def call(self, function: Callable[[], Any]) -> Any:
        """Run ``function`` on the server's event loop (where the meter's objects are used) and return its value."""
        assert self.loop is not None

        async def run() -> Any:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(5)


def make_meter(profile: str = "legacy-ea07", drn: str = DRN) -> Meter:
    return Meter.create(drn=drn, ea=7, decoder_key=KEY, sgc="123456", ti=1, krn=1, kt=2, profile=profile)


def drn_of(i: int) -> str:
    """The i-th of a series of valid 11-digit meter numbers (the last digit is the Luhn check digit)."""
    payload = f"{4750000000 + i:010d}"
    return payload + str(luhn_digit(payload))


def start(tmp_path: Path, profile: str = "legacy-ea07", encoding: str | None = None) -> Iterator[Sim]:
    from mita.sim.meterfile import MeterFile
    from mita.sim.objects import MeterObjects
    from mita.sim.server import MeterServer, serve

    path = tmp_path / "meter.json"
    storage.save(make_meter(profile), path)
    sim = Sim(0, path)
    file = MeterFile(path)  # shared with `mita meter`, as `mita sim serve` shares it
    objects = MeterObjects(file.load(), file, encoding)  # type: ignore[arg-type]
    server = MeterServer(objects, SECRET, lambda: sim.now[0])
    loop = asyncio.new_event_loop()
    sim.objects, sim.loop = objects, loop
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
