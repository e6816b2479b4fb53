"""Servers broken on purpose, for the canaries; ``MITA_CANARY`` says which (``a`` when unset).

Nothing in ``src/`` knows of them: ``python -m reliability.canary_app serve ...`` (with ``tests/`` on
``PYTHONPATH``) runs ``mita serve`` with uvicorn pointed at :func:`app_from_env` here, which patches the vending
service in each worker process before building the ordinary app.

| canary | the patch | what exposes it |
|---|---|---|
| ``a`` | a vend answered *before* its commit, committed 0.5 s later [1] | a killed worker: ``lost`` |
| ``c`` | the vend's own check of the durability settings skipped [2] | a PostgreSQL crash: ``lost`` |

[1] the vend's faster paths (its COMMIT pipelined with the writes, the event loop's path) are off, so that every
vend takes the patched order. [2] ``hotpath.check_durable`` (finding 3): ``synchronous_commit = off`` set live
is then obeyed, as an older Mita obeyed it, and commits already answered die with the server.
"""

from __future__ import annotations

import json
import os
import queue
import sys
import threading
import time
from typing import Any

from .patched import run_mita

DELAY_S = 0.5
_local = threading.local()


def install() -> None:
    from mita.vend import hotpath, purchase
    from mita.vend.desk import Issued

    original_vend = purchase.Purchases.vend
    original_run = hotpath.run

    def run(conn: Any, writes: list[Any], *args: Any, **kwargs: Any) -> None:
        if "commit" in kwargs:  # a COMMIT sent with the writes (a pipeline) stays with the caller's block here
            kwargs["commit"] = False
        original_run(conn, writes, *args, **kwargs)
        box = getattr(_local, "box", None)
        if box is not None:
            box.put(("early", json.loads(dict(writes)["answer"]["response"])))
            time.sleep(DELAY_S)  # the commit comes after the answer: the broken order

    def vend(self: Any, caller: Any, key: str, body: dict[str, Any]) -> Any:
        box: queue.Queue[tuple[str, Any]] = queue.Queue()

        def work() -> None:
            _local.box = box
            try:
                box.put(("done", original_vend(self, caller, key, body)))
            except BaseException as exc:
                box.put(("error", exc))

        threading.Thread(target=work, daemon=True).start()
        kind, value = box.get()
        if kind == "early":
            return Issued(value)
        if kind == "error":
            raise value
        return value

    async def no_async_path(self: Any, caller: Any, key: str, body: dict[str, Any]) -> None:
        return None  # "not here": the route takes the thread's path, the one patched above

    hotpath.run = run
    purchase.Purchases.vend = vend
    if hasattr(purchase.Purchases, "vend_async"):  # the event loop's path, where there is one
        purchase.Purchases.vend_async = no_async_path


def trust_durability() -> None:
    """Canary (c): the vend no longer reads the session's durability settings before it writes."""
    from mita.vend import hotpath

    def trusted(locked: dict[str, Any]) -> None:
        return None

    hotpath.check_durable = trusted


PATCHES = {"a": install, "c": trust_durability}


def app_from_env() -> Any:
    PATCHES[os.environ.get("MITA_CANARY", "a")]()
    from mita.api.app import app_from_env as ordinary

    return ordinary()


def main(argv: list[str]) -> int:
    return run_mita(f"{__name__}:app_from_env", argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
