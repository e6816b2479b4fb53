"""A utility set up for a run, and the processes that serve it.

The set-up goes through Mita's own registry (that is not what is checked); what the checker needs to know of it
(the API keys' ids, the meters, the customers' opening debts) is written to the history's ``setup`` record. The
vending key is the sample's published STS test key (``mita.vend.sample``): the checker derives decoder keys from
it by itself, and it is never written anywhere.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import select

from mita.vend import database, registry, sample
from mita.vend.schema import customers, meters

from .cluster import free_port
from .history import History
from .procs import MITA, Serve, Service

VENDING_KEY = bytes.fromhex(sample.TEST_VENDING_KEY)
DEBT = 20_000  # each customer's opening debt, minor units: recovered a share per purchase (ledger account ...:debt)
DEBT_RATE = "0.1"


@dataclass
class Utility:
    url: str
    api_keys: dict[str, str]  # name -> plaintext (the clients' only)
    api_key_ids: dict[str, int]
    meters: list[str]
    phones: dict[str, str] = field(default_factory=dict)  # meter -> its customer's phone
    customers: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> opening balances

    def setup_record(self, **extra: Any) -> dict[str, Any]:
        return {
            "type": "setup",
            "url": self.url,
            "api_key_ids": self.api_key_ids,
            "meters": self.meters,
            "customers": {str(k): v for k, v in self.customers.items()},
            **extra,
        }


@contextlib.contextmanager
def master_key(key: str) -> Iterator[None]:
    """This process seals under ``key`` while the block runs (as the servers will, from their environment)."""
    saved = {name: os.environ.pop(name, None) for name in ("MITA_MASTER_KEY", "MITA_MASTER_KEY_FILE")}
    os.environ["MITA_MASTER_KEY"] = key
    try:
        yield
    finally:
        os.environ.pop("MITA_MASTER_KEY", None)
        os.environ.update({k: v for k, v in saved.items() if v is not None})


def set_up(url: str, n_meters: int, master: str, vendors: int = 1, prefix: str = "47", phones: bool = False) -> Utility:
    """Migrate ``url``, then a supply group (its vending key sealed under ``master``), the domestic tariff,
    ``n_meters`` meters with customers in debt and ``vendors`` vendors with one API key each (``till0``...)."""
    with master_key(master):
        return _set_up(url, n_meters, vendors, prefix, phones)


def _set_up(url: str, n_meters: int, vendors: int, prefix: str, phones: bool) -> Utility:
    database.upgrade(url)
    engine = database.make_engine(url, pool_size=2)
    try:
        sample.create_group_and_tariff(engine, "Reliability")
        reg = registry.Registry(engine)
        drns, phone_of = [], {}
        for i in range(n_meters):
            drn = sample.meter_number(f"{prefix}{i:08d}")
            phone = f"2547{i:08d}" if phones else None
            reg.create_customer(
                registry.SYSTEM, account=f"R{i}", name=f"Customer {i}", phone=phone, debt=DEBT, debt_rate=DEBT_RATE
            )
            reg.create_meter(registry.SYSTEM, drn=drn, sgc=sample.SGC, customer=f"R{i}", tariff="domestic")
            drns.append(drn)
            if phone:
                phone_of[drn] = phone
        keys, ids = {}, {}
        for v in range(vendors):
            vendor = reg.create_vendor(registry.SYSTEM, f"shop {v}")
            key_id, key = reg.create_api_key(f"till{v}", "vendor", int(vendor["id"]))
            keys[f"till{v}"], ids[f"till{v}"] = key, key_id
        with engine.connect() as conn:
            opening = {
                int(r.id): {"debt": int(r.debt), "carried": int(r.carried), "refund_balance": int(r.refund_balance)}
                for r in conn.execute(select(customers))
            }
            assert conn.execute(select(meters.c.id)).first() is not None
    finally:
        engine.dispose()
    return Utility(url, keys, ids, drns, phone_of, opening)


def environment(url: str, master_key: str, **extra: str) -> dict[str, str]:
    """What Mita's processes run with: the database, a master key of the run's own, nothing of the developer's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MITA_")}
    return {**env, "MITA_DATABASE_URL": url, "MITA_MASTER_KEY": master_key, **extra}


def new_master_key() -> str:
    return secrets.token_hex(32)


def serve(env: dict[str, str], folder: Path, workers: int = 2, port: int | None = None) -> Serve:
    server = Serve(env, folder / "serve.log", port or free_port(), workers)
    server.start()
    server.wait_ready()
    return server


def outbox_worker(env: dict[str, str], folder: Path, *extra: str) -> Service:
    argv = [MITA, "worker", "--poll-interval", "0.2", "--backoff-base", "0.5", "--backoff-max", "2", "--lease", "5",
            *extra]  # fmt: skip
    return Service("worker", argv, env, folder / "worker.log").start()


def write_setup(history: History, utility: Utility, **extra: Any) -> None:
    history.write(utility.setup_record(**extra))
