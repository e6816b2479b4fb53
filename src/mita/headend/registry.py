"""The device registry: which meters are connected, where they answer, and their management secret.

A meter is reached one of two ways (``transport``): over DLMS/COSEM at its own address (``host``, ``port``, the
client and server addresses, the LLS secret, how its gateway takes tokens), or over MQTT (``mqtt``: an MQTT-native
meter on the utility's broker; ``host`` and ``port`` are that broker's, shown to operators, while the head-end
publishes through the one broker of ``MITA_MQTT_URL``; no secret: the broker's own authentication and ACLs guard
the meter's topics).

Registering an endpoint for an existing meter changes nothing about its keys, TIDs or history, and removing it
returns the meter to keypad-only delivery; commands already queued then fail as ``not_connected`` when their turn
comes. The LLS secret is sealed under the master key, bound to the meter's number (so a sealed secret copied onto
another meter's row does not open), and is read only to open an association: never listed, logged or answered.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Connection, Engine, delete, insert, select, update

from mita import sts
from mita.sealing import seal, unseal
from mita.vend.audit import Actor, write_audit
from mita.vend.errors import VendError
from mita.vend.lifecycles import TokenEncoding, Transport
from mita.vend.limits import HOST
from mita.vend.schema import meter_endpoints, meters

from .link import Endpoint

#: The public client's address (no security, reading only): used for a meter registered without a secret.
PUBLIC_CLIENT = 16
#: LLS secrets are octet strings of 1 to 32 octets.
SECRET_OCTETS = range(1, 33)


def _context(drn: str) -> str:
    return f"mita-lls-secret:{drn}"


def _meter_id(conn: Connection, drn: str) -> int:
    number = sts.MeterNumber.parse(drn).drn
    found = conn.execute(select(meters.c.id).where(meters.c.drn == number)).scalar()
    if found is None:
        raise VendError("not_found", f"no meter {number}")
    return int(found)


def check(
    host: str, port: int, secret: bytes | None, encoding: str, client: int, server: int,
    transport: str = Transport.DLMS.value,
) -> None:  # fmt: skip
    """Refuse an endpoint no meter could have, before anything is written."""
    if transport not in {t.value for t in Transport}:
        raise VendError("invalid_request", "transport is dlms or mqtt")
    if transport == Transport.MQTT and secret is not None:
        raise VendError("invalid_request", "an MQTT meter has no LLS secret (the broker authenticates it)")
    if not host or len(host) > HOST or any(c.isspace() for c in host):
        raise VendError("invalid_request", f"host is a name or an address of 1 to {HOST} characters, no spaces")
    if not 1 <= port <= 65535:
        raise VendError("invalid_request", f"port is 1..65535 (got {port})")
    if secret is not None and len(secret) not in SECRET_OCTETS:
        raise VendError("invalid_request", "an LLS secret is 1 to 32 octets")
    if encoding not in {e.value for e in TokenEncoding}:
        raise VendError("invalid_request", "token_encoding is bcd or ascii")
    if not 1 <= client <= 127 or not 1 <= server <= 16383:
        raise VendError("invalid_request", "client is 1..127 and server 1..16383 (DLMS addresses)")


def register(
    engine: Engine,
    actor: Actor,
    drn: str,
    *,
    host: str,
    port: int,
    secret: bytes | None,
    at: dt.datetime,
    token_encoding: str = TokenEncoding.BCD.value,
    client: int = 1,
    server: int = 1,
    transport: str = Transport.DLMS.value,
) -> dict[str, Any]:
    """Connect a meter (or change its endpoint): audited; the endpoint as :func:`describe` shows it."""
    check(host, port, secret, token_encoding, client, server, transport)
    with engine.begin() as conn:
        meter_id = _register_in(
            conn, actor, drn, host=host, port=port, secret=secret, at=at, token_encoding=token_encoding,
            client=client, server=server, transport=transport,
        )  # fmt: skip
        endpoint = _describe(conn, meter_id, sts.MeterNumber.parse(drn).drn)
        assert endpoint is not None  # written just above, in this transaction
        return endpoint


def unregister(engine: Engine, actor: Actor, drn: str, at: dt.datetime) -> bool:
    """Return a meter to keypad-only delivery; False if it was not connected."""
    with engine.begin() as conn:
        meter_id = _meter_id(conn, drn)
        gone = conn.execute(delete(meter_endpoints).where(meter_endpoints.c.meter_id == meter_id)).rowcount
        if gone:
            write_audit(conn, actor, at, "meter_disconnected", "meter", sts.MeterNumber.parse(drn).drn)
        return bool(gone)


def describe(engine: Engine, drn: str) -> dict[str, Any] | None:
    """A meter's endpoint as the API and CLI show it (whether it has a secret, never the secret); None if the
    meter is keypad-only. ``transport`` says how it is reached (dlms or mqtt)."""
    with engine.connect() as conn:
        return _describe(conn, _meter_id(conn, drn), sts.MeterNumber.parse(drn).drn)


def _describe(conn: Connection, meter_id: int, drn: str) -> dict[str, Any] | None:
    c = meter_endpoints.c
    row = conn.execute(select(meter_endpoints).where(c.meter_id == meter_id)).first()
    if row is None:
        return None
    shown = {
        "meter": drn,
        "host": row.host,
        "port": row.port,
        "client": row.client,
        "server": row.server,
        "token_encoding": row.token_encoding,
        "secret": row.secret is not None,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "transport": row.transport,
    }
    return shown


#: What :func:`reach` reads of an endpoint, for a caller that selects it in its own statement (the head-end's
#: sender reads it with the command it runs).
REACH = (
    meter_endpoints.c.host,
    meter_endpoints.c.port,
    meter_endpoints.c.client,
    meter_endpoints.c.server,
    meter_endpoints.c.token_encoding,
    meter_endpoints.c.secret,
    meter_endpoints.c.transport,
)


def endpoint(conn: Connection, meter_id: int, drn: str, timeout: float) -> tuple[Endpoint, str] | None:
    """How to reach a meter and how its gateway takes tokens; None if the meter is not connected."""
    row = conn.execute(select(*REACH).where(meter_endpoints.c.meter_id == meter_id)).first()
    return None if row is None else reach(row, drn, timeout)


def reach(row: Any, drn: str, timeout: float) -> tuple[Endpoint, str]:
    """An endpoint row (:data:`REACH`) as the link takes it, its secret unsealed (only here).

    The association ends with its TCP connection, without RLRQ: in the TCP profile (IEC 62056-47) closing the
    transport releases the association, a release costs the meter a round trip, and gurux's RLRE is malformed.
    """
    secret = None if row.secret is None else unseal(row.secret, _context(drn))
    client = row.client if secret is not None else PUBLIC_CLIENT
    reach = Endpoint(
        row.host, row.port, secret=secret, client=client, server=row.server, timeout=timeout, release=False
    )
    return reach, str(row.token_encoding)


def any_mqtt(engine: Engine) -> bool:
    """Whether any meter is reached over MQTT (``mita worker`` then listens for acknowledgements)."""
    with engine.connect() as conn:
        found = conn.execute(
            select(meter_endpoints.c.meter_id).where(meter_endpoints.c.transport == Transport.MQTT.value).limit(1)
        ).first()
    return found is not None


def register_many(engine: Engine, actor: Actor, endpoints: list[dict[str, Any]], at: dt.datetime) -> int:
    """Connect many meters at once (``mita sim fleet --register``): for each mapping of :func:`register`'s keyword
    arguments plus ``drn``, what :func:`register` does (the same rows, the same audit entry per meter), but in one
    transaction, all or none: one commit, not one per meter (1,000 meters, quiet machine: SQLite 0.6 s instead of
    1.3 s, PostgreSQL 1.2 s instead of 1.9 s; the rest is statement building and sealing, per meter).
    Every endpoint is checked before anything is written; a meter the database does not hold is ``not_found``."""
    for e in endpoints:
        check(
            e["host"], e["port"], e.get("secret"), e.get("token_encoding", TokenEncoding.BCD.value),
            e.get("client", 1), e.get("server", 1), e.get("transport", Transport.DLMS.value),
        )  # fmt: skip
    with engine.begin() as conn:
        for e in endpoints:
            _register_in(conn, actor, at=at, **e)
    return len(endpoints)


def _register_in(
    conn: Connection,
    actor: Actor,
    drn: str,
    *,
    host: str,
    port: int,
    secret: bytes | None,
    at: dt.datetime,
    token_encoding: str = TokenEncoding.BCD.value,
    client: int = 1,
    server: int = 1,
    transport: str = Transport.DLMS.value,
) -> int:
    """:func:`register`'s writes inside the caller's transaction (checked already); the meter's id."""
    meter_id = _meter_id(conn, drn)
    number = sts.MeterNumber.parse(drn).drn
    values = {
        "host": host,
        "port": port,
        "client": client,
        "server": server,
        "token_encoding": token_encoding,
        "transport": transport,
        "secret": None if secret is None else seal(secret, _context(number)),
        "updated_at": at,
    }
    c = meter_endpoints.c
    if conn.execute(select(c.meter_id).where(c.meter_id == meter_id)).first() is None:
        conn.execute(insert(meter_endpoints).values(meter_id=meter_id, created_at=at, **values))
        action = "meter_connected"
    else:
        conn.execute(update(meter_endpoints).where(c.meter_id == meter_id).values(**values))
        action = "meter_endpoint_changed"
    shown = {k: v for k, v in values.items() if k not in ("secret", "updated_at")}
    write_audit(conn, actor, at, action, "meter", number, **shown, secret=secret is not None)
    return meter_id
