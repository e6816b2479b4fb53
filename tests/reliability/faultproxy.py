"""A small TCP fault proxy between Mita's processes and what they talk to (PostgreSQL, Mosquitto, Kannel).

This kernel has no netem and CI has no nftables, so network faults are made here: every byte between a Mita
process and a server goes through an asyncio relay in the harness, which the nemesis steers. A link is one
listening port on loopback relaying to one upstream address; the processes are given the link's address in place
of the server's. The relay runs on its own event loop in a daemon thread; its controls are called from the
nemesis's thread.

| control | what the processes see |
|---|---|
| :meth:`~FaultProxy.partition` | a blackhole: connections stay open, no byte moves; a new connect hangs |
| :meth:`~FaultProxy.heal` | all that was held moves on, in order; latency and armed losses end |
| :meth:`~FaultProxy.reset` | every connection of every link closed abruptly on both sides (RST) |
| :meth:`~FaultProxy.lose_answers` | PostgreSQL links: a COMMIT reaches the server, no answer comes back |
| :meth:`~FaultProxy.slow` | a delay before every chunk is passed on, both ways |

A new connection during a partition is accepted by the kernel and then gets nothing, as a SYN with no answer would:
the client's connect timeout ends it. ``lose_answers(n, ...)``: the next ``n`` connections to send a ``COMMIT``
have it delivered and every byte after it from the server dropped (the server committed, the client never hears:
an in-doubt commit); ``hold_s`` later they are reset.

A TCP stream cannot lose bytes and go on, so a connection whose answers were dropped must die: the reset after
``hold_s`` stands for the keepalive or timeout that would end it on a real network.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
CHUNK = 65536
COMMIT = b"COMMIT"


@dataclass(eq=False)
class _Conn:
    """One client connection and its upstream twin."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    muted: bool = False  # the server's answers are dropped (an in-doubt commit is under way)

    def abort(self) -> None:
        for writer in (self.client, self.server):
            if writer is not None:
                _rst(writer)


@dataclass(eq=False)
class Link:
    """One listening port relaying to ``upstream``; ``postgres``: the in-doubt rule applies."""

    name: str
    upstream: tuple[str, int]
    postgres: bool
    port: int = 0
    conns: set[_Conn] = field(default_factory=set)
    server: asyncio.Server | None = None

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)


@dataclass
class Stats:
    """What the proxy did, for the run's figures."""

    connections: int = 0
    resets: int = 0  # connections reset by :meth:`FaultProxy.reset`
    in_doubt: int = 0  # COMMITs delivered whose answers were dropped
    held: int = 0  # chunks that waited for a partition to heal
    connects_held: int = 0  # new connections that waited for it


