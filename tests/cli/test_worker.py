"""``mita worker``'s database pool: a connection for each dispatcher (issue 12's head-end benchmark).

Sixteen dispatchers on the CLI's default pool (2 + 2 overflow) queued for it, and the pool closed an overflow
connection on every check-in and opened a new one at once: a PostgreSQL backend started per few deliveries.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli_run import run
from mita.cli.worker import _runtime
from mita.vend import database


@pytest.mark.parametrize(("dispatchers", "pooled"), [(1, 2), (16, 16)])
def test_the_pool_holds_a_connection_per_dispatcher(url: str, dispatchers: int, pooled: int) -> None:
    database.upgrade(url)
    runtime = _runtime(url, dispatchers)
    try:
        if url.startswith("postgresql"):
            assert runtime.engine.pool.size() == pooled
    finally:
        runtime.close()


def test_a_missing_database_is_refused_before_dispatching(tmp_path: Path) -> None:
    result = run(["worker", "--once", "--concurrency", "4", "--database-url", f"sqlite:///{tmp_path}/missing.db"])
    assert result.exit_code == 3
    assert result.stderr.startswith("error[database_missing]: ")
    assert json.loads(result.stdout)["error"]["code"] == "database_missing"
    assert not (tmp_path / "missing.db").exists()
