"""The console's people: operators with a password, and their sessions.

An operator is a person with a name and a password; what they may do is the role of the API key made with them
(``console:<name>``, its plaintext thrown away at once). So the console calls the same services as the API under
a :class:`~.callers.Caller` with that key's id and role, its audit entries name the person, and revoking the key
(``mita keys revoke``) locks them out at their next request.

Passwords are hashed with scrypt (``cryptography``; n=2^14, r=8, p=1, 16-byte salt: ~50 ms a check here).
Sessions are random 256-bit tokens; the database keeps their SHA-256 only, with a CSRF token of their own, an idle
limit and an absolute one. After ``LOCK_AFTER`` wrong passwords in a row a name is locked for ``LOCK_FOR``; an
unknown name, a wrong password, a locked name and a revoked key all get the same answer, ``login_failed``.

| limit | value |
|---|---|
| idle session | ``IDLE`` (30 min): a utility's shared counter PC must not stay signed in |
| session, at most | ``ABSOLUTE`` (12 h: one shift) |
| wrong passwords before a lock | ``LOCK_AFTER`` (5) |
| lock | ``LOCK_FOR`` (5 min) |
| password | ``MIN_PASSWORD`` (10) to ``MAX_PASSWORD`` (200) characters |
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.kdf.scrypt import Scrypt
from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from . import limits
from .apikeys import hash_key
from .audit import write_audit
from .callers import Caller, local_now
from .errors import VendError
from .fields import text
from .lifecycles import Role
from .schema import api_keys, console_sessions, operators

IDLE = dt.timedelta(minutes=30)
ABSOLUTE = dt.timedelta(hours=12)
SEEN_EVERY = dt.timedelta(minutes=1)  # a session's seen_at is written at most this often
LOCK_AFTER = 5
LOCK_FOR = dt.timedelta(minutes=5)
MIN_PASSWORD = 10
MAX_PASSWORD = 200
CONSOLE_ROLES = (Role.ADMIN.value, Role.OPERATOR.value)  # a vendor's till works through the API, not the console
KEY_PREFIX = "console:"

_N, _R, _P, _SALT = 2**14, 8, 1, 16
FAILED = "the name or the password is wrong, or the account is locked for a few minutes"


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``scrypt$n$r$p$salt$hash`` (base64): the parameters travel with the hash, so they can be raised later."""
    salt = salt or secrets.token_bytes(_SALT)
    digest = Scrypt(salt=salt, length=32, n=_N, r=_R, p=_P).derive(password.encode())
    return f"scrypt${_N}${_R}${_P}${_b64(salt)}${_b64(digest)}"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def check_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        got = Scrypt(salt=base64.b64decode(salt), length=32, n=int(n), r=int(r), p=int(p)).derive(password.encode())
    except ValueError:
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


_DUMMY = hash_password("not a password of anyone's")  # an unknown name costs what a wrong password costs


def check_new_password(password: str) -> None:
    if not MIN_PASSWORD <= len(password) <= MAX_PASSWORD:
        raise VendError(
            "invalid_password", f"a password has {MIN_PASSWORD} to {MAX_PASSWORD} characters (got {len(password)})"
        )


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    """A signed-in operator: who they are to the services, their session's CSRF token, when it ends."""

    caller: Caller
    operator: str
    csrf: str
    expires_at: dt.datetime


