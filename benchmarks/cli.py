"""How long a person waits for ``mita``: the wall time of ``mita --help``, ``mita token credit`` and
``mita meter enter``, against ``python -c pass`` measured in the same run (the floor no command can go under).

Each is run ``--runs`` times as a fresh process (the installed ``mita`` script next to this Python); the figure is
the median. A throwaway folder holds the key file, the master key and the meter's state file, so nothing of the
caller's is read or written. ``--json`` prints ``{"help_s", "credit_s", "enter_s", "python_s"}`` (seconds).

The target (issue 11): each command under 0.2 s and under 4x ``python -c pass``.

    .venv/bin/python benchmarks/cli.py [--runs 21] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

DECODER_KEY = "e653341f9d5bf36f"  # the compliance suites' test meter (DKGA02 of the STS 531 test vending key)
METER = ["--drn", "00000000000", "--iin", "600727", "--sgc", "123456", "--ea", "07", "--profile", "legacy-ea07"]


def mita() -> list[str]:
    """The installed ``mita`` script beside this interpreter, else ``python -m mita.cli.main``."""
    script = Path(sys.executable).with_name("mita")
    if script.exists():
        return [str(script)]
    found = shutil.which("mita")
    return [found] if found else [sys.executable, "-m", "mita.cli.main"]


def wall(argv: Sequence[str], env: dict[str, str], cwd: Path, runs: int, check: bool = True) -> float:
    """The median wall time of ``runs`` runs of ``argv``, in seconds."""
    times = []
    subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)  # warm: bytecode, disk cache
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, check=False)
        times.append(time.perf_counter() - start)
        if check and done.returncode not in (0, 12):  # 12: the token was used before (every run but the first)
            raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
    return statistics.median(times)


def measure(runs: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="mita-bench-cli-") as folder:
        cwd = Path(folder)
        (cwd / "key.hex").write_text(DECODER_KEY + "\n")
        # PYTHONDONTWRITEBYTECODE would have every run compile mita from source: an installed package has its
        # bytecode (pip compiles it), so the first run of each command below writes it and is not counted
        drop = ("MITA_", "_ARGCOMPLETE", "PYTHONDONTWRITEBYTECODE")
        env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
        env["MITA_MASTER_KEY"] = secrets.token_hex(32)
        cmd = mita()
        subprocess.run([*cmd, "meter", "new", "m.json", *METER, "--decoder-key-file", "key.hex"], env=env, cwd=cwd,
                       capture_output=True, check=True)  # fmt: skip
        credit = [*cmd, "token", "credit", "--ea", "07", "--amount", "100", "--key-file", "key.hex"]
        made = subprocess.run(credit, env=env, cwd=cwd, capture_output=True, text=True, check=True)
        token = made.stdout.strip()
        python = wall([sys.executable, "-c", "pass"], env, cwd, runs)
        return {
            "help_s": round(wall([*cmd, "--help"], env, cwd, runs), 4),
            "credit_s": round(wall(credit, env, cwd, runs), 4),
            "enter_s": round(wall([*cmd, "meter", "enter", "m.json", token], env, cwd, runs), 4),
            "python_s": round(python, 4),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--runs", type=int, default=21, help="Runs of each command (the median is reported).")
    parser.add_argument("--json", action="store_true", help="Print the figures as one JSON object.")
    args = parser.parse_args()
    figures = measure(args.runs)
    if args.json:
        print(json.dumps(figures))
        return
    python = figures["python_s"]
    print(f"python -c pass      {python * 1000:7.1f} ms")
    for name, label in (("help_s", "mita --help"), ("credit_s", "mita token credit"), ("enter_s", "mita meter enter")):
        value = figures[name]
        verdict = "ok" if value < 0.2 and value < 4 * python else "SLOW"
        print(f"{label:<19} {value * 1000:7.1f} ms  {value / python:4.1f}x python  {verdict}")


if __name__ == "__main__":
    main()
