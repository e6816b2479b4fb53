"""Saving a meter: JSON written atomically, with the decoder key sealed.

This is the meter package's only I/O, used by the shells, never by the model.
A save writes a temporary file in the same folder, flushes and fsyncs it, then
renames it over the old one, so a crash mid-write leaves the old state or the
new one, never half of each. The decoder key is stored AES-256-GCM encrypted
under a master key (``MITA_MASTER_KEY`` as 64 hex digits, or the file named by
``MITA_MASTER_KEY_FILE``, by default ``~/.config/mita/master.key``, created
with mode 0600 on first use): decoder keys never sit on disk in plaintext.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from .errors import MeterError
from .model import Meter
from .state import MeterState

FORMAT = "mita-meter/1"


def master_key() -> bytes:
    text = os.environ.get("MITA_MASTER_KEY")
    if text:
        try:
            key = bytes.fromhex(text)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise MeterError("bad_master_key", "MITA_MASTER_KEY must be 64 hex digits (256 bits)")
        return key
    path = Path(os.environ.get("MITA_MASTER_KEY_FILE", "~/.config/mita/master.key")).expanduser()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    key = bytes.fromhex(path.read_text().strip())
    if len(key) != 32:
        raise MeterError("bad_master_key", f"{path} must hold 64 hex digits (256 bits)")
    return key


def _seal(value: int, drn: str) -> str:
    nonce = secrets.token_bytes(12)
    sealed = AESGCM(master_key()).encrypt(nonce, value.to_bytes(16, "big"), drn.encode())
    return (nonce + sealed).hex()


def _unseal(text: str, drn: str) -> int:
    try:
        raw = bytes.fromhex(text)
        return int.from_bytes(AESGCM(master_key()).decrypt(raw[:12], raw[12:], drn.encode()), "big")
    except (ValueError, InvalidTag):
        msg = "the meter's sealed decoder key does not open with this master key"
        raise MeterError("key_unreadable", msg) from None


def dumps(meter: Meter) -> str:
    data: dict[str, Any] = {"format": FORMAT, **meter.state.to_dict()}
    data["decoder_key_sealed"] = _seal(meter.state.decoder_key, meter.state.drn)
    return json.dumps(data, indent=2) + "\n"


def loads(text: str) -> Meter:
    try:
        data = json.loads(text)
    except ValueError:
        raise MeterError("corrupt_state", "the meter state file is not JSON") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise MeterError("corrupt_state", f"not a {FORMAT} state file")
    key = _unseal(str(data.get("decoder_key_sealed", "")), str(data.get("drn", "")))
    return Meter(MeterState.from_dict(data, key))


def save(meter: Meter, path: str | os.PathLike[str]) -> None:
    target = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(dumps(meter))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(target.parent.resolve(), os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load(path: str | os.PathLike[str]) -> Meter:
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise MeterError("no_state", f"no meter state at {path}: make one with `mita meter new`") from None
    return loads(text)
