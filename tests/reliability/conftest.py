"""One throwaway PostgreSQL cluster for the reliability tests (each run gets a database of its own on it); the
seed of every run from ``MITA_REL_SEED`` (default: a fixed one, printed with every report)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .cluster import Cluster, throwaway

DEFAULT_SEED = 20261204


@pytest.fixture(scope="session")
def rel_cluster() -> Iterator[Cluster]:
    with throwaway() as cluster:
        yield cluster


@pytest.fixture
def cluster(rel_cluster: Cluster) -> Iterator[Cluster]:
    """The session's cluster, running and with its default settings again after the test."""
    try:
        yield rel_cluster
    finally:
        if rel_cluster.process is None or rel_cluster.process.poll() is not None:
            rel_cluster.start()
        rel_cluster.reset()


@pytest.fixture
def seed() -> int:
    return int(os.environ.get("MITA_REL_SEED", DEFAULT_SEED))


@pytest.fixture
def run_folder(tmp_path: Path) -> Path:
    return tmp_path / "run"
