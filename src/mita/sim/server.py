"""A simulated meter on the network: gurux-dlms's server behind an asyncio TCP listener (IEC 62056-47 wrapper).

One :class:`MeterServer` per meter, one meter per listening address and port. Associations, by client address:

======  ===========  ==============================  ==============================================================
client  name         authentication                  may
======  ===========  ==============================  ==============================================================
16      public       none                            read every attribute but the association's secret (attr 7)
1       management   LLS with the meter's own secret  read, and call token gateway *enter* and disconnect control
======  ===========  ==============================  ==============================================================

The secret is compared in constant time and never logged, echoed or stored in the association object (its
attribute 7 stays empty). One association at a time per meter (real meters restrict this too): a second connection
waits for the first to close or go idle for ``idle_s``. The clock is a function given to the server, so the model
gets time passed in and tests control it; a SET of the clock object (management only) moves the meter's time by an
offset the server keeps in memory (a restart forgets it, as it forgets the event logs).

Writable attributes (``MeterServer.writable``), for the management client only: the clock's time (attr 2) and the
limiter's threshold_normal (attr 4). Every other SET, and every SET by the public client, is answered
read-write-denied: ``onGetAttributeAccess`` gives the association's true rights, and
:meth:`MeterServer.onPreWrite` checks again before it changes anything. (The association's object list would show
the same rights, but gurux fills it from ``e.server``, which its ``ValueEventArgs`` never sets: every entry's
rights are empty.)

gurux 1.0.203 answered *every* SET hardware-fault (bug 8 of :mod:`mita.sim.shims`, patched there with the other
shims by :func:`mita.sim.shims.apply`, its canary in ``tests/sim/test_shims.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hmac
import logging
from collections.abc import Callable
from typing import Any

from gurux_dlms import GXDLMSServer
from gurux_dlms.enums import (
    AccessMode,
    Authentication,
    ErrorCode,
    InterfaceType,
    MethodAccessMode,
    SourceDiagnostic,
)
from gurux_dlms.objects import GXDLMSAssociationLogicalName

from . import shims
from .objects import MAX_WATTS, THRESHOLD_NORMAL, MeterObjects

log = logging.getLogger("mita.sim")

PUBLIC_CLIENT = 16
MANAGEMENT_CLIENT = 1
SERVER_ADDRESS = 1  # the management logical device
SECRET_ATTRIBUTE = 7  # association LN: the LLS secret
CLOCK_TIME = 2  # clock: time
#: A date-time is 12 octets (IEC 62056-6-2 §4.1.6.1): year (2), month, day, weekday, hour, minute, second,
#: hundredths, deviation (2), clock status.
DATE_TIME_OCTETS = 12
NOT_SPECIFIED = 0xFF


class MeterServer(GXDLMSServer):  # type: ignore[misc]
    """gurux's server callbacks, wired to one meter's objects."""

    def __init__(self, objects: MeterObjects, secret: bytes, clock: Callable[[], dt.datetime]) -> None:
        shims.apply()
        super().__init__(True, InterfaceType.WRAPPER)
        self.objects, self._secret, self.clock = objects, bytes(secret), clock
        self.offset = dt.timedelta(0)  # what SETs of the clock moved the meter's time by
        self.association = GXDLMSAssociationLogicalName()
        items = [self.association, *objects.items]
        shims.prefill_association(self.association, items)
        for item in items:
            self.items.append(item)
        self.initialize()
        #: (object, attribute) -> what a management SET of it does (anything else is refused).
        self.writable: dict[tuple[int, int], Callable[[Any], ErrorCode]] = {
            (id(objects.clock), CLOCK_TIME): self._set_clock,
            (id(objects.limiter), THRESHOLD_NORMAL): self._set_power_limit,
        }

    def __repr__(self) -> str:
        return f"<MeterServer {self.objects.meter.state.drn}>"  # never the secret

    def now(self) -> dt.datetime:
        """The meter's time: the server's clock, moved by the management client's clock SETs."""
        return self.clock() + self.offset

    # ------------------------------------------------------------ association

    def isTarget(self, serverAddress: int, clientAddress: int) -> bool:
        return bool(clientAddress in (PUBLIC_CLIENT, MANAGEMENT_CLIENT))

    def onValidateAuthentication(self, authentication: int, password: Any) -> int:
        """``SourceDiagnostic.NONE`` accepts (returning True would mean NO_REASON_GIVEN: a reject)."""
        client = self.settings.clientAddress
        if client == PUBLIC_CLIENT and authentication == Authentication.NONE:
            return int(SourceDiagnostic.NONE)
        if client == MANAGEMENT_CLIENT and authentication == Authentication.LOW:
            given = bytes(password or b"")
            if self._secret and hmac.compare_digest(given, self._secret):
                return int(SourceDiagnostic.NONE)
            log.info("management association refused: wrong secret")  # never the secret
            return int(SourceDiagnostic.AUTHENTICATION_FAILURE)
        return int(SourceDiagnostic.NOT_RECOGNISED)

    def _management(self) -> bool:
        return bool(
            self.settings.clientAddress == MANAGEMENT_CLIENT and self.settings.authentication == Authentication.LOW
        )

    def onGetAttributeAccess(self, arg: Any) -> int:
        """The association's rights: what gurux checks a GET or SET against."""
        if arg.target is self.association and arg.index == SECRET_ATTRIBUTE:
            return int(AccessMode.NO_ACCESS)
        if self._management() and (id(arg.target), arg.index) in self.writable:
            return int(AccessMode.READ_WRITE)
        return int(AccessMode.READ)

    def onGetMethodAccess(self, arg: Any) -> int:
        """Always ACCESS: a method refused here gets a malformed ACTION response (shims bug 7), so the refusal is
        made in :meth:`onPreAction` instead, which the library encodes correctly."""
        return int(MethodAccessMode.ACCESS)

    # ------------------------------------------------------------ services

    def onPreAction(self, args: Any) -> None:
        """Token gateway and disconnect control have no server ``invoke`` in gurux: they are handled here, for the
        management client only; every other method call is refused (read-write denied)."""
        now = self.now()
        for e in args:
            management = self._management()
            if management and e.target is self.objects.token_gateway and e.index == 1:
                self.objects.enter(bytes(e.parameters or b""), now)
            elif management and e.target is self.objects.disconnect and e.index in (1, 2):
                self.objects.switch(e.index == 2, now)
            else:
                e.error = ErrorCode.READ_WRITE_DENIED
            e.handled, e.value = True, 0  # the library does int(e.value)

    def onPostAction(self, args: Any) -> None:
        pass

    def onPreRead(self, args: Any) -> None:
        pass

    def onPreWrite(self, args: Any) -> None:
        """Every SET ends here (see the module docstring): a writable attribute for the management client, or a
        read-write-denied answer. Handled either way, so gurux never stores a client's value itself."""
        for e in args:
            setter = self.writable.get((id(e.target), e.index)) if self._management() else None
            e.error = ErrorCode.READ_WRITE_DENIED if setter is None else setter(e.value)
            e.handled = True

    def _set_clock(self, value: Any) -> ErrorCode:
        new = parse_date_time(value)
        if new is None:
            return ErrorCode.UNMATCHED_TYPE
        old = self.now()
        self.offset = new - self.clock()
        self.objects.clock_set(old, new)
        return ErrorCode.OK

    def _set_power_limit(self, value: Any) -> ErrorCode:
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_WATTS:
            return ErrorCode.UNMATCHED_TYPE
        self.objects.set_power_limit(value, self.now())
        return ErrorCode.OK

    def onPostWrite(self, args: Any) -> None:
        pass

    def onPreGet(self, args: Any) -> None:
        pass

    def onPostGet(self, args: Any) -> None:
        pass

    def onConnected(self, connectionInfo: Any) -> None:
        pass

    def onInvalidConnection(self, connectionInfo: Any) -> None:
        pass

    def onDisconnected(self, connectionInfo: Any) -> None:
        pass

    def onFindObject(self, objectType: Any, sn: int, ln: str) -> None:
        return None

    # ------------------------------------------------------------ bytes in, bytes out

    def answer(self, data: bytes) -> bytes:
        """The reply to one chunk of the TCP stream (empty while a wrapper frame is incomplete). First the meter
        file's changes by others (``mita meter`` on the same file: :meth:`MeterObjects.catch_up`), then the model's
        values into the objects."""
        with self.objects.locked():  # mita meter on the same file waits, or is waited for
            now = self.now()
            self.objects.catch_up(now)
            self.objects.refresh(now)
            reply = shims.ServerReply(bytearray(data))
            self.handleRequest(reply)
        return bytes(reply.reply or b"")


