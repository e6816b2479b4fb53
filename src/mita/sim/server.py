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
gets time passed in and tests control it.
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
from .objects import MeterObjects

log = logging.getLogger("mita.sim")

PUBLIC_CLIENT = 16
MANAGEMENT_CLIENT = 1
SERVER_ADDRESS = 1  # the management logical device
SECRET_ATTRIBUTE = 7  # association LN: the LLS secret


class MeterServer(GXDLMSServer):  # type: ignore[misc]
    """gurux's server callbacks, wired to one meter's objects."""

    def __init__(self, objects: MeterObjects, secret: bytes, clock: Callable[[], dt.datetime]) -> None:
        shims.apply()
        super().__init__(True, InterfaceType.WRAPPER)
        self.objects, self._secret, self.clock = objects, bytes(secret), clock
        self.association = GXDLMSAssociationLogicalName()
        items = [self.association, *objects.items]
        shims.prefill_association(self.association, items)
        for item in items:
            self.items.append(item)
        self.initialize()

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
        if arg.target is self.association and arg.index == SECRET_ATTRIBUTE:
            return int(AccessMode.NO_ACCESS)
        return int(AccessMode.READ)

    def onGetMethodAccess(self, arg: Any) -> int:
        """Always ACCESS: a method refused here gets a malformed ACTION response (shims bug 7), so the refusal is
        made in :meth:`onPreAction` instead, which the library encodes correctly."""
        return int(MethodAccessMode.ACCESS)

    # ------------------------------------------------------------ services

    def onPreAction(self, args: Any) -> None:
        """Token gateway and disconnect control have no server ``invoke`` in gurux: they are handled here, for the
        management client only; every other method call is refused (read-write denied)."""
        now = self.clock()
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
        pass

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
        """The reply to one chunk of the TCP stream (empty while a wrapper frame is incomplete)."""
        self.objects.refresh(self.clock())
        reply = shims.ServerReply(bytearray(data))
        self.handleRequest(reply)
        return bytes(reply.reply or b"")


async def serve(server: MeterServer, host: str, port: int, idle_s: float = 60.0) -> asyncio.Server:
    """Listen on ``host:port``; each connection is one association, served to its end."""
    lock = asyncio.Lock()

    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
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
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await writer.wait_closed()

    return await asyncio.start_server(connection, host, port)
