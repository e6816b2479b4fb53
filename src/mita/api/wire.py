"""uvicorn's httptools protocol, with each response's head and first body part sent in one write.

uvicorn writes a response's status line and headers as soon as the application starts it, and the body when it
comes: two ``send`` calls for every answer, two TCP segments on the wire and two wake-ups of the client. A
vend's answer is one complete body right behind its head, so on a busy server the second system call was a
share of the CPU that bought nothing. :class:`JoinedProtocol` (``mita serve`` passes it as uvicorn's ``http``
protocol) holds the head back until the application's next message to the server has been handled, then writes
what was held as one piece: the head with the whole body of an ordinary answer, or with the first part of a
streamed one (whose later parts go out as they come). What is written, and in what order, is uvicorn's own; only
the number of writes changes. A response that never sends a body (an error after its start) has its head written
when the connection is closed, as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

Send = Callable[[Any], Coroutine[Any, Any, None]]


class Joined:
    """The connection's transport, as uvicorn's request cycles see it: while :attr:`held` is a list, what they
    write waits there; :meth:`flush` writes it in one call. Anything else is the transport's own."""

    __slots__ = ("held", "transport")

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.held: list[bytes] | None = None

    def write(self, data: bytes) -> None:
        if self.held is None:
            self.transport.write(data)
        else:
            self.held.append(data)

    def flush(self) -> None:
        held, self.held = self.held, None
        if held:
            self.transport.write(held[0] if len(held) == 1 else b"".join(held))

    def close(self) -> None:
        self.flush()  # a head still held goes out before the connection ends, as it would have
        self.transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


class JoinedProtocol(HttpToolsProtocol):
    """uvicorn's ``httptools`` protocol (the one it picks itself when httptools is installed, as Mita requires),
    with every request cycle's writes joined as the module says."""

    joined: Joined

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self.joined = Joined(transport)
        super().connection_made(cast(asyncio.Transport, self.joined))

    def on_headers_complete(self) -> None:
        before = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is not before:  # a new request (not an upgrade): its task has not run yet, nor taken its send
            cycle.send = joining(cycle.send, self.joined)  # type: ignore[method-assign, assignment]


def joining(send: Send, joined: Joined) -> Send:
    """``send`` with the response's start held until the next message has been handled."""

    async def joined_send(message: Any) -> None:
        if message["type"] == "http.response.start":
            joined.held = []
            await send(message)
            return
        try:
            await send(message)
        finally:
            joined.flush()

    return joined_send
