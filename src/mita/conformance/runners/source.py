"""What every runner reads: the vector files of one run, and the decoder keys the DKGA files derive."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from importlib.resources.abc import Traversable
from typing import Any

from mita.conformance import vectors
from mita.conformance.case import Case, Excluded
from mita.conformance.reading import hexint

Result = Case | Excluded


class Source:
    """The vector files of one run (the shipped ones, or another folder)."""

    def __init__(self, where: Traversable | None = None) -> None:
        self.where = where

    def load(self, name: str) -> Any:
        return vectors.load(name, self.where)

    @functools.cached_property
    def derived_keys(self) -> dict[int, tuple[str, int]]:
        """Every decoder key the DKGA vector files derive: key -> (key derivation, bits). Lets a token case say
        which DKGA made its key (the token files name the key, not how it was made)."""
        keys: dict[int, tuple[str, int]] = {}
        for name, dkga in (("dkga02.json", "DKGA02"), ("dkga04.json", "DKGA04")):
            for v in self.load(name)["vectors"]:
                keys[hexint(v["decoder_key_hex"])] = (dkga, len(v["decoder_key_hex"]) * 4)
        return keys

    def key_derivation(self, key: int | None) -> str | None:
        found = self.derived_keys.get(key) if key is not None else None
        return found[0] if found else None


Runner = Callable[[Source], Iterable[Result]]
