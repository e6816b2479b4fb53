"""The head-end end of the interop tests: dlms-cosem 21.3.2 (MIT), a DLMS client independent of gurux.

dlms-cosem cannot decode a bit-string (``NotImplementedError`` in its A-XDR decoder), so the token gateway's
``token_status`` (structure {enum, bit-string}) is parsed by hand in :func:`token_status`. It lives here, in the
test helper, until the head-end (issue 12 item 2) has its own codec module, where it should move.

Against the gurux server, ``DlmsClient.session()`` is not used: its release fails on gurux's malformed RLRE
(docs/notes/dlms-sim.md), so a session here is associate, work, then drop the TCP connection.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dlms_cosem import cosem, dlms_data, utils
from dlms_cosem import enumerations as en
from dlms_cosem.clients.dlms_client import DlmsClient

TOKEN_GATEWAY = cosem.Obis.from_string("0.0.19.40.0.255")
DISCONNECT_CONTROL = cosem.Obis.from_string("0.0.96.3.10.255")
CREDIT = cosem.Obis.from_string("0.0.19.10.0.255")
ACCOUNT = cosem.Obis.from_string("0.0.19.0.0.255")
ENERGY = cosem.Obis.from_string("1.0.1.8.0.255")
WATER = cosem.Obis.from_string("8.0.1.0.0.255")
CLOCK = cosem.Obis.from_string("0.0.1.0.0.255")


@contextmanager
def session(port: int, secret: bytes | None = None) -> Iterator[DlmsClient]:
    """An association: management (client 1, LLS) with ``secret``, else public (client 16, no security)."""
    if secret is None:
        client = DlmsClient.with_tcp_transport("127.0.0.1", port, 16, 1, timeout=5)
    else:
        client = DlmsClient.with_tcp_transport(
            "127.0.0.1", port, 1, 1, authentication_method=en.AuthenticationMechanism.LLS, password=secret, timeout=5
        )
    client.connect()
    try:
        client.associate()
        yield client
    finally:
        client.disconnect()


def enter(client: DlmsClient, token: bytes) -> None:
    method = cosem.CosemMethod(en.CosemInterface.TOKEN_GATEWAY, TOKEN_GATEWAY, 1)
    client.action(method, dlms_data.OctetStringData(token).to_bytes())


def switch(client: DlmsClient, closed: bool) -> None:
    method = cosem.CosemMethod(en.CosemInterface.DISCONNECT_CONTROL, DISCONNECT_CONTROL, 2 if closed else 1)
    client.action(method, dlms_data.IntegerData(0).to_bytes())


def get(client: DlmsClient, interface: en.CosemInterface, obis: cosem.Obis, attribute: int) -> Any:
    """An attribute's value, decoded by dlms-cosem (not for bit-strings: see :func:`token_status`)."""
    raw = client.get(cosem.CosemAttribute(interface, obis, attribute))
    return utils.parse_as_dlms_data(raw)


def token_status(client: DlmsClient) -> tuple[int, str]:
    """Attribute 6 of the token gateway: (status code, data bit-string as '0'/'1')."""
    raw = client.get(cosem.CosemAttribute(en.CosemInterface.TOKEN_GATEWAY, TOKEN_GATEWAY, 6))
    return parse_token_status(raw)


def parse_token_status(raw: bytes) -> tuple[int, str]:
    """A-XDR ``structure(2) {enum, bit-string}``: 02 02 16 <code> 04 <length in bits> <octets>."""
    if len(raw) < 6 or raw[:3] != b"\x02\x02\x16" or raw[4] != 0x04:
        raise ValueError(f"not a token_status structure: {raw.hex()}")
    code, pos = raw[3], 5
    bits = raw[pos]
    pos += 1
    if bits & 0x80:  # A-XDR long-form length: the low bits say how many length octets follow
        size = bits & 0x7F
        bits = int.from_bytes(raw[pos : pos + size], "big")
        pos += size
    octets = raw[pos : pos + (bits + 7) // 8]
    if len(octets) != (bits + 7) // 8 or pos + len(octets) != len(raw):
        raise ValueError(f"token_status bit-string has the wrong length: {raw.hex()}")
    text = "".join(f"{b:08b}" for b in octets)[:bits]
    return code, text
