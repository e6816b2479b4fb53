"""``benchmarks/soak.py`` keeps its evidence: the run's folder, with the cluster's data directory shut down cleanly,
moves under ``soak-evidence/`` in the working directory; and it keeps it only when there is something to look at."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from . import checker
from .cluster import BIN, Cluster

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


def _soak() -> ModuleType:
    spec = importlib.util.spec_from_file_location("soak", SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("soak", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def base() -> Iterator[Path]:
    """A folder the ``postgres`` user can pass through (pytest's ``tmp_path`` is its owner's only)."""
    path = Path(tempfile.mkdtemp(prefix="mita-soak-evidence-"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def test_the_evidence_moves_with_a_cleanly_stopped_cluster(
    base: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    soak = _soak()
    folder = base / "run"
    folder.mkdir(mode=0o711)
    cluster = Cluster(folder / "pg").init()
    cluster.start()
    try:
        url = cluster.create_database("soak")
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE TABLE kept (n int)")
            conn.execute("INSERT INTO kept VALUES (42)")
        (folder / "history.jsonl").write_text('{"t":0,"type":"phase","name":"load"}\n')
        (folder / "kannel").mkdir()
        os.mkfifo(folder / "kannel" / "mo.fifo")  # Kannel's inbound pipe: no file to keep
        work = base / "cwd"
        work.mkdir(mode=0o711)
        monkeypatch.chdir(work)
        kept = soak.keep_evidence(cluster, folder, 7, "failed: payments")
    finally:
        cluster.destroy()
    assert kept.parent == work / "soak-evidence" and kept.name.endswith("-seed7")
    assert not folder.exists()
    assert (kept / "history.jsonl").read_text().startswith('{"t":0')
    assert not (kept / "kannel" / "mo.fifo").exists()
    assert "failed: payments" in (kept / "README.txt").read_text()
    assert str(kept) in capsys.readouterr().err
    # shut down cleanly, not killed: the data directory starts again without recovery and holds the table
    control = subprocess.run([str(BIN / "pg_controldata"), str(kept / "pg" / "data")], capture_output=True, text=True)
    assert "Database cluster state:               shut down\n" in control.stdout, control.stdout
    again = Cluster(kept / "pg")
    again.start()
    try:
        import psycopg

        with psycopg.connect(again.url("soak")) as conn:
            assert conn.execute("SELECT n FROM kept").fetchone() == (42,)
        again.drop_database("soak")
    finally:
        again.destroy()


def test_the_evidence_is_kept_only_when_there_is_something_to_look_at() -> None:
    soak = _soak()
    ok = checker.Report()
    failed = checker.Report()
    failed.bad("payments", "payment 7 is vended, not final")
    assert soak._keep_why(ok, None, keep=False) is None
    assert soak._keep_why(ok, {"unknown": 0, "flagged": 0}, keep=False) is None
    assert soak._keep_why(ok, None, keep=True) == "--keep"
    assert soak._keep_why(failed, None, keep=False) == "failed: payments"
    assert "closed 2 payments" in soak._keep_why(ok, {"unknown": 2, "flagged": 2}, keep=False)
    assert soak._keep_why(None, None, keep=False) == "the soak stopped before its check"
