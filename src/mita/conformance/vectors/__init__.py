"""The STS conformance vectors shipped with Mita, and the one way to read them.

The JSON files beside this module are byte-for-byte copies of the shared vectors (``../shared/sts/vectors``;
README.md here says where each file comes from and which entries count). They live inside the package, not in
``tests/``, so that an installed ``mita`` (a wheel, without the git checkout) can run ``mita conformance``. They
are read through :mod:`importlib.resources`, which works from a wheel, an editable install or a zip.

A ``folder`` argument lets a caller read another copy (the tests' ``$MITA_VECTORS``, a vendor's newer set).
"""

from __future__ import annotations

import functools
import json
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any

#: Every vector file Mita ships, in the order the report lists them.
FILES = (
    "tokens.json",
    "key_change.json",
    "dkga02.json",
    "dkga04.json",
    "luhn_pan.json",
    "sta.json",
    "misty1.json",
    "ea09_des_unverified.json",
    "vendor_sta_keyderivation_unofficial.json",
    "crc.json",
    "amount.json",
    "tid.json",
)


class VectorsMissingError(LookupError):
    """A vector file is not where it was looked for (a broken install, or a wrong ``folder``); the command line
    reports it as ``error[vectors_missing]``."""


def folder() -> Traversable:
    """The shipped vectors' folder (a real directory for a wheel or an editable install)."""
    return files(__name__)


def load(name: str, where: Traversable | None = None) -> Any:
    """One vector file, parsed: from the shipped folder (cached) or from ``where``."""
    if where is None:
        return _shipped(name)
    return _read(where, name)


@functools.cache
def _shipped(name: str) -> Any:
    return _read(folder(), name)


def _read(where: Traversable, name: str) -> Any:
    path = where.joinpath(name)
    if not path.is_file():
        raise VectorsMissingError(f"STS conformance vector file {name} is not in {where}")
    return json.loads(path.read_text(encoding="utf-8"))


def reproduced(entry: dict[str, Any]) -> bool:
    """Whether an entry counts: every verification flag it carries is true (no flags: it does not count).

    README.md, "Which entries count": an entry is a conformance case when the implementations that checked it
    all reproduced it. Sections without per-entry flags are taken whole (see the runners)."""
    flags = entry.get("verified")
    if isinstance(flags, bool):
        return flags
    if isinstance(flags, dict):
        bools = [x for x in flags.values() if isinstance(x, bool)]
        return bool(bools) and all(bools)
    return False
