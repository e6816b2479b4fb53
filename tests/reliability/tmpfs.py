"""A small tmpfs of the test's own, and a ballast file that fills it: the disk-full fault (R-13).

A tmpfs is mounted (root only) on a new temporary folder and unmounted in ``finally``; the ballast writes zeros
until the kernel answers ENOSPC (tmpfs allocates a page for every byte written, so nothing is sparse), in smaller
and smaller pieces so that not even a page is left over. Removing the ballast frees it all at once: the heal.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

PIECES = (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1)  # bytes per write, down to the last byte


def can_mount() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


def require_mount() -> None:
    """Mounting needs root: in CI that is a failure (the suite would prove nothing), by hand a skip that says so."""
    if can_mount():
        return
    if os.environ.get("CI"):
        pytest.fail("the disk-full tests mount a tmpfs: run them as root")
    pytest.skip("the disk-full tests mount a tmpfs and need root")


@contextlib.contextmanager
def mounted(size_mb: int, prefix: str = "mita-rel-tmpfs-", owner: int | None = None) -> Iterator[Path]:
    """A tmpfs of ``size_mb`` MiB on a new folder (owned by ``owner`` if given); unmounted and removed on exit."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    argv = ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=0755", "tmpfs", str(folder)]
    subprocess.run(argv, check=True, capture_output=True)
    try:
        if owner is not None:
            os.chown(folder, owner, -1)
        yield folder
    finally:
        # lazy: a process of the test still holding a file open must not leave the mount behind
        subprocess.run(["umount", "-l", str(folder)], check=False, capture_output=True)
        with contextlib.suppress(OSError):
            folder.rmdir()


def free_bytes(folder: Path) -> int:
    st = os.statvfs(folder)
    return st.f_bavail * st.f_frsize


def fill(folder: Path, name: str = "ballast") -> Path:
    """Write zeros to ``folder/name`` until the file system is full; the ballast's path."""
    path = folder / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in PIECES:
            block = bytes(size)
            while True:
                try:
                    if os.write(fd, block) < size:
                        break
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    finally:
        os.close(fd)
    return path


def relieve(ballast: Path) -> None:
    """The heal: the ballast removed, its space free again."""
    with contextlib.suppress(FileNotFoundError):
        ballast.unlink()
