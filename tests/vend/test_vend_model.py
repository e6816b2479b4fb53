"""The vending service against a model of it, on random sequences of what a till, an operator and the clock do.

Hypothesis drives one meter's life: vends of random amounts, retries with the same Idempotency-Key (the same body,
or another one), reversals (in the window or not, once or twice), the clock moving on (across months too), and the
customer keying the tokens into the virtual meter. After every step the database must agree with what the model
says was sold: the same answer for a retry and nothing written; TIDs increasing in the order of issue; every
vend's ledger balanced and every revenue account the sum of the sales that stand; the vendor's balance what those
sales paid; a refusal typed and writing nothing; and the meter crediting exactly the units of the tokens keyed in.
Run on SQLite and on PostgreSQL (where the vend's writes are one statement)."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from mita.vend import database
from mita.vend.desk import Issued
from mita.vend.errors import VendError
from mita.vend.schema import vends
from vend_fixtures import CREDIT_LIMIT, DRN, PG_ADMIN_URL, World, account_totals, build_world, ledger_sums, row_counts

#: Refusals a vend may meet here, each writing nothing: too little money for a unit, the vendor's limit reached.
VEND_REFUSALS = {"amount_too_small", "credit_limit"}
WINDOW = dt.timedelta(hours=24)  # the service's default reversal window


@dataclass
class Sale:
    key: str
    body: dict[str, Any]
    answer: dict[str, Any]
    at: dt.datetime
    reversed: bool = False
    entered: bool = False

    @property
    def units(self) -> int:
        return sum(int(t["units"]) for t in self.answer["tokens"])


@dataclass
class Model:
    """What has been sold, in order of issue."""

    sales: list[Sale] = field(default_factory=list)
    keys: int = 0

    def standing(self) -> list[Sale]:
        return [s for s in self.sales if not s.reversed]


class VendingMachine(RuleBasedStateMachine):
    """One utility, one meter, one vendor and an operator; a fresh database for every sequence."""

    make_engine: Callable[[], tuple[Engine, Callable[[], None]]]
    #: Vends as the HTTP server makes them: on the event loop when it can (PostgreSQL, no vendor credit limit to
    #: charge, caches warm), in a thread otherwise; False: always the thread's way.
    on_the_loop = False

    def __init__(self) -> None:
        super().__init__()
        self.engine, self.drop = self.make_engine()
        self.w: World = build_world(self.engine, credit_limit=None if self.on_the_loop else CREDIT_LIMIT)
        self.model = Model()

    def sell(self, key: str, body: dict[str, Any]) -> Issued:
        if self.on_the_loop:
            issued = asyncio.run(self.w.svc.purchases.vend_async(self.w.vendor, key, body))
            if issued is not None:
                event("sold on the event loop")
                return issued
        return self.w.svc.vend(self.w.vendor, key, body)

    def teardown(self) -> None:
        self.engine.dispose()
        self.drop()

    # ------------------------------------------------------------------ helpers

    def unchanged(self, fn: Callable[[], Any], code: str | set[str]) -> str:
        """``fn`` refused with a typed error (one of ``code``) and nothing written."""
        counts, state, tid = row_counts(self.engine), self.w.state(), self.w.meter_row().last_tid
        try:
            fn()
        except VendError as exc:
            assert exc.code in ({code} if isinstance(code, str) else code), (exc.code, str(exc))
            event(f"refused: {exc.code}")
            assert (row_counts(self.engine), self.w.state(), self.w.meter_row().last_tid) == (counts, state, tid)
            return exc.code
        raise AssertionError(f"not refused: expected {code}")

    # ------------------------------------------------------------------ what happens

    @initialize()
    def nothing_sold_yet(self) -> None:
        assert row_counts(self.engine)["vends"] == 0

    @rule(amount=st.integers(min_value=50, max_value=40_000))
    def vend(self, amount: int) -> None:
        key = f"till-{self.model.keys}"
        self.model.keys += 1
        body = {"meter": DRN, "amount": amount}
        paid = sum(int(s.answer["receipt"]["paid"]) for s in self.model.standing())
        try:
            issued = self.sell(key, body)
        except VendError as exc:
            assert exc.code in VEND_REFUSALS, (exc.code, str(exc))
            event(f"vend refused: {exc.code}")
            if exc.code == "credit_limit":
                assert not self.on_the_loop
                assert paid + amount > CREDIT_LIMIT
            return  # nothing written: the invariants check it
        assert not issued.replayed
        last = max((int(t["tid"]) for s in self.model.sales for t in s.answer["tokens"]), default=-1)
        tids = [int(t["tid"]) for t in issued.body["tokens"]]
        assert tids and tids[0] > last and tids == sorted(set(tids)), (last, tids)  # new, increasing, distinct
        assert issued.body["receipt"]["paid"] == amount
        self.model.sales.append(Sale(key, body, issued.body, self.w.now[0]))

    @precondition(lambda self: bool(self.model.sales))
    @rule(data=st.data())
    def retry(self, data: st.DataObject) -> None:
        """A till that did not see the answer sends the same request again: the same answer, nothing new."""
        sale = data.draw(st.sampled_from(self.model.sales))
        if sale.reversed:
            self.unchanged(lambda: self.sell(sale.key, dict(sale.body)), "reversed")
            return
        counts = row_counts(self.engine)
        again = self.sell(sale.key, dict(sale.body))
        assert again.replayed and again.body == sale.answer
        assert row_counts(self.engine) == counts

    @precondition(lambda self: bool(self.model.sales))
    @rule(data=st.data(), more=st.integers(min_value=1, max_value=500))
    def reuse_a_key(self, data: st.DataObject, more: int) -> None:
        """The same key with another amount: a conflict, nothing written."""
        sale = data.draw(st.sampled_from(self.model.sales))
        other = {**sale.body, "amount": sale.body["amount"] + more}
        self.unchanged(lambda: self.sell(sale.key, other), "idempotency_conflict")

    @precondition(lambda self: bool(self.model.sales))
    @rule(data=st.data())
    def reverse(self, data: st.DataObject) -> None:
        sale = data.draw(st.sampled_from(self.model.sales))
        do = lambda: self.w.svc.reverse(self.w.operator, sale.answer["id"], "model")  # noqa: E731
        if sale.reversed:
            self.unchanged(do, "already_reversed")
        elif self.w.now[0] - sale.at > WINDOW:
            self.unchanged(do, "reversal_window_closed")
        else:
            assert do()["status"] == "reversed"
            sale.reversed = True
            nets = account_totals(self.engine, sale.answer["id"])
            owed = {a: n for a, n in nets.items() if a.endswith((":debt", ":carried")) and a.startswith("customer:")}
            assert {n for a, n in nets.items() if a not in owed} <= {0}  # the vend nets to nothing...
            assert sum(owed.values()) == 0  # ...but a leftover spent since, which the customer owes (from carried)
            event("reversed" + (", a spent leftover owed" if any(owed.values()) else ""))

    @rule(minutes=st.sampled_from([1, 7, 59, 60 * 5, 60 * 23, 60 * 25, 60 * 24 * 9, 60 * 24 * 31]))
    def time_passes(self, minutes: int) -> None:
        self.w.advance(minutes=minutes)

    @precondition(lambda self: any(not s.entered and not s.reversed for s in self.model.sales))
    @rule()
    def customer_keys_in_the_next_tokens(self) -> None:
        """The oldest sale whose tokens were not keyed in yet (the customer keys them in the order bought)."""
        sale = next(s for s in self.model.sales if not s.entered and not s.reversed)
        before = self.w.credit()
        assert set(self.w.enter(sale.answer)) == {"accept"}
        sale.entered = True
        event(f"keyed in: {len(sale.answer['tokens'])} token(s)")
        assert self.w.credit() == before + sale.units

    # ------------------------------------------------------------------ what must always hold

    @invariant()
    def one_vend_per_sale_and_the_last_tid(self) -> None:
        with self.engine.connect() as conn:
            rows = {r.id: r.status for r in conn.execute(select(vends.c.id, vends.c.status))}
        assert rows == {s.answer["id"]: "reversed" if s.reversed else "completed" for s in self.model.sales}
        tids = [int(t["tid"]) for s in self.model.sales for t in s.answer["tokens"]]
        if tids:
            assert self.w.meter_row().last_tid == tids[-1]

    @invariant()
    def the_books_balance(self) -> None:
        for debit, credit in ledger_sums(self.engine).values():
            assert debit == credit
        totals = account_totals(self.engine)
        standing = [s.answer["receipt"] for s in self.model.standing()]
        assert -totals.get("revenue:energy", 0) == sum(r["energy_charge"] for r in standing)
        assert -totals.get("tax:vat", 0) == sum(r["vat"] for r in standing)
        assert totals.get(f"vendor:{self.w.vendor.vendor_id}", 0) == sum(r["paid"] for r in standing)
        if not self.on_the_loop:  # a vendor's balance is kept where it has a credit limit
            assert self.w.vendor_row().balance == sum(r["paid"] for r in standing)
        customer = self.w.customer()
        assert min(customer.debt, customer.carried, customer.refund_balance) >= 0

    @invariant()
    def the_meter_has_what_was_keyed_in(self) -> None:
        assert self.w.credit() == sum(s.units for s in self.model.sales if s.entered)


# ---------------------------------------------------------------------------------------------- the databases


def _sqlite(folder: Path) -> Callable[[], tuple[Engine, Callable[[], None]]]:
    template = folder / "template.db"
    database.upgrade(f"sqlite:///{template}")
    made = iter(range(10**9))

    def make() -> tuple[Engine, Callable[[], None]]:
        path = folder / f"db-{next(made)}.db"
        shutil.copyfile(template, path)
        return database.make_engine(f"sqlite:///{path}"), lambda: None  # kept: the key-leak scan reads it

    return make


def _postgresql(admin: Engine, template: str) -> Callable[[], tuple[Engine, Callable[[], None]]]:
    def make() -> tuple[Engine, Callable[[], None]]:
        name = f"mita_model_{secrets.token_hex(6)}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        url = make_url(database.normalise_url(PG_ADMIN_URL)).set(database=name).render_as_string(hide_password=False)

        def drop() -> None:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

        return database.make_engine(url, pool_size=2), drop

    return make


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-loop"])
def engines(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[str, Callable[[], tuple[Engine, Callable[[], None]]]]]:
    if request.param == "sqlite":
        yield request.param, _sqlite(tmp_path)
        return
    admin = create_engine(database.normalise_url(PG_ADMIN_URL), isolation_level="AUTOCOMMIT", poolclass=NullPool)
    template = f"mita_model_t_{secrets.token_hex(5)}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{template}"'))
    try:
        url = make_url(database.normalise_url(PG_ADMIN_URL)).set(database=template)
        database.upgrade(url.render_as_string(hide_password=False))
        yield request.param, _postgresql(admin, template)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)'))
        admin.dispose()


def test_the_vending_service_agrees_with_its_model(
    engines: tuple[str, Callable[[], tuple[Engine, Callable[[], None]]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    kind, make = engines
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))

    class Machine(VendingMachine):
        make_engine = staticmethod(make)
        on_the_loop = kind == "postgresql-loop"

    examples = int(os.environ.get("MODEL_EXAMPLES", 0)) or (25 if kind == "sqlite" else 8)
    run_state_machine_as_test(
        Machine,
        settings=settings(
            max_examples=examples, stateful_step_count=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
        ),
    )