class FaultProxy:
    """Links to servers, and the faults on them. ``with FaultProxy() as proxy:`` starts and stops it."""

    def __init__(self) -> None:
        self.links: dict[str, Link] = {}
        self.stats = Stats()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._flowing: asyncio.Event | None = None
        self._delay = 0.0
        self._armed = 0  # COMMITs still to lose
        self._hold_s = 1.0

    # ------------------------------------------------------------ life

    def start(self) -> FaultProxy:
        self._thread.start()
        self._flowing = self._call(self._make_event())
        return self

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def add(self, name: str, host: str, port: int, *, postgres: bool = False) -> Link:
        """A new link to ``host:port``, listening on a free loopback port (``link.port``)."""
        link = Link(name, (host, port), postgres)
        self._call(self._listen(link))
        self.links[name] = link
        return link

    def url(self, name: str, url: str) -> str:
        """``url`` (of the link's upstream) with its host and port replaced by the link's own."""
        link = self.links[name]
        host, port = link.upstream
        old = f"{host}:{port}"
        assert old in url, (old, url)
        return url.replace(old, f"127.0.0.1:{link.port}", 1)

    def connections(self) -> int:
        return sum(len(link.conns) for link in self.links.values())

    # ------------------------------------------------------------ faults (called from another thread)

    def partition(self) -> None:
        self._loop.call_soon_threadsafe(self._event().clear)

    def heal(self) -> None:
        """The partition lifted, the latency gone, no answer lost any more (connections already muted stay so
        until their reset)."""
        self._delay = 0.0
        self._armed = 0
        self._loop.call_soon_threadsafe(self._event().set)

    def slow(self, seconds: float) -> None:
        self._delay = seconds

    def reset(self) -> int:
        """Every connection reset, both sides; how many."""

        async def reset_all() -> int:
            conns = [c for link in self.links.values() for c in link.conns]
            for conn in conns:
                conn.abort()
            return len(conns)

        n = self._call(reset_all())
        self.stats.resets += n
        return n

    def arm(self, commits: int, hold_s: float = 1.0) -> None:
        """The in-doubt rule, for the next ``commits`` COMMITs (see :meth:`lose_answers`); returns at once."""
        self._hold_s = hold_s
        self._armed = commits

    def lose_answers(self, commits: int, window_s: float, hold_s: float = 1.0) -> int:
        """Arm the in-doubt rule for ``commits`` COMMITs, or until ``window_s`` passes; how many were lost."""
        before = self.stats.in_doubt
        self.arm(commits, hold_s)
        deadline = time.monotonic() + window_s
        while self._armed > 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        self._armed = 0
        return self.stats.in_doubt - before

    # ------------------------------------------------------------ the relay (on the proxy's loop)

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    def _event(self) -> asyncio.Event:
        assert self._flowing is not None, "start the proxy first"
        return self._flowing

    async def _make_event(self) -> asyncio.Event:
        event = asyncio.Event()
        event.set()
        return event

    async def _listen(self, link: Link) -> None:
        async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await self._relay(link, reader, writer)

        link.server = await asyncio.start_server(accepted, "127.0.0.1", 0)
        link.port = int(link.server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        for link in self.links.values():
            if link.server is not None:
                link.server.close()
            for conn in list(link.conns):
                conn.abort()

    async def _relay(self, link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer)
        link.conns.add(conn)
        self.stats.connections += 1
        try:
            if not self._event().is_set():
                self.stats.connects_held += 1
            await self._event().wait()  # a new connection hangs during a partition
            try:
                up_reader, up_writer = await asyncio.open_connection(*link.upstream)
            except OSError:
                return  # the server is down: the client sees its connection reset
            conn.server = up_writer
            up = asyncio.ensure_future(self._pump(link, conn, reader, up_writer, upstream=True))
            down = asyncio.ensure_future(self._pump(link, conn, up_reader, writer, upstream=False))
            await asyncio.wait({up, down}, return_when=asyncio.FIRST_COMPLETED)
            for task in (up, down):
                task.cancel()
            for end in (writer, up_writer):
                end.close()  # one side hung up: the other is told with a FIN, after what was already sent
        finally:
            link.conns.discard(conn)
            if not writer.is_closing():
                conn.abort()

    async def _pump(
        self, link: Link, conn: _Conn, src: asyncio.StreamReader, dst: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        """One direction, chunk by chunk, in order: a chunk waits out a partition and the latency, then goes on
        (or, on a muted connection's way back, is dropped)."""
        tail = b""  # the last bytes sent up, so that a COMMIT split over two chunks is still seen
        flowing = self._event()
        with contextlib.suppress(OSError, asyncio.IncompleteReadError):
            while data := await src.read(CHUNK):
                if not flowing.is_set():
                    self.stats.held += 1
                await flowing.wait()
                if self._delay:
                    await asyncio.sleep(self._delay)
                    await flowing.wait()
                if upstream and link.postgres and self._armed > 0 and not conn.muted and COMMIT in tail + data:
                    self._armed -= 1
                    self.stats.in_doubt += 1
                    conn.muted = True  # before the COMMIT goes: not one byte of its answer may come back
                    self._loop.call_later(self._hold_s, conn.abort)
                tail = data[1 - len(COMMIT) :]
                if not upstream and conn.muted:
                    continue
                dst.write(data)
                await dst.drain()


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a reset, not a FIN: the peer's next read or write fails at once."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
