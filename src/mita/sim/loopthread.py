"""A simulated fleet on an event loop of its own, in a daemon thread: what tests and benchmarks run beside a
head-end. The fleets (DLMS: :class:`~mita.sim.fleet.FleetThread`, MQTT: :class:`~mita.sim.mqttfleet.MqttFleetThread`)
say how theirs starts and stops; starting, running a function on the loop and tearing the loop down are here."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Generic, Self, TypeVar

F = TypeVar("F")


class LoopThread(Generic[F]):
    def __init__(self, name: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._fleet: F | None = None

    @property
    def fleet(self) -> F:
        if self._fleet is None:
            raise RuntimeError("the fleet is not started")
        return self._fleet

    def start(self, timeout: float = 60.0) -> Self:
        raise NotImplementedError

    def stop(self, timeout: float = 10.0) -> None:
        raise NotImplementedError

    def _begin(self, started: Coroutine[Any, Any, F], timeout: float) -> Self:
        """The thread started and the fleet made on its loop; on any failure the loop is torn down again."""
        self._thread.start()
        try:
            self._fleet = asyncio.run_coroutine_threadsafe(started, self._loop).result(timeout)
        except BaseException:
            self._halt()
            raise
        return self

    def _end(self, stopped: Callable[[F], Coroutine[Any, Any, None]], timeout: float) -> None:
        if self._fleet is not None:
            asyncio.run_coroutine_threadsafe(stopped(self._fleet), self._loop).result(timeout)
            self._fleet = None
        self._halt()

    def call(self, function: Callable[[], Any], timeout: float = 10.0) -> Any:
        """``function()`` run on the fleet's loop, where its meters live."""

        async def run() -> Any:
            return function()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout)

    def _halt(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_closed() and not self._loop.is_running():
            self._loop.close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
