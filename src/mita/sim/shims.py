"""Every work-around for gurux-dlms's server path, in one place (research note ../shared/research/dlms.md §2.2).

gurux-dlms 1.0.203 is the only Python DLMS/COSEM server, and its server path does not run unpatched. Each shim
below names the bug it works around. :data:`WATCHED` lists the library functions whose code the shims depend on,
with a hash of their source: ``tests/sim/test_shims.py`` fails when an upgrade changes one of them, so the shim is
re-checked (and dropped, if upstream fixed the bug) instead of silently misbehaving. :func:`apply` is idempotent.
"""

from __future__ import annotations

import hashlib
import inspect
from typing import Any

import gurux_dlms
from gurux_dlms import GXDLMSServer, GXServerReply, ValueEventArgs
from gurux_dlms.GXDLMSLNCommandHandler import GXDLMSLNCommandHandler
from gurux_dlms.GXDLMSLNParameters import GXDLMSLNParameters

VERSION = "1.0.203"


_applied = False


def source_hash(obj: Any) -> str:
    """The short hash of a library function's or class's source, the canary of ``tests/sim/test_shims.py``."""
    return hashlib.sha256(inspect.getsource(obj).encode()).hexdigest()[:16]


#: The library code each shim depends on, by name: what the canary test hashes.
WATCHED: dict[str, Any] = {
    "GXServerReply": GXServerReply,
    "GXDLMSServer.handleRequest": GXDLMSServer.handleRequest,
    "GXDLMSServer.initialize": GXDLMSServer.initialize,
    "GXDLMSLNCommandHandler.getRequestNormal": GXDLMSLNCommandHandler.getRequestNormal,
    "GXDLMSLNCommandHandler.handleMethodRequest": GXDLMSLNCommandHandler.handleMethodRequest,
    "GXDLMSLNCommandHandler.handleSetRequestNormal": GXDLMSLNCommandHandler.handleSetRequestNormal,
    "GXDLMSLNParameters": GXDLMSLNParameters,
    "ValueEventArgs.__init__": ValueEventArgs.__init__,
}


class ServerReply(GXServerReply):  # type: ignore[misc]
    """Bug 1: ``GXDLMSServer.handleRequest``/``handleCommand`` call ``setReply``, ``getConnectionInfo``,
    ``getCount`` and ``setCount``, which ``GXServerReply`` does not define (AttributeError on every request)."""

    def setReply(self, value: Any) -> None:
        self.reply = value

    def getConnectionInfo(self) -> Any:
        return self.connectionInfo

    def getCount(self) -> int:
        return int(self.count)

    def setCount(self, value: int) -> None:
        self.count = value


def _iter_event(self: Any) -> Any:
    """Bug 3: ``handleMethodRequest`` calls ``server.onPreAction(list(e))`` on one ``ValueEventArgs``, which is not
    iterable, so every ACTION answered HARDWARE_FAULT. Iterating yields the event itself: a one-item list."""
    yield self


def _is_skip_max_pdu_size(self: Any) -> bool:
    """Bug 5: the association's object-list read (attribute 2) tests ``e.isSkipMaxPduSize`` (a method name in the
    short-name class, an attribute nowhere): alias the ``skipMaxPduSize`` field."""
    return bool(self.skipMaxPduSize)


def _notify_read(self: Any, *args: Any) -> None:
    """Bug 4: a plain GET calls the undefined ``server.notifyRead()``. Consequence: ``onPreRead`` is never called
    for a GET-normal, so :mod:`mita.sim.server` refreshes the dynamic values before each request instead."""


def _on_post_read(self: Any, *args: Any) -> None:
    """Bug 4 (second half): the same path calls ``server.onPostRead()`` with no argument, where the abstract
    method takes one (TypeError). Nothing to do after a read here."""


def _is_multiple_blocks(self: Any) -> bool:
    """Bug 8: ``GXDLMSLNCommandHandler.handleSetRequestNormal`` calls ``p.isMultipleBlocks()`` on every SET, and
    ``GXDLMSLNParameters`` has only the ``multipleBlocks`` field: every SET ended in an AttributeError, which the
    library answered hardware-fault (so no SET worked at all, not even the clock's)."""
    return bool(self.multipleBlocks)


def _set_status(self: Any, value: Any) -> None:
    """Bug 8 (second half): the same handler refuses a SET with ``p.setStatus(...)``, another method the
    parameters object lacks (it has the ``status`` field): a refusal also became hardware-fault."""
    self.status = value


def apply() -> None:
    """Patch the library once (bugs 3-5 and 8); bugs 1, 2 and 6 are handled by the caller (``ServerReply``,
    :func:`prefill_association`, no inactivity timeout set). Refuses any other gurux-dlms version."""
    global _applied
    if _applied:
        return
    version = getattr(gurux_dlms, "__version__", None) or _dist_version()
    if version != VERSION:
        raise RuntimeError(f"mita.sim's shims are for gurux-dlms {VERSION}, not {version}: re-check them")
    ValueEventArgs.__iter__ = _iter_event
    ValueEventArgs.isSkipMaxPduSize = property(_is_skip_max_pdu_size)
    GXDLMSServer.notifyRead = _notify_read
    GXDLMSServer.onPostRead = _on_post_read
    GXDLMSLNParameters.isMultipleBlocks = _is_multiple_blocks
    GXDLMSLNParameters.setStatus = _set_status
    _applied = True


def _dist_version() -> str:
    from importlib.metadata import version

    return version("gurux-dlms")


def prefill_association(association: Any, items: Any) -> None:
    """Bug 2: ``GXDLMSServer.initialize`` appends the whole item collection *as one element* to an empty
    association object list (a TypeError later). Filling the list first makes it skip that branch."""
    for item in items:
        association.objectList.append(item)


# Bug 7 (not patched, avoided; found by the dlms-cosem interop test): an ACTION refused by ``onGetMethodAccess``
# is answered without the return-parameters presence octet (``c7 01 <id> 03`` instead of ``... 03 00``), which a
# strict client cannot parse. mita.sim.server grants method access and refuses in ``onPreAction`` instead.
# Bug 6 (not patched, avoided): the inactivity-timeout branch of ``handleRequest`` does ``int(timedelta)``; the
# simulated meter has no HDLC or TCP-UDP setup object, so the timeout is never set.
# Bugs not worked around (see docs/notes/dlms-sim.md): server-side HLS (``int(e.parameters)`` in
# ``GXDLMSAssociationLogicalName.invoke``), ciphered AARE encoding, and a malformed RLRE (wrong length byte).
