"""A connected meter for the head-end's tests: the database's meter as a virtual meter file, served over DLMS by
the simulated meter (gurux, the other end's library) on a loopback port, in a background thread."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from mita.meter import Meter, storage


@dataclass
class Online:
    port: int
    path: Path

    def load(self) -> Meter:
        return storage.load(self.path)


@contextmanager
def serve_meter(meter: Meter, path: Path, secret: bytes, clock: Callable[[], dt.datetime]) -> Iterator[Online]:
    from mita.sim.objects import MeterObjects
    from mita.sim.server import MeterServer, serve

    storage.save(meter, path)
    objects = MeterObjects(storage.load(path), lambda m: storage.save(m, path))
    server = MeterServer(objects, secret, clock)
    loop = asyncio.new_event_loop()
    listening = loop.run_until_complete(serve(server, "127.0.0.1", 0, idle_s=5))
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield Online(listening.sockets[0].getsockname()[1], path)
    finally:

        async def stop() -> None:
            listening.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