class Operators:
    """Accounts and sessions of the console's operators."""

    def __init__(self, engine: Engine, clock: Callable[[], dt.datetime] = local_now) -> None:
        self.engine = engine
        self.clock = clock

    def create(self, caller: Caller, name: str, role: str, password: str) -> dict[str, Any]:
        """A new operator (admin only) and the API key the console acts with for them."""
        caller.require(Role.ADMIN)
        text(name, "name", limits.NAME - len(KEY_PREFIX))
        if role not in CONSOLE_ROLES:
            raise VendError("invalid_role", f"an operator's role is one of {', '.join(CONSOLE_ROLES)}")
        check_new_password(password)
        at = self.clock()
        plaintext = secrets.token_urlsafe(32)  # never shown, never stored: the console holds no key
        try:
            with self.engine.begin() as conn:
                key_id = conn.execute(
                    insert(api_keys).values(
                        name=KEY_PREFIX + name, role=role, key_hash=hash_key(plaintext), key_last4=None, created_at=at
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
                op_id = conn.execute(
                    insert(operators).values(
                        name=name, password_hash=hash_password(password), api_key_id=key_id, failures=0, created_at=at
                    )
                ).inserted_primary_key[0]  # type: ignore[index]
                write_audit(conn, caller, at, "create_operator", "operator", op_id, name=name, role=role)
        except IntegrityError:
            raise VendError("conflict", f"an operator named {name!r} exists") from None
        return {"id": op_id, "name": name, "role": role, "api_key_id": key_id, "created_at": at}

    def set_password(self, caller: Caller, name: str, password: str) -> None:
        """A new password (admin only); the operator's sessions end."""
        caller.require(Role.ADMIN)
        check_new_password(password)
        with self.engine.begin() as conn:
            op_id = conn.execute(select(operators.c.id).where(operators.c.name == name)).scalar()
            if op_id is None:
                raise VendError("not_found", f"no operator named {name!r}")
            conn.execute(
                update(operators)
                .where(operators.c.id == op_id)
                .values(password_hash=hash_password(password), failures=0, locked_until=None)
            )
            conn.execute(delete(console_sessions).where(console_sessions.c.operator_id == op_id))
            write_audit(conn, caller, self.clock(), "set_operator_password", "operator", op_id, name=name)

    def list(self) -> list[dict[str, Any]]:
        query = (
            select(
                operators.c.id, operators.c.name, api_keys.c.role, operators.c.created_at,
                operators.c.last_login_at, api_keys.c.revoked_at, operators.c.locked_until,
            )
            .join(api_keys, api_keys.c.id == operators.c.api_key_id)
            .order_by(operators.c.name)
        )  # fmt: skip
        with self.engine.connect() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def login(self, name: str, password: str) -> tuple[str, Session]:
        """A new session's token (for the cookie) and the session; ``login_failed`` otherwise, the same for every
        reason. Every attempt is audited, with the name as typed (never the password)."""
        now = self.clock()
        name = name.strip()[: limits.NAME]
        with self.engine.connect() as conn:
            row = conn.execute(
                select(operators, api_keys.c.role, api_keys.c.revoked_at, api_keys.c.name.label("key_name"))
                .join(api_keys, api_keys.c.id == operators.c.api_key_id)
                .where(operators.c.name == name)
            ).first()
        good = check_password(password, row.password_hash if row is not None else _DUMMY)
        usable = (
            row is not None
            and row.revoked_at is None
            and row.role in CONSOLE_ROLES
            and (row.locked_until is None or row.locked_until <= now)
        )
        actor = Caller(None, f"{KEY_PREFIX}{name}", "operator")
        if row is None or not usable or not good:
            with self.engine.begin() as conn:  # committed before the refusal is raised: the count and the audit stay
                if row is not None and not good and usable:
                    failures = row.failures + 1
                    locked = now + LOCK_FOR if failures >= LOCK_AFTER else None
                    conn.execute(
                        update(operators)
                        .where(operators.c.id == row.id)
                        .values(failures=0 if locked else failures, locked_until=locked)
                    )
                write_audit(conn, actor, now, "login_failed", "operator", row.id if row is not None else name)
            raise VendError("login_failed", FAILED)
        token, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        expires = now + IDLE
        with self.engine.begin() as conn:
            conn.execute(
                insert(console_sessions).values(
                    token_hash=_digest(token), operator_id=row.id, csrf=csrf, created_at=now, seen_at=now,
                    expires_at=expires,
                )
            )  # fmt: skip
            conn.execute(
                update(operators)
                .where(operators.c.id == row.id)
                .values(failures=0, locked_until=None, last_login_at=now)
            )
            write_audit(conn, actor, now, "login", "operator", row.id)
        return token, Session(Caller(row.api_key_id, row.key_name, row.role), row.name, csrf, expires)

    def session(self, token: str | None) -> Session | None:
        """The live session of a cookie, its idle time renewed (written at most once a minute); None when there is
        none, it ended, or its operator's key was revoked."""
        if not token or len(token) > 100:
            return None
        now = self.clock()
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    console_sessions, operators.c.name, operators.c.api_key_id, api_keys.c.role,
                    api_keys.c.revoked_at, api_keys.c.name.label("key_name"),
                )
                .join(operators, operators.c.id == console_sessions.c.operator_id)
                .join(api_keys, api_keys.c.id == operators.c.api_key_id)
                .where(console_sessions.c.token_hash == _digest(token))
            ).first()  # fmt: skip
        if row is None or row.expires_at <= now or row.revoked_at is not None or row.role not in CONSOLE_ROLES:
            return None
        expires = row.expires_at
        if now - row.seen_at >= SEEN_EVERY:
            expires = min(now + IDLE, row.created_at + ABSOLUTE)
            with self.engine.begin() as conn:
                conn.execute(
                    update(console_sessions)
                    .where(console_sessions.c.token_hash == row.token_hash)
                    .values(seen_at=now, expires_at=expires)
                )
        return Session(Caller(row.api_key_id, row.key_name, row.role), row.name, row.csrf, expires)

    def logout(self, token: str | None) -> None:
        """The session ends (and the sessions that ended by themselves are swept away with it)."""
        now = self.clock()
        with self.engine.begin() as conn:
            if token:
                ended = conn.execute(
                    select(operators.c.id, operators.c.name)
                    .join(console_sessions, console_sessions.c.operator_id == operators.c.id)
                    .where(console_sessions.c.token_hash == _digest(token))
                ).first()
                if ended is not None:
                    conn.execute(delete(console_sessions).where(console_sessions.c.token_hash == _digest(token)))
                    write_audit(
                        conn, Caller(None, KEY_PREFIX + ended.name, "operator"), now, "logout", "operator", ended.id
                    )
            conn.execute(delete(console_sessions).where(console_sessions.c.expires_at <= now))
