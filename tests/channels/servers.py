"""Mita's own API on a loopback port, in a thread of the test (for providers that call it back over HTTP)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn

from mita.api.app import create_app

SECRET = "hook-secret-for-tests-0123456789"


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def mita_server(url: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> Iterator[str]:
    """Serve ``create_app(url)`` with ``MITA_<NAME>`` settings from ``env`` (and the test's callback secret); the
    base URL. The public URL the providers are given is this server's."""
    sock = free_socket()
    base = f"http://127.0.0.1:{sock.getsockname()[1]}"
    monkeypatch.setenv("MITA_HOOK_SECRET", SECRET)
    monkeypatch.setenv("MITA_PUBLIC_URL", base)
    for name, value in env.items():
        monkeypatch.setenv(f"MITA_{name.upper()}", value)
    app = create_app(url)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.started, "Mita's API did not start"
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
