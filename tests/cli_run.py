"""Run ``mita`` in-process for a test: ``run(argv, input=None, env=None) -> Result(exit_code, stdout, stderr)``.

Calls :func:`mita.cli.main.main` with standard input, output and error swapped for buffers (text over bytes, as
a real process has, so ``sys.stdin.buffer`` works) and the environment patched for the call. Observers (the key
leak scan, ``leak_scan.py``) see every call's arguments, input and output.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from mita.cli.main import main


@dataclass(frozen=True)
class Result:
    exit_code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr


#: Called after every run with (argv, input, result): how the leak scan records the CLI's output.
OBSERVERS: list[Callable[[Sequence[str], str | bytes | None, Result], None]] = []


class _Stream(io.TextIOWrapper):
    """A text stream over bytes that reports itself as not a terminal (the key prompts check)."""

    def isatty(self) -> bool:
        return False


def _text(data: bytes | None = None) -> _Stream:
    return _Stream(io.BytesIO(data or b""), encoding="utf-8", newline=None, write_through=True)


@contextmanager
def _environment(env: Mapping[str, str | None] | None) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in env or {}}
    try:
        for name, value in (env or {}).items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def run(argv: Sequence[str], input: str | bytes | None = None, env: Mapping[str, str | None] | None = None) -> Result:
    """Run ``mita ARGV`` in this process; its exit code and what it printed."""
    data = input.encode() if isinstance(input, str) else input
    stdin, stdout, stderr = _text(data), _text(), _text()
    saved = sys.stdin, sys.stdout, sys.stderr
    sys.stdin, sys.stdout, sys.stderr = stdin, stdout, stderr
    try:
        with _environment(env):
            code = main([str(a) for a in argv])
    finally:
        sys.stdin, sys.stdout, sys.stderr = saved
    result = Result(code, _read(stdout), _read(stderr))
    for observe in OBSERVERS:
        observe(argv, input, result)
    return result


def _read(stream: _Stream) -> str:
    stream.flush()
    buffer = stream.buffer
    assert isinstance(buffer, io.BytesIO)
    return buffer.getvalue().decode("utf-8", errors="replace")