def parse_date_time(value: Any) -> dt.datetime | None:
    """A COSEM date-time octet-string as the meter's local time (deviation and status ignored: the sim's clock is
    local); None if it is not one, or leaves the date or time unspecified."""
    if not isinstance(value, bytes | bytearray) or len(value) != DATE_TIME_OCTETS:
        return None
    year = int.from_bytes(value[0:2], "big")
    month, day, _, hour, minute, second = value[2:8]
    if NOT_SPECIFIED in (month, day, hour, minute, second) or year == 0xFFFF:
        return None
    try:
        return dt.datetime(year, month, day, hour, minute, second)
    except ValueError:
        return None


async def serve(
    server: MeterServer,
    host: str,
    port: int,
    idle_s: float = 60.0,
    connections: set[asyncio.Task[Any]] | None = None,
) -> asyncio.Server:
    """Listen on ``host:port``; each connection is one association, served to its end. The meter powers up (its
    standard event log's first row). ``connections``, if given, holds the task of every open connection, so that
    a caller stopping many meters can cancel them at once instead of waiting for each to go idle."""
    lock = asyncio.Lock()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if connections is not None and task is not None:
            connections.add(task)
        try:
            async with lock:
                server.reset()
                while True:
                    try:
                        data = await asyncio.wait_for(reader.read(65536), idle_s)
                    except TimeoutError:
                        break
                    if not data:
                        break
                    reply = server.answer(data)
                    if reply:
                        writer.write(reply)
                        await writer.drain()
                server.reset()
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            # the listener is shutting down: end quietly (Python 3.11's stream callback logs a cancelled handler)
            pass
        finally:
            if connections is not None and task is not None:
                connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await writer.wait_closed()

    listening = await asyncio.start_server(connection, host, port)
    server.objects.power_up(server.now())
    return listening
