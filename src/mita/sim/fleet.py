"""Many simulated meters in one process: one asyncio loop, one :class:`~mita.sim.server.MeterServer` per meter.

Each meter listens on its own endpoint: consecutive ports from ``port_base`` on one host (any free port each with
``port_base=0``), or one loopback address each from a CIDR block (``addresses="127.0.1.0/22"``, every meter on
port 4059 or ``port_base``; on Linux all of 127.0.0.0/8 is the loopback interface, nothing to configure).

:func:`start_fleet` is the asyncio API, :class:`FleetThread` the same fleet on a loop in a background thread (what a
test or benchmark running a head-end beside it uses). Stopping closes every listener and cancels every open
connection at once, so a fleet stops in milliseconds, not after each connection's idle timeout.

Servers are built eagerly, with the garbage collector paused (:func:`_gc_paused`): 1,000 meters' object sets and
gurux servers then take about 0.2 s and listening 0.1 s (figures in docs/notes/dlms-sim.md), so building them
lazily on a first connection would not pay for its complexity.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import gc
import ipaddress
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple, Self

from mita.meter import Meter

from . import carrier
from .loopthread import LoopThread
from .meterfile import MeterFile
from .objects import MeterObjects
from .server import MeterServer, serve

#: The DLMS/COSEM port (IANA), each meter's port when each has an address of its own.
DLMS_PORT = 4059

#: Where a meter's changes go: a callable, or its file, shared with ``mita meter`` (a path or a
#: :class:`~mita.sim.meterfile.MeterFile`: saved as ``mita meter`` saves it, and its changes by others taken).
Saver = Callable[[Meter], None] | str | os.PathLike[str]
#: One meter of a fleet: the meter, where its changes are saved, its management client's LLS secret (empty: the
#: public client only).
FleetMeter = tuple[Meter, Saver, bytes]


class FleetError(Exception):
    """A fleet that cannot start; ``code`` is stable, the message names meters and endpoints, never a secret."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class Endpoint(NamedTuple):
    host: str
    port: int


def local_clock() -> dt.datetime:
    return dt.datetime.now().replace(microsecond=0)


def _saver(target: Saver, sync: bool) -> Callable[[Meter], None]:
    """A callable (a :class:`MeterFile` among them) as it is; a path as a :class:`MeterFile`. That one has not
    read the file, so the first request takes the file's meter (the file as it is then, which is what is served)."""
    if callable(target):
        return target
    return MeterFile(target, sync=sync)


def _endpoints(count: int, host: str, port_base: int, addresses: str | None) -> Iterator[Endpoint]:
    """Where each meter listens, in the order given (port 0: the system picks)."""
    if addresses is None:
        for i in range(count):
            yield Endpoint(host, port_base + i if port_base else 0)
        return
    try:
        network = ipaddress.ip_network(addresses, strict=False)
    except ValueError as exc:
        raise FleetError("invalid_addresses", f"--addresses {addresses!r} is not a CIDR block: {exc}") from None
    hosts = list(itertools.islice(network.hosts(), count))
    if len(hosts) < count:
        raise FleetError("too_few_addresses", f"{addresses} has {len(hosts)} usable addresses, not {count}")
    for address in hosts:
        yield Endpoint(str(address), port_base or DLMS_PORT)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """The cyclic garbage collector off while the fleet is built and starts listening: each meter is a few hundred
    small objects, and the full collections the growing heap triggered were about two thirds of the start-up time
    (1,000 meters: building 0.5 s -> 0.17 s). Nothing made here is garbage; the collector is on again after, as it
    was before (its first collection then still walks the new heap: ``mita sim fleet`` freezes it instead)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Fleet:
    """Meters being served. ``endpoints`` and ``servers`` are by DRN."""

    def __init__(self) -> None:
        self.endpoints: dict[str, Endpoint] = {}
        self.servers: dict[str, MeterServer] = {}
        self._listeners: list[asyncio.Server] = []
        self._connections: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self.servers)

    async def stop(self) -> None:
        """Stop listening, end every open connection; return when all are gone."""
        for listener in self._listeners:
            listener.close()
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.gather(*(listener.wait_closed() for listener in self._listeners), return_exceptions=True)
        self._listeners.clear()


async def start_fleet(
    meters: Sequence[FleetMeter],
    host: str = "127.0.0.1",
    port_base: int = 0,
    *,
    addresses: str | None = None,
    clock: Callable[[], dt.datetime] = local_clock,
    idle_s: float = 60.0,
    encoding: carrier.Encoding | None = None,
    sync: bool = True,
) -> Fleet:
    """Serve every meter; return once all listen. A failure to listen stops the ones started and raises
    :class:`FleetError` (``listen_failed``), as does a DRN given twice (``duplicate_meter``). ``sync=False``:
    meter files are saved without fsync (:func:`mita.meter.storage.save`)."""
    fleet = Fleet()
    places = list(_endpoints(len(meters), host, port_base, addresses))
    seen: set[str] = set()
    for meter, _, _ in meters:
        if meter.state.drn in seen:
            raise FleetError("duplicate_meter", f"meter {meter.state.drn} is in the fleet twice")
        seen.add(meter.state.drn)
    with _gc_paused():
        servers = [
            MeterServer(MeterObjects(meter, _saver(save, sync), encoding), secret, clock)
            for meter, save, secret in meters
        ]
        for server, place in zip(servers, places, strict=True):
            await _listen(fleet, server, place, idle_s)
    return fleet


async def _listen(fleet: Fleet, server: MeterServer, place: Endpoint, idle_s: float) -> None:
    drn = server.objects.meter.state.drn
    try:
        listener = await serve(server, place.host, place.port, idle_s, fleet._connections)
    except OSError as exc:
        await fleet.stop()
        raise FleetError(
            "listen_failed", f"meter {drn}: cannot listen on {place.host}:{place.port}: {exc.strerror or exc}"
        ) from None
    fleet._listeners.append(listener)
    fleet.servers[drn] = server
    bound_host, bound_port = listener.sockets[0].getsockname()[:2]
    fleet.endpoints[drn] = Endpoint(bound_host, bound_port)


class FleetThread(LoopThread[Fleet]):
    """A fleet on its own event loop in a daemon thread: ``start()`` returns when every meter listens.

    Use it as a context manager, or call :meth:`stop`. :meth:`call` runs a function on the fleet's loop (where the
    meters' objects live), e.g. ``thread.call(lambda: thread.fleet.servers[drn].objects.tamper("cover", now))``.
    """

    def __init__(
        self,
        meters: Sequence[FleetMeter],
        host: str = "127.0.0.1",
        port_base: int = 0,
        **options: Any,
    ) -> None:
        super().__init__("mita-sim-fleet")
        self._args = (meters, host, port_base)
        self._options = options

    @property
    def endpoints(self) -> dict[str, Endpoint]:
        return self.fleet.endpoints

    def start(self, timeout: float = 60.0) -> Self:
        return self._begin(start_fleet(*self._args, **self._options), timeout)

    def stop(self, timeout: float = 10.0) -> None:
        self._end(lambda fleet: fleet.stop(), timeout)
