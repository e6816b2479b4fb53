"""The optional compiled accelerator, ``mita.sts._speedups``: found and set up on first use, else pure Python.

Why: a vend runs one key derivation and one block cipher per token, and in pure Python MISTY1 (EA11) and STA
(EA07) cost microseconds of interpreter time each: EA11 vends ran at a fifth of the Java reference engine's
rate (issue 17). The extension (``_csrc/speedups.c``, built by the install's hatchling hook when a C compiler is
there) runs the ciphers, the CRC, a meter number's Luhn digits and DKGA04's HMAC-SHA-256 in C (with the CPU's
SHA extensions when it has them).

The Python modules stay the reference. The extension holds no table of its own: :func:`function` copies in the
tables :mod:`.sta`, :mod:`.misty1` and :mod:`.crc` build (on first use, one cipher at a time, so an EA07 token
never builds MISTY1's), and a differential property test (``tests/sts/test_accel.py``) holds both paths equal
on random inputs and on every vector. Nothing changes in what the engine answers, only in how fast.

Selection is automatic: the extension when it imports and is of this version (:data:`ABI`), else the pure
modules, silently. :func:`use` turns it off or on for a process (tests, the benchmark's reference figures).
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any

#: The ``ABI`` the extension must declare: a library built from an older ``speedups.c`` is not used.
ABI = 3

_module: ModuleType | None = None
_tried = False
_on = True
_ready: set[str] = set()


def _load() -> ModuleType | None:
    """The extension module if it is built and of this ABI (imported once)."""
    global _module, _tried
    if not _tried:
        _tried = True
        try:
            module = importlib.import_module("._speedups", __package__)
        except ImportError:
            return None
        _module = module if getattr(module, "ABI", None) == ABI else None
    return _module


def _speedups() -> ModuleType | None:
    """The extension module, unless it is missing or :func:`use` turned it off."""
    return _load() if _on else None


def available() -> bool:
    """True when the extension is built and loadable (whether or not :func:`use` turned it off)."""
    return _load() is not None


def enabled() -> bool:
    """True when the engine runs the extension's functions."""
    return _speedups() is not None


def _four_rows(tables: tuple[tuple[list[int], ...], ...]) -> bytes:
    """STA's round tables as C reads them: per byte position, the four rows a key byte's bits 3 and 7 pick (the
    rows of key bytes 0x00, 0x08, 0x80 and 0x88), 256 uint64 each. Row by row: a command's first token pays it."""
    from array import array

    packed = array("Q")
    for position in tables:
        for key_byte in (0x00, 0x08, 0x80, 0x88):
            packed.extend(position[key_byte])
    return packed.tobytes()


def _setup_sta(module: ModuleType) -> None:
    from .sta import STA

    module.sta_setup(_four_rows(STA._enc))


def _setup_sta_decrypt(module: ModuleType) -> None:
    from array import array

    from .sta import STA

    first = array("Q")
    for row in STA._dec_first:
        first.extend(row)
    module.sta_setup_decrypt(_four_rows(STA._dec), _four_rows(STA._dec_last), first.tobytes())


def _setup_misty1(module: ModuleType) -> None:
    from . import misty1

    fi_in, fi_out = misty1._fi_tables()
    module.misty1_setup(fi_in.tobytes(), fi_out.tobytes(), bytes(misty1._subkey_order()))


def _setup_crc(module: ModuleType) -> None:
    from array import array

    from .crc import TABLE

    module.crc_setup(array("H", TABLE).tobytes())


#: Each accelerated function and what it needs copied in first (a table, one cipher at a time).
_SETUP: dict[str, Callable[[ModuleType], None]] = {
    "sta_encrypt": _setup_sta,
    "sta_decrypt": _setup_sta_decrypt,
    "misty1_encrypt": _setup_misty1,
    "misty1_decrypt": _setup_misty1,
    "crc_field": _setup_crc,
    "pan_digit": lambda module: None,  # arithmetic only: no table
    "hmac_states": lambda module: None,  # SHA-256 (FIPS 180-4's constants), hashlib's reference
    "hmac_short": lambda module: None,
    "hmac_batch": lambda module: None,
}


def function(name: str) -> Callable[..., Any] | None:
    """The extension's ``name``, its tables set, or None: then the caller uses its pure-Python reference.

    A set-up that fails (a table of the wrong size: a mismatched build) also answers None, never an error.
    """
    module = _speedups()
    if module is None:
        return None
    if name not in _ready:
        try:
            _SETUP[name](module)
        except (AttributeError, TypeError, ValueError):
            return None
        _ready.add(name)
    found: Callable[..., Any] = getattr(module, name)
    return found


def use(on: bool) -> None:
    """Run the extension (when built) or the pure-Python modules from now on, in this process.

    Forgets every implementation chosen so far: the cipher tables of :mod:`.ea`, the CRC of :mod:`.tokens`, the
    Luhn digits of :mod:`.identity` and DKGA04's HMAC in :mod:`.dkga` choose again on their next call.
    """
    global _on
    _on = on
    from . import dkga, ea, identity, tokens

    dkga.forget_choices()
    ea.forget_choices()
    identity.forget_choices()
    tokens.forget_choices()
