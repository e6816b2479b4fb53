"""One conformance case: a vector entry, the checks run on it, and what each failed check expected and got.

A runner does not stop at the first failed check: a vendor reading the report wants every difference of a case
at once. Every check is an expected value and a function computing ours; an engine error becomes the ``got``
(``error[crc_error]: ...``), never a traceback. Keys are shown only by fingerprint (a report is published, and
keys never appear in outputs, even the public test keys of the vectors).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec

from mita.conformance.clauses import clauses_of
from mita.sts import StsError

Show = Callable[[Any], str]
P = ParamSpec("P")


@dataclass(frozen=True, slots=True)
class Failure:
    """A check whose result differs from the vector (values as the report shows them)."""

    check: str
    expected: str
    got: str


@dataclass(frozen=True, slots=True)
class Case:
    """One vector entry (or group of entries) through the engine."""

    id: str  # "<file>#<section>/<index or label>": where the vector is, in the shipped files
    file: str
    section: str
    kind: str  # a key of clauses.KINDS
    algorithm: str | None  # "EA07", "EA09", "EA11"; None where no cipher is involved
    key_derivation: str | None  # "DKGA02", "DKGA04"; None where the key is not derived by a shipped vector
    clauses: tuple[str, ...]
    source: str  # who asserts the values (compliance suite and step, RFC, ...)
    checks: tuple[str, ...]  # every check run, in order
    expected: str  # the first check's expected value: the case's headline
    got: str
    failures: tuple[Failure, ...]
    note: str = ""

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass(frozen=True, slots=True)
class Excluded:
    """A vector entry that is shipped but is not a conformance case (and why): unverified, a known deviation."""

    id: str
    file: str
    section: str
    reason: str


@dataclass(frozen=True, slots=True)
class Meta:
    """What a runner knows of a case before running it."""

    id: str
    file: str
    section: str
    kind: str
    algorithm: str | None = None
    key_derivation: str | None = None
    source: str = ""
    note: str = ""


# ---------------------------------------------------------------- showing values


def show_plain(value: Any) -> str:
    if isinstance(value, dict | list | tuple):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def show_hex(digits: int) -> Show:
    """Integers as fixed-width hex (blocks, CRC fields, amounts as the token carries them)."""

    def show(value: Any) -> str:
        return f"{value:0{digits}x}" if isinstance(value, int) and not isinstance(value, bool) else show_plain(value)

    return show


def fingerprint(key: int | bytes | None, bits: int = 0) -> str:
    """A key as the report may show it: the first 8 hex digits of SHA-256 over its bytes."""
    if key is None:
        return "no key"
    raw = key if isinstance(key, bytes) else key.to_bytes(max(bits, key.bit_length() + 7) // 8, "big")
    return "key sha256:" + hashlib.sha256(raw).hexdigest()[:8]


def show_key(bits: int) -> Show:
    def show(value: Any) -> str:
        return fingerprint(value, bits) if isinstance(value, int) and not isinstance(value, bool) else show_plain(value)

    return show


# ---------------------------------------------------------------- running checks


def _error_text(exc: Exception) -> str:
    if isinstance(exc, StsError):
        return f"error[{exc.code}]: {exc.message}"
    return f"{type(exc).__name__}: {exc}"  # a vector the runner misread, or an engine bug: reported, not raised


@dataclass
class Checks:
    """The checks of one case, run in order and recorded (not stopped at the first failure)."""

    names: list[str] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    headline: tuple[str, str] | None = None

    def equal(self, name: str, compute: Callable[[], Any], expected: Any, show: Show = show_plain) -> Any:
        """Ours (``compute()``) must equal ``expected``; returns ours (None if it raised)."""
        self.names.append(name)
        try:
            got = compute()
        except Exception as exc:
            self._record(name, show(expected), _error_text(exc), failed=True)
            return None
        self._record(name, show(expected), show(got), failed=got != expected)
        return got

    def value(self, name: str, got: Any, expected: Any, show: Show = show_plain) -> None:
        """A value computed already (a reference implementation's, or a loop's) must equal ``expected``."""
        self.equal(name, lambda: got, expected, show)

    def differs(self, name: str, compute: Callable[[], Any], forbidden: Any, show: Show = show_plain) -> None:
        """Ours must NOT equal ``forbidden`` (a known non-conformant value of another implementation)."""
        self.names.append(name)
        try:
            got = compute()
        except Exception as exc:
            self._record(name, f"not {show(forbidden)}", _error_text(exc), failed=True)
            return
        self._record(name, f"not {show(forbidden)}", show(got), failed=got == forbidden)

    def raises(self, name: str, compute: Callable[[], Any], error: type[StsError], show: Show = show_plain) -> None:
        """Ours must refuse with ``error`` (its stable code), not answer."""
        self.names.append(name)
        expected = f"error[{error.code}]"
        try:
            got = compute()
        except error as exc:
            self._record(name, expected, f"error[{exc.code}]", failed=False)
            return
        except Exception as exc:
            self._record(name, expected, _error_text(exc), failed=True)
            return
        self._record(name, expected, show(got), failed=True)

    def holds(self, name: str, compute: Callable[[], bool], what: str) -> None:
        """A property of the vector itself or of ours that has no single expected value (``what`` says it)."""
        self.equal(name, lambda: "yes" if compute() else "no", "yes", lambda v: v if v != "yes" else what)

    def _record(self, name: str, expected: str, got: str, failed: bool) -> None:
        if self.headline is None:
            self.headline = (expected, got)
        if failed:
            self.failures.append(Failure(name, expected, got))

    def case(self, meta: Meta) -> Case:

        expected, got = self.headline or ("", "")
        return Case(
            id=meta.id,
            file=meta.file,
            section=meta.section,
            kind=meta.kind,
            algorithm=meta.algorithm,
            key_derivation=meta.key_derivation,
            clauses=clauses_of(meta.kind, meta.algorithm, meta.key_derivation),
            source=meta.source,
            checks=tuple(self.names),
            expected=expected,
            got=got,
            failures=tuple(self.failures),
            note=meta.note,
        )


def run_case(meta: Meta, body: Callable[Concatenate[Checks, P], None], *args: P.args, **kwargs: P.kwargs) -> Case:
    """Run the checks ``body(checks, *args)`` makes for one case. A vector the runner cannot read (a field
    missing from another copy of the files, say) fails the case with what went wrong, instead of stopping the
    report."""
    checks = Checks()
    try:
        body(checks, *args, **kwargs)
    except Exception as exc:
        checks.names.append("read the vector")
        checks._record("read the vector", "a vector entry shaped as the shipped files are", _error_text(exc), True)
    return checks.case(meta)
