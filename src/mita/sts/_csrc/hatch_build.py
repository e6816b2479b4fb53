"""Build the optional accelerator ``mita.sts._speedups`` from ``speedups.c``, at install time.

Why a hatchling hook and not setuptools: the project builds with hatchling, and one C file needs no more than the
compiler the machine has. ``pip install -e .`` (or any wheel build) runs :class:`SpeedupsHook`, which compiles the
extension next to ``mita/sts`` with the interpreter's own compiler settings. When that fails (no compiler, no
Python headers, another platform) the install goes on, pure Python: :mod:`mita.sts.accel` finds no extension
and the engine runs its reference modules, bit for bit the same tokens, only slower. Nothing here is imported by
the package at run time.

Run it by hand to (re)build in place, e.g. after editing the C file::

    .venv/bin/python src/mita/sts/_csrc/hatch_build.py
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

try:
    from hatchling.builders.hooks.plugin.interface import (  # type: ignore[import-not-found, unused-ignore]
        BuildHookInterface,
    )
except ImportError:  # run by hand, outside a build: the hook class is then unused
    BuildHookInterface = object

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "speedups.c"
PACKAGE_DIR = HERE.parent  # src/mita/sts: where the editable install (and the wheel's mita/sts) finds it
TIMEOUT_S = 120


def _compiler() -> list[str]:
    """``$CC``, else the compiler this Python was built with, else ``cc``."""
    configured = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shlex.split(str(configured))


def _command(source: Path, target: Path) -> list[str]:
    link = ["-bundle", "-undefined", "dynamic_lookup"] if sys.platform == "darwin" else ["-shared"]
    include = sysconfig.get_paths()["include"]
    return [*_compiler(), "-O2", "-fPIC", "-Wall", f"-I{include}", *link, str(source), "-o", str(target)]


def build(out_dir: Path = PACKAGE_DIR) -> Path | None:
    """Compile the extension into ``out_dir``; its path, or None (with one line on stderr) when it cannot be built.

    Written to a temporary name and renamed: a half-written library must never be importable.
    """
    if sys.platform == "win32" or sys.implementation.name != "cpython":
        return None
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    target = out_dir / f"_speedups{suffix}"
    fd, tmp_name = tempfile.mkstemp(prefix=".speedups-", suffix=suffix, dir=out_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        done = subprocess.run(_command(SOURCE, tmp), capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            print(f"mita: the C accelerator was not built (pure Python instead): {last}", file=sys.stderr)
            return None
        os.replace(tmp, target)
        return target
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"mita: the C accelerator was not built (pure Python instead): {exc}", file=sys.stderr)
        return None
    finally:
        tmp.unlink(missing_ok=True)


class SpeedupsHook(BuildHookInterface):  # type: ignore[misc, valid-type, unused-ignore]
    """Hatchling's hook: compile before the wheel (or the editable wheel) is assembled."""

    PLUGIN_NAME = "custom"

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if getattr(self, "target_name", "wheel") != "wheel":
            return  # the sdist ships the C source, not a binary
        built = build()
        if built is None:
            return
        build_data["pure_python"] = False  # a platform wheel: the library is for this interpreter and machine
        build_data["infer_tag"] = True
        if version != "editable":  # the editable install imports it from src/ directly
            build_data["force_include"][str(built)] = f"mita/sts/{built.name}"


if __name__ == "__main__":
    result = build()
    print(result if result is not None else "not built")
    sys.exit(0 if result is not None else 1)
