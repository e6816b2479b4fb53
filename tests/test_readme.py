"""The README runs as written: every console and Python example, in order, as one new user's session.

A README line that no longer works is a user's first failure, so the examples are tests. The whole README is one
story, in one empty folder (``.venv`` linked in, so ``.venv/bin/mita`` is the checkout's), in one ``bash``:
files and exported variables carry from one section to the next, as they would for a person reading along.

How the README is read:

* In a ```` ```console ```` block, ``$ `` starts a command (a trailing ``\\`` continues it); other lines are its
  output, checked as a subsequence of what it printed (``...`` is any output). A command must exit 0, unless its
  comment says ``(exit N)``.
* A ```` ```python ```` block runs in that folder with the virtual environment's Python.
* A ```` ```json ```` block right after ``<!-- file: NAME -->`` is written to ``NAME`` first.

What a shared machine needs changed is changed here, in :data:`STAGE` (a database of its own instead of
``mita``, a free port instead of 8000), never in the README.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PG_SERVER = os.environ.get("MITA_TEST_POSTGRES_SERVER", "postgresql://postgres@127.0.0.1:5432")

FENCE = re.compile(r"(?:<!-- file: (?P<file>[\w.\-]+) -->\n)?^```(?P<lang>\w+)\n(?P<body>.*?)^```$", re.S | re.M)
EXIT = re.compile(r"\(exit (\d+)\)")
MARK = "@@readme@@"


@dataclass
class Step:
    """One thing the reader does: a shell command, a Python block or a file written."""

    kind: str  # "sh", "python" or "file"
    text: str
    line: int
    expect: list[str] = field(default_factory=list)
    exit: int = 0


def steps(markdown: str) -> Iterator[Step]:
    for fence in FENCE.finditer(markdown):
        line = markdown.count("\n", 0, fence.start("body")) + 1
        lang, body = fence["lang"], fence["body"]
        if fence["file"]:
            yield Step("file", f"{fence['file']}\n{body}", line)
        elif lang == "python":
            yield Step("python", body, line)
        elif lang == "console":
            yield from _commands(body, line)


def _commands(body: str, first_line: int) -> Iterator[Step]:
    step: Step | None = None
    continued = False
    for n, text in enumerate(body.splitlines(), first_line):
        if continued and step is not None:
            step.text += "\n" + text
        elif text.startswith("$ "):
            if step is not None:
                yield step
            step = Step("sh", text[2:], n)
        elif step is not None and text.strip():
            step.expect.append(text.rstrip())
        continued = text.endswith("\\")
    if step is not None:
        yield step


def _exit_of(command: str) -> int:
    comment = command.rsplit("#", 1)[1] if "#" in command else ""
    found = EXIT.search(comment)
    return int(found[1]) if found else 0


def _script(all_steps: list[Step]) -> str:
    """One bash script: each command followed by a marker with its exit status, so each is judged alone."""
    out = ["exec 2>&1", "set -u", "shopt -s expand_aliases", "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT"]
    for i, step in enumerate(all_steps):
        out.append(f"printf '\\n{MARK} start {i}\\n'")
        if step.kind == "sh":
            out.append(step.text)
        elif step.kind == "python":
            out.append(f".venv/bin/python - <<'{MARK}PY'\n{step.text}{MARK}PY")
        else:
            name, text = step.text.split("\n", 1)
            out.append(f"cat > {name} <<'{MARK}FILE'\n{text}{MARK}FILE")
        out.append(f"printf '\\n{MARK} end {i} %d\\n' $?")
    return "\n".join(out) + "\n"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def stage(tmp_path: Path) -> Iterator[dict[str, str]]:
    """What this machine's README run uses instead of the README's names: its own database and port."""
    database = f"mita_readme_{uuid.uuid4().hex[:10]}"
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    yield {"database": database, "port": str(_free_port())}
    with psycopg.connect(f"{PG_SERVER}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


def _staged(text: str, stage: dict[str, str]) -> str:
    text = re.sub(r"(postgresql://postgres@127\.0\.0\.1(?::5432)?)/mita\b", rf"\1/{stage['database']}", text)
    text = re.sub(r"\bcreatedb (.*?)\bmita\b", rf"createdb \1{stage['database']}", text)
    return re.sub(r"\b8000\b", stage["port"], text)


def _judge(all_steps: list[Step], output: str) -> list[str]:
    """Every failure, with the README line, what was expected and what came out."""
    problems = []
    parts = re.split(rf"\n{MARK} (start|end) (\d+)(?: (\d+))?\n", "\n" + output)
    printed: dict[int, str] = {}
    status: dict[int, int] = {}
    for i in range(1, len(parts) - 3, 4):
        kind, index, code, text = parts[i], int(parts[i + 1]), parts[i + 2], parts[i + 3]
        if kind == "start":
            printed[index] = text
        else:
            status[index] = int(code)
    for i, step in enumerate(all_steps):
        want = _exit_of(step.text) if step.kind == "sh" else 0
        got = status.get(i)
        seen = printed.get(i, "")
        if got is None:
            problems.append(f"README line {step.line}: never finished: {step.text!r}")
            break
        if got != want:
            problems.append(f"README line {step.line}: exit {got}, not {want}: {step.text!r}\n{seen[-2000:]}")
        elif not _in_order(step.expect, seen.splitlines()):
            problems.append(f"README line {step.line}: output differs: {step.text!r}\nwanted {step.expect}\ngot {seen}")
    return problems


def _in_order(wanted: list[str], got: list[str]) -> bool:
    at = 0
    for line in wanted:
        if line.strip() == "...":
            continue
        while at < len(got) and got[at].rstrip() != line:
            at += 1
        if at == len(got):
            return False
        at += 1
    return True


def test_the_readme_parses_into_steps() -> None:
    """The reader is tested too: commands, continuations, outputs, exit codes, files."""
    text = (
        "```console\n$ echo a \\\n  b\na b\n$ false   # fails (exit 1)\n```\n"
        "<!-- file: k.json -->\n```json\n{}\n```\n```python\nprint(1)\n```\n"
    )
    got = list(steps(text))
    assert [(s.kind, s.text, s.expect) for s in got] == [
        ("sh", "echo a \\\n  b", ["a b"]),
        ("sh", "false   # fails (exit 1)", []),
        ("file", "k.json\n{}\n", []),
        ("python", "print(1)\n", []),
    ]
    assert _exit_of(got[1].text) == 1
    assert _in_order(["a", "...", "c"], ["a", "b", "c"]) and not _in_order(["c", "a"], ["a", "b", "c"])


@pytest.mark.postgres
@pytest.mark.slow
def test_every_readme_example_runs(tmp_path: Path, stage: dict[str, str]) -> None:
    all_steps = list(steps(README.read_text(encoding="utf-8")))
    assert sum(s.kind == "sh" for s in all_steps) > 20, "the README's examples were not found"
    script = _staged(_script(all_steps), stage)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MITA_")}
    env |= {"HOME": str(tmp_path), "MITA_MASTER_KEY_FILE": str(tmp_path / "master.key"), "NO_COLOR": "1"}
    # the machine's broker is shared: a shared subscription group of this run's own
    env["MITA_MQTT_GROUP"] = f"readme-{uuid.uuid4().hex[:10]}"
    # A session of its own: whatever the README started in the background (a server and its workers) is stopped
    # with it, even when a step hangs and the timeout ends the shell before its EXIT trap could.
    session = subprocess.Popen(
        ["bash", "-c", script],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = session.communicate(timeout=300)
    except subprocess.TimeoutExpired:  # judged all the same: the step that never ended is named
        os.killpg(session.pid, signal.SIGKILL)
        output, _ = session.communicate()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(session.pid, signal.SIGKILL)
    problems = _judge(all_steps, output)
    assert not problems, "\n\n".join(problems)


def test_a_wrong_line_or_output_fails(tmp_path: Path) -> None:
    """The judge can say no: a failing command, a wrong exit and a missing output line are each reported."""
    text = "```console\n$ false\n$ true   # (exit 3)\n$ echo one\ntwo\n$ echo fine\nfine\n```\n"
    all_steps = list(steps(text))
    output = subprocess.run(["bash", "-c", _script(all_steps)], cwd=tmp_path, capture_output=True, text=True).stdout
    problems = _judge(all_steps, output)
    assert [p.split(":")[0] for p in problems] == ["README line 2", "README line 3", "README line 4"]
