"""The console's operators and sessions (mita.vend.operators), on both databases, on a clock the test moves:
passwords hashed and checked, the same answer for every failed sign-in, the lock after repeated wrong passwords,
idle and absolute session limits, a revoked key or a new password ending sessions, and the audit of each."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import select, update

from mita.vend import database
from mita.vend.callers import Caller
from mita.vend.errors import VendError
from mita.vend.operators import (
    ABSOLUTE,
    IDLE,
    LOCK_AFTER,
    LOCK_FOR,
    Operators,
    check_password,
    hash_password,
)
from mita.vend.registry import SYSTEM
from mita.vend.schema import api_keys, audit, console_sessions, operators

PASSWORD = "a long enough secret"


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 12, 4, 9, 0)

    def __call__(self) -> dt.datetime:
        return self.now

    def move(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ops(url: str, clock: Clock) -> Iterator[Operators]:
    database.upgrade(url)
    engine = database.make_engine(url, pool_size=2)
    try:
        made = Operators(engine, clock)
        made.create(SYSTEM, "alice", "admin", PASSWORD)
        yield made
    finally:
        engine.dispose()


def test_a_password_is_stored_as_scrypt_and_checked() -> None:
    stored = hash_password(PASSWORD)
    assert stored.startswith("scrypt$16384$8$1$") and PASSWORD not in stored
    assert check_password(PASSWORD, stored)
    assert not check_password(PASSWORD + "x", stored)
    assert not check_password(PASSWORD, "bcrypt$whatever") and not check_password(PASSWORD, "garbage")
    assert hash_password(PASSWORD) != stored  # a salt of its own each time


def test_sign_in_gives_a_session_acting_with_the_operators_own_key(ops: Operators) -> None:
    token, session = ops.login("alice", PASSWORD)
    assert session.operator == "alice" and session.caller.role == "admin"
    assert session.caller.name == "console:alice" and session.caller.api_key_id is not None
    again = ops.session(token)
    assert again is not None and again.caller == session.caller and again.csrf == session.csrf
    with ops.engine.connect() as conn:
        stored = conn.execute(select(console_sessions.c.token_hash)).scalars().all()
        key = conn.execute(select(api_keys).where(api_keys.c.id == session.caller.api_key_id)).one()
    assert token not in stored and len(stored) == 1  # only its SHA-256
    assert key.name == "console:alice" and key.role == "admin" and key.revoked_at is None


@pytest.mark.parametrize("name, password", [("alice", "wrong password!"), ("nobody", PASSWORD), ("ALICE", PASSWORD)])
def test_every_failed_sign_in_gets_the_same_answer_and_is_audited(ops: Operators, name: str, password: str) -> None:
    with pytest.raises(VendError) as refused:
        ops.login(name, password)
    assert refused.value.code == "login_failed"
    assert password not in refused.value.message
    with ops.engine.connect() as conn:
        entry = conn.execute(select(audit).where(audit.c.action == "login_failed")).one()
    assert entry.actor == f"console:{name}" and password not in str(entry.detail)


def test_repeated_wrong_passwords_lock_the_name_for_a_while(ops: Operators, clock: Clock) -> None:
    for _ in range(LOCK_AFTER):
        with pytest.raises(VendError):
            ops.login("alice", "not the password")
    with pytest.raises(VendError) as locked:
        ops.login("alice", PASSWORD)  # the right password, but locked: the same answer
    assert locked.value.code == "login_failed"
    clock.move(seconds=LOCK_FOR.total_seconds() + 1)
    _, session = ops.login("alice", PASSWORD)
    assert session.operator == "alice"


def test_a_session_ends_when_idle_and_after_a_shift_at_most(ops: Operators, clock: Clock) -> None:
    token, _ = ops.login("alice", PASSWORD)
    clock.move(seconds=IDLE.total_seconds() - 60)
    assert ops.session(token) is not None  # used: its idle limit starts again
    clock.move(seconds=IDLE.total_seconds() - 60)
    assert ops.session(token) is not None
    clock.move(seconds=IDLE.total_seconds() + 1)
    assert ops.session(token) is None  # idle too long

    token, _ = ops.login("alice", PASSWORD)
    steps = int(ABSOLUTE / (IDLE / 2)) + 2
    alive = 0
    for _ in range(steps):
        clock.move(seconds=IDLE.total_seconds() / 2)
        alive += ops.session(token) is not None
    assert ops.session(token) is None and alive < steps  # in use all along, yet over after ABSOLUTE


def test_sign_out_a_revoked_key_and_a_new_password_each_end_the_session(ops: Operators, clock: Clock) -> None:
    token, _ = ops.login("alice", PASSWORD)
    ops.logout(token)
    assert ops.session(token) is None
    with ops.engine.connect() as conn:
        actions = conn.execute(select(audit.c.action).where(audit.c.actor == "console:alice")).scalars().all()
    assert actions == ["login", "logout"]

    token, session = ops.login("alice", PASSWORD)
    with ops.engine.begin() as conn:
        conn.execute(update(api_keys).where(api_keys.c.id == session.caller.api_key_id).values(revoked_at=clock()))
    assert ops.session(token) is None
    with pytest.raises(VendError):
        ops.login("alice", PASSWORD)  # revoked: locked out
    with ops.engine.begin() as conn:
        conn.execute(update(api_keys).where(api_keys.c.id == session.caller.api_key_id).values(revoked_at=None))

    token, _ = ops.login("alice", PASSWORD)
    ops.set_password(SYSTEM, "alice", "another long secret")
    assert ops.session(token) is None
    with pytest.raises(VendError):
        ops.login("alice", PASSWORD)
    assert ops.login("alice", "another long secret")[1].operator == "alice"


def test_only_an_admin_makes_operators_and_only_console_roles_with_fair_passwords(ops: Operators) -> None:
    operator = Caller(1, "console:olga", "operator")
    with pytest.raises(VendError) as refused:
        ops.create(operator, "mallory", "admin", PASSWORD)
    assert refused.value.code == "forbidden"
    with pytest.raises(VendError) as refused:
        ops.create(SYSTEM, "till", "vendor", PASSWORD)
    assert refused.value.code == "invalid_role"
    with pytest.raises(VendError) as refused:
        ops.create(SYSTEM, "bob", "operator", "short")
    assert refused.value.code == "invalid_password"
    with pytest.raises(VendError) as refused:
        ops.create(SYSTEM, "alice", "operator", PASSWORD)
    assert refused.value.code == "conflict"
    made = ops.create(SYSTEM, "bob", "operator", PASSWORD)
    assert made["role"] == "operator"
    listed = {row["name"]: row for row in ops.list()}
    assert set(listed) == {"alice", "bob"} and listed["bob"]["last_login_at"] is None
    assert "password_hash" not in listed["bob"]
    with ops.engine.connect() as conn:
        assert conn.execute(select(operators.c.password_hash).where(operators.c.name == "bob")).scalar() != PASSWORD
