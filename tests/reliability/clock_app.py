"""``mita serve`` on a clock the test moves: the host clock jumping (an NTP step, a VM restored from a snapshot)
without touching the host's clock, which other processes on this machine share.

Mita reads the wall clock in one place per process: the composition root (:func:`mita.compose.build`) hands
``local_now`` to every service. ``python -m reliability.clock_app serve ...`` (with ``tests/`` on ``PYTHONPATH``)
runs ``mita serve`` with uvicorn pointed at :func:`app_from_env` here, which has every worker build its runtime on
a clock that adds the offset (seconds, a float) written in the file named by ``MITA_REL_CLOCK_FILE``. The file is
read at every tick, so a test moves the clock of running workers by writing it: a jump, as the host would make one.
Nothing in ``src/`` knows of it (as :mod:`.canary_app`).
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .patched import run_mita

ENV = "MITA_REL_CLOCK_FILE"


def shifted(path: Path) -> Callable[[], dt.datetime]:
    """The utility's wall clock (``mita.vend.callers.local_now``) plus the offset in ``path`` (none if unreadable)."""
    from mita.vend.callers import local_now

    def now() -> dt.datetime:
        try:
            offset = float(path.read_text())
        except (OSError, ValueError):
            offset = 0.0
        return local_now() + dt.timedelta(seconds=round(offset))

    return now


def jump(path: Path, seconds: float) -> None:
    """Set the clock of every process reading ``path`` to the true time plus ``seconds`` (atomically)."""
    part = path.with_suffix(".part")
    part.write_text(repr(float(seconds)))
    part.replace(path)


def install() -> None:
    from mita import compose

    original = compose.build
    clock = shifted(Path(os.environ[ENV]))

    def build(*args: Any, **kwargs: Any) -> Any:
        return original(*args, **{**kwargs, "clock": clock})

    compose.build = build


def app_from_env() -> Any:
    install()
    from mita.api.app import app_from_env as ordinary

    return ordinary()


def main(argv: list[str]) -> int:
    return run_mita(f"{__name__}:app_from_env", argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
