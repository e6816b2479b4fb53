"""dlms-cosem 21.3.2 calls for the limiter, event log and fleet tests, used directly (not through dlms_client.py,
which moves to the head-end): associate, GET decoded, SET with its result, ACTION enter.

dlms-cosem cannot release an association with gurux (its RLRE is malformed: docs/notes/dlms-sim.md), so a session
drops the TCP connection instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dlms_cosem import cosem, dlms_data, utils
from dlms_cosem import enumerations as en
from dlms_cosem.clients.dlms_client import DlmsClient

IC = en.CosemInterface
TOKEN_GATEWAY = "0.0.19.40.0.255"
DISCONNECT_CONTROL = "0.0.96.3.10.255"
LIMITER = "0.0.17.0.0.255"
ACTIVE_POWER = "1.0.1.7.0.255"
CLOCK = "0.0.1.0.0.255"
STANDARD_LOG, FRAUD_LOG, DISCONNECTOR_LOG = "0.0.99.98.0.255", "0.0.99.98.1.255", "0.0.99.98.2.255"
TOKEN_LOG = "0.0.99.17.0.255"


@contextmanager
def session(port: int, secret: bytes | None = None, host: str = "127.0.0.1") -> Iterator[DlmsClient]:
    """Management (client 1, LLS) with ``secret``, else the public client (16, no security)."""
    if secret is None:
        client = DlmsClient.with_tcp_transport(host, port, 16, 1, timeout=5)
    else:
        client = DlmsClient.with_tcp_transport(
            host, port, 1, 1, authentication_method=en.AuthenticationMechanism.LLS, password=secret, timeout=5
        )
    client.connect()
    try:
        client.associate()
        yield client
    finally:
        client.disconnect()


def attribute(interface: en.CosemInterface, obis: str, index: int) -> cosem.CosemAttribute:
    return cosem.CosemAttribute(interface, cosem.Obis.from_string(obis), index)


def get(client: DlmsClient, interface: en.CosemInterface, obis: str, index: int) -> Any:
    return utils.parse_as_dlms_data(client.get(attribute(interface, obis, index)))


def set_(client: DlmsClient, interface: en.CosemInterface, obis: str, index: int, data: bytes) -> en.DataAccessResult:
    result: en.DataAccessResult = client.set(attribute(interface, obis, index), data).result
    return result


def enter(client: DlmsClient, token: bytes) -> None:
    method = cosem.CosemMethod(IC.TOKEN_GATEWAY, cosem.Obis.from_string(TOKEN_GATEWAY), 1)
    client.action(method, dlms_data.OctetStringData(token).to_bytes())


def switch(client: DlmsClient, closed: bool) -> None:
    method = cosem.CosemMethod(IC.DISCONNECT_CONTROL, cosem.Obis.from_string(DISCONNECT_CONTROL), 2 if closed else 1)
    client.action(method, dlms_data.IntegerData(0).to_bytes())


def status_code(client: DlmsClient) -> int:
    """token_status.status_code: A-XDR ``02 02 16 <code> 04 ...`` (the bit-string after it is not decoded)."""
    raw = client.get(attribute(IC.TOKEN_GATEWAY, TOKEN_GATEWAY, 6))
    assert raw[:3] == b"\x02\x02\x16", raw.hex()
    return raw[3]


def rows(client: DlmsClient, obis: str) -> list[list[Any]]:
    """A log's whole buffer (attr 2), decoded by dlms-cosem: one list per row."""
    return [list(row) for row in get(client, IC.PROFILE_GENERIC, obis, 2)]


def date_time(raw: bytes) -> tuple[int, ...]:
    """(year, month, day, hour, minute, second) of a COSEM date-time octet-string."""
    return (int.from_bytes(raw[0:2], "big"), raw[2], raw[3], raw[5], raw[6], raw[7])
