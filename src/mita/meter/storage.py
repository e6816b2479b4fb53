"""Saving a meter: JSON written atomically, with the decoder key sealed.

This is the meter package's only I/O, used by the shells, never by the model.
A save writes a temporary file in the same folder, flushes and fsyncs it, then
renames it over the old one, so a crash mid-write leaves the old state or the
new one, never half of each (with :mod:`os` alone: :mod:`tempfile` and :mod:`pathlib` cost
``mita meter enter`` more time than the save itself). The decoder key is sealed under the master key
(:mod:`mita.sealing`, below the meter as below the keystores): decoder keys never sit on disk in plaintext.
"""

from __future__ import annotations

import json
import os

from mita import sts
from mita.sealing import KeyStoreError, seal, unseal
from mita.sts.ea import check_key
from mita.sts.identity import check_key_params

from .errors import MeterError
from .model import Meter
from .profiles import get_profile
from .state import MeterState

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time of mita meter enter)
if TYPE_CHECKING:
    from typing import Any

FORMAT = "mita-meter/1"


def _seal(secrets: dict[str, Any], drn: str) -> str:
    return seal(json.dumps(secrets).encode(), f"meter:{drn}").hex()


def _unseal(text: str, drn: str) -> dict[str, Any]:
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise MeterError("corrupt_state", "the sealed decoder key is not hex") from None
    try:
        secrets = json.loads(unseal(raw, f"meter:{drn}"))
    except KeyStoreError as exc:
        raise MeterError(exc.code, "the meter's sealed decoder key does not open with this master key") from None
    if not isinstance(secrets, dict) or not isinstance(secrets.get("decoder_key"), int):
        raise MeterError("corrupt_state", "the sealed secrets are not a meter's")
    return secrets


def dumps(meter: Meter) -> str:
    data: dict[str, Any] = {"format": FORMAT, **meter.state.to_dict()}
    # the decoder key, and any half-entered new key, sealed together under the master key
    data["decoder_key_sealed"] = _seal(meter.state.secrets(), meter.state.drn)
    return json.dumps(data, indent=2) + "\n"


def loads(text: str) -> Meter:
    try:
        data = json.loads(text)
    except ValueError:
        raise MeterError("corrupt_state", "the meter state file is not JSON") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise MeterError("corrupt_state", f"not a {FORMAT} state file")
    secrets = _unseal(str(data.get("decoder_key_sealed", "")), str(data.get("drn", "")))
    state = MeterState.from_dict(data, secrets["decoder_key"], secrets.get("pending"))
    _check(state)
    return Meter(state)


def _check(state: MeterState) -> None:
    """A file holds what :meth:`Meter.create` accepts (a profile, its EA, the meter number, key and key
    parameters in range, TIDs of 24 bits): a file edited by hand is refused as it is read, with a typed error,
    not at the next token entry with an untyped one."""
    try:
        profile = get_profile(state.profile)
        algorithm = sts.EA.parse(state.ea)
        if algorithm not in profile.algorithms:
            raise MeterError("unsupported", f"profile {profile.name} does not support EA{algorithm.value:02d}")
        sts.MeterNumber.parse(state.drn, state.iin)
        check_key(algorithm, state.decoder_key)
        check_key_params(state.kt, state.sgc, state.ti, state.krn)
        if not 0 <= state.ken <= 255 or not all(0 <= t < 1 << 24 for t in state.tids):
            raise sts.RangeError("KEN is 0..255 and TIDs are 24-bit numbers")
    except (sts.StsError, MeterError) as exc:
        raise MeterError("corrupt_state", f"saved meter state is not valid: {exc}") from None


def save(meter: Meter, path: str | os.PathLike[str], *, sync: bool = True) -> os.stat_result:
    """Write the temporary file, fsync it, rename it over ``path``, fsync the folder (the rename is durable).

    ``sync=False`` leaves out both fsyncs: the file is still whole (old state or new, for any reader), but a
    machine crash may lose the last saves. For simulated fleets under load tests, where a thousand meters' fsyncs
    would queue behind one another and measure the disk instead of the head-end.

    Returns the written file's status, taken before the rename: a program sharing the file (a simulated meter
    beside ``mita meter``) compares it with ``os.stat(path)`` later to learn whether another wrote the file since.
    A stat of ``path`` after the rename could already be another writer's file."""
    target = os.path.abspath(path)
    folder = os.path.dirname(target)
    fd, tmp = _temporary(folder, os.path.basename(target))
    try:
        with os.fdopen(fd, "w") as f:
            f.write(dumps(meter))
            f.flush()
            if sync:
                os.fsync(f.fileno())
            written = os.fstat(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        if os.path.lexists(tmp):  # our own file: nobody else removes it
            os.unlink(tmp)
        raise
    if not sync:
        return written
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return written


def _temporary(folder: str, name: str) -> tuple[int, str]:
    """A new file ``.NAME.<random>`` in ``folder`` that only its owner can read, opened for writing: what
    :func:`tempfile.mkstemp` makes (same flags and mode), without importing :mod:`tempfile`."""
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(100):  # 48 random bits: a clash is a stale file of a crashed save, at most
        tmp = os.path.join(folder, f".{name}.{os.urandom(6).hex()}")
        try:
            return os.open(tmp, flags, 0o600), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name for {name} in {folder}")


class FileLock:
    """A meter file's lock, ``.NAME.lock`` beside it (every save replaces the file itself, so the lock cannot be on
    it). Whoever loads a meter, changes it and saves it holds the lock throughout (``with FileLock(path):``), so
    two programs sharing one file -- the keypad (``mita meter``) and a simulated meter (``mita sim``) -- take turns
    instead of one saving over the other's change. Advisory (``flock``): without ``fcntl`` (not POSIX), no lock."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        target = os.path.abspath(path)
        self.path = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.lock")
        self.fd: int | None = None

    def __enter__(self) -> FileLock:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.fd is not None:  # closing the descriptor releases the lock
            os.close(self.fd)
            self.fd = None


def load(path: str | os.PathLike[str]) -> Meter:
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise MeterError("no_state", f"no meter state at {path}: make one with `mita meter new`") from None
    except UnicodeDecodeError:
        raise MeterError("corrupt_state", "the meter state file is not UTF-8 text") from None
    return loads(text)
