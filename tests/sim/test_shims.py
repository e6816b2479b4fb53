"""The canary for mita.sim.shims: the gurux-dlms code the shims patch or avoid is exactly the code they were written
for, and each shim still does what it is for. An upgrade that changes one fails here first: re-check that shim
(drop it if upstream fixed the bug), then update the hash."""

from __future__ import annotations

from importlib.metadata import version
from types import SimpleNamespace

import pytest
from gurux_dlms import GXDLMSServer, ValueEventArgs
from gurux_dlms.GXDLMSLNParameters import GXDLMSLNParameters

from mita.sim import shims

#: The SHA-256 (first 16 hex digits) of the source the shims were written against, gurux-dlms 1.0.203.
PINNED = {
    "GXServerReply": "3125a00fa5a7427a",
    "GXDLMSServer.handleRequest": "cbba2c7eb715ff0a",
    "GXDLMSServer.initialize": "a59f5580943275de",
    "GXDLMSLNCommandHandler.getRequestNormal": "cd8e5542313b33cc",
    "GXDLMSLNCommandHandler.handleMethodRequest": "6e69ecdf1699cded",
    "GXDLMSLNCommandHandler.handleSetRequestNormal": "3cbb90d399f57413",
    "GXDLMSLNParameters": "571c4c782e4e14ca",
    "ValueEventArgs.__init__": "751625c3239ee354",
}


def test_the_installed_gurux_is_the_pinned_one() -> None:
    assert version("gurux-dlms") == shims.VERSION


@pytest.mark.parametrize("name", sorted(PINNED))
def test_the_patched_library_code_has_not_changed(name: str) -> None:
    assert shims.source_hash(shims.WATCHED[name]) == PINNED[name], f"{name} changed: re-check its shim"


def test_every_watched_function_is_pinned() -> None:
    assert set(shims.WATCHED) == set(PINNED)


def test_the_shims_fill_what_the_library_lacks() -> None:
    shims.apply()
    shims.apply()  # idempotent
    e = ValueEventArgs(SimpleNamespace(settings=None), None, 1, 0, None)
    assert list(e) == [e]  # bug 3: one event as a one-item list
    e.skipMaxPduSize = True
    assert e.isSkipMaxPduSize is True  # bug 5
    assert hasattr(GXDLMSServer, "notifyRead")  # bug 4
    reply = shims.ServerReply(bytearray(b"\x00"))
    reply.setReply(b"\x01")
    reply.setCount(3)
    assert (reply.reply, reply.getCount(), reply.getConnectionInfo()) == (b"\x01", 3, None)  # bug 1
    params = GXDLMSLNParameters(SimpleNamespace(blockIndex=0, blockNumberAck=0, count=2, index=1), 1, 0, 1, None,
                                None, 0)  # fmt: skip
    assert params.isMultipleBlocks() is True  # bug 8
    params.setStatus(3)
    assert params.status == 3


def test_the_bugs_are_still_there_unpatched() -> None:
    """If upstream fixes one, this fails: the shim can go."""
    from gurux_dlms import GXServerReply

    assert not hasattr(GXServerReply, "setReply")  # bug 1
    assert "onPreAction(list(e))" in shims.inspect.getsource(
        shims.WATCHED["GXDLMSLNCommandHandler.handleMethodRequest"]
    )
    assert "server.notifyRead()" in shims.inspect.getsource(shims.WATCHED["GXDLMSLNCommandHandler.getRequestNormal"])
    set_handler = shims.inspect.getsource(shims.WATCHED["GXDLMSLNCommandHandler.handleSetRequestNormal"])
    assert "p.isMultipleBlocks()" in set_handler and "p.setStatus(" in set_handler  # bug 8: the calls...
    params = shims.inspect.getsource(GXDLMSLNParameters)
    assert "def isMultipleBlocks" not in params and "def setStatus" not in params  # ...of methods it lacks


def test_another_gurux_version_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shims, "_applied", False)
    monkeypatch.setattr(shims, "VERSION", "0.0.0")
    with pytest.raises(RuntimeError, match="re-check"):
        shims.apply()
