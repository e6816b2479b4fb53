"""Saving a meter: JSON written atomically, with the decoder key sealed.

This is the meter package's only I/O, used by the shells, never by the model.
A save writes a temporary file in the same folder, flushes and fsyncs it, then
renames it over the old one, so a crash mid-write leaves the old state or the
new one, never half of each. The decoder key is sealed under the master key
(:mod:`mita.sealing`, below the meter as below the keystores): decoder keys never sit on disk in plaintext.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from mita.sealing import KeyStoreError, seal, unseal

from .errors import MeterError
from .model import Meter
from .state import MeterState

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
    return Meter(MeterState.from_dict(data, secrets["decoder_key"], secrets.get("pending")))


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
