"""The HSM under fire: a utility whose vending key lives in SoftHSM2, and a ``mita serve`` whose workers lose their
HSM sessions when told to.

Nothing in ``src/`` knows of it. ``python -m reliability.hsm_app serve ...`` (``tests/`` on ``PYTHONPATH``) runs
``mita serve`` with uvicorn pointed at :func:`app_from_env`, which starts one thread per worker process before
building the ordinary app. On SIGUSR1 that thread calls ``C_CloseAllSessions`` on every slot through a second
``dlopen`` handle of the module the keystore loaded: every session of the process dies and the token logs the
process out, as when a network HSM restarts or drops its clients. The keystore learns of it only from its next
call's ``CKR_SESSION_HANDLE_INVALID``. The thread takes the module's call lock first (between any two PKCS#11
calls of the keystore, so also between its login and its next session): SoftHSM, initialised without locking
callbacks, must never see two calls at once in one process, which an HSM across a network would survive. Each
worker appends ``<pid> <slots closed>`` to the file named by ``MITA_REL_HSM_ACKS`` once done, so the test knows
the fault landed.

``python -m reliability.hsm_app setup URL METERS`` (the vending key's hex on stdin, never in ``argv``) sets the
utility up in a process of its own, so that the test's process never loads SoftHSM with another configuration.
"""

from __future__ import annotations

import ctypes
import json
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from .patched import run_mita

FAULT_SIGNAL = signal.SIGUSR1
ACKS_ENV = "MITA_REL_HSM_ACKS"
SGC = "600100"


def close_all_sessions(module: str) -> int:
    """``C_CloseAllSessions`` on every slot of ``module`` (already loaded and initialised by the keystore)."""
    lib = ctypes.CDLL(module)  # the same library: dlopen hands back the loaded one and counts a reference
    lib.C_GetSlotList.argtypes = [ctypes.c_ubyte, ctypes.POINTER(ctypes.c_ulong), ctypes.POINTER(ctypes.c_ulong)]
    lib.C_GetSlotList.restype = ctypes.c_ulong
    lib.C_CloseAllSessions.argtypes = [ctypes.c_ulong]
    lib.C_CloseAllSessions.restype = ctypes.c_ulong
    count = ctypes.c_ulong(0)
    if lib.C_GetSlotList(1, None, ctypes.byref(count)) != 0 or not count.value:
        return 0  # not initialised (a reload failed while the token was away): no session to close
    slots = (ctypes.c_ulong * count.value)()
    if lib.C_GetSlotList(1, slots, ctypes.byref(count)) != 0:
        return 0
    return sum(1 for slot in slots[: count.value] if lib.C_CloseAllSessions(slot) == 0)


def _lose_sessions() -> str:
    from mita.keys.pkcs11 import Pkcs11KeyStore, _Module
    from mita.vend import keyring

    store = keyring._stores.get("pkcs11")
    if not isinstance(store, Pkcs11KeyStore):
        return "0"  # no vend has needed the HSM in this worker yet
    with _Module.of(store.module).calls():  # between two of the keystore's PKCS#11 calls, never inside one
        return str(close_all_sessions(store.module))


def install() -> None:
    """In the worker process (uvicorn calls the factory in its main thread, where signal handlers are set)."""
    strike = threading.Event()
    acks = Path(os.environ[ACKS_ENV])

    def watch() -> None:
        while True:
            strike.wait()
            strike.clear()
            done = _lose_sessions()
            with acks.open("a", encoding="utf-8") as out:
                out.write(f"{os.getpid()} {done}\n")

    signal.signal(FAULT_SIGNAL, lambda *_: strike.set())
    threading.Thread(target=watch, name="hsm-fault", daemon=True).start()


def app_from_env() -> Any:
    install()
    from mita.api.app import app_from_env as ordinary

    return ordinary()


def set_up(url: str, n_meters: int, vending_key: str) -> dict[str, Any]:
    """The reliability utility (``rig``'s: customers in debt, a vendor's till), its DKGA04 key in the HSM."""
    import datetime as dt

    from sqlalchemy import select

    from mita.vend import database, keyring, registry, sample
    from mita.vend.schema import customers

    from . import rig

    database.upgrade(url)
    engine = database.make_engine(url, pool_size=2)
    try:
        reg = registry.Registry(engine)
        reg.create_supply_group(registry.SYSTEM, sgc=SGC, name="HSM town", vending_key=vending_key, dkga=4, ea=11,
                                kt=2, krn=1, base_date=2014, keystore_name="pkcs11")  # fmt: skip
        reg.create_tariff(registry.SYSTEM, name="domestic", currency="ZAR", spec=sample.DOMESTIC_TARIFF,
                          effective_from=dt.datetime(2020, 1, 1))  # fmt: skip
        drns = []
        for i in range(n_meters):
            drn = sample.meter_number(f"61{i:08d}")
            reg.create_customer(registry.SYSTEM, account=f"H{i}", name=f"Customer {i}", debt=rig.DEBT,
                                debt_rate=rig.DEBT_RATE)  # fmt: skip
            reg.create_meter(registry.SYSTEM, drn=drn, sgc=SGC, customer=f"H{i}", tariff="domestic")
            drns.append(drn)
        vendor = reg.create_vendor(registry.SYSTEM, "shop 0")
        key_id, key = reg.create_api_key("till0", "vendor", int(vendor["id"]))
        with engine.connect() as conn:
            opening = {
                str(r.id): {"debt": int(r.debt), "carried": int(r.carried), "refund_balance": int(r.refund_balance)}
                for r in conn.execute(select(customers))
            }
    finally:
        engine.dispose()
        for store in keyring._stores.values():
            close = getattr(store, "close", None)
            if close is not None:
                close()
    return {"url": url, "api_keys": {"till0": key}, "api_key_ids": {"till0": key_id}, "meters": drns,
            "customers": opening}  # fmt: skip


def main(argv: list[str]) -> int:
    if argv[:1] == ["setup"]:
        print(json.dumps(set_up(argv[1], int(argv[2]), sys.stdin.read().strip())))
        return 0
    return run_mita(f"{__name__}:app_from_env", argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
