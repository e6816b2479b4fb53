"""Array types and input checks shared by the bulk path.

Inputs are checked before any work is done, and every problem is a typed :mod:`mita.sts.errors`
error naming the argument (and the first bad index): a Python int beyond 64 bits is a RangeError,
never a silent wrap or a float; arrays of per-token values must broadcast to one length.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from ..ea import EA
from ..errors import FormatError, RangeError

U64: TypeAlias = npt.NDArray[np.uint64]
U32: TypeAlias = npt.NDArray[np.uint32]
U16: TypeAlias = npt.NDArray[np.uint16]
U8: TypeAlias = npt.NDArray[np.uint8]
I64: TypeAlias = npt.NDArray[np.int64]
Bools: TypeAlias = npt.NDArray[np.bool_]
Tokens: TypeAlias = npt.NDArray[np.bytes_]
#: Whatever :func:`encode_credit` and friends accept as per-token keys (see the module docstring).
Keys: TypeAlias = int | Sequence[int] | npt.NDArray[Any]


def _ea(ea: EA | int) -> EA:
    return ea if isinstance(ea, EA) else EA.parse(ea)


def _int_array(values: npt.ArrayLike, name: str) -> npt.NDArray[np.integer[Any]]:
    """An integer array of at most one dimension; Python ints beyond 64 bits are a RangeError, not a wrap."""
    if isinstance(values, np.ndarray):
        arr = values
    else:
        try:
            arr = np.asarray(values)
        except OverflowError:
            arr = np.asarray(values, dtype=object)
        if arr.dtype.kind in "fO":
            # NumPy infers float64 (or object) for Python ints that fit neither int64 nor uint64
            # together; redo it exactly, element by element.
            items = np.asarray(values, dtype=object).reshape(-1)
            for i, v in enumerate(items):
                if not isinstance(v, int | np.integer) or not -(1 << 63) <= int(v) < 1 << 64:
                    raise RangeError(f"{name}[{i}] must be a 64-bit integer (got {v!r})")
            ints = [int(v) for v in items]
            signed = min(ints, default=0) < 0
            if signed:  # negatives and values of 2**63 and up: no common 64-bit type
                big = next((i for i, v in enumerate(ints) if v >= 1 << 63), None)
                if big is not None:
                    raise RangeError(f"{name}[{big}] = {ints[big]} is out of range")
            arr = np.asarray(ints, dtype=np.int64 if signed else np.uint64).reshape(arr.shape)
    if arr.dtype.kind not in "iu":
        raise FormatError(f"{name} must be integers (got dtype {arr.dtype})")
    if arr.ndim > 1:
        raise FormatError(f"{name} must be one-dimensional (got shape {arr.shape})")
    return arr


def _check_range(arr: npt.NDArray[np.integer[Any]], name: str, bits: int) -> None:
    """Raise a RangeError naming the first element outside 0..2**bits - 1."""
    bad = (arr < 0) | (arr >= 1 << bits)
    if bad.any():
        i = int(np.argmax(bad)) if arr.ndim else 0
        value = arr[i] if arr.ndim else arr
        raise RangeError(f"{name}[{i}] must fit in {bits} bits (0..{(1 << bits) - 1}), got {value}")


def _broadcast(*arrays: npt.NDArray[np.integer[Any]]) -> list[npt.NDArray[np.integer[Any]]]:
    try:
        out = np.broadcast_arrays(*(np.atleast_1d(a) for a in arrays))
    except ValueError:
        raise FormatError("per-token arrays must have the same length") from None
    return [np.asarray(a) for a in out]


def _blocks(blocks: npt.ArrayLike) -> U64:
    arr = np.atleast_1d(_int_array(blocks, "blocks"))
    if arr.dtype != np.uint64:
        _check_range(arr, "blocks", 64)
        arr = arr.astype(np.uint64)
    return arr


def _keys64(keys: Keys, n: int) -> U64:
    """Per-token 64-bit keys (EA07, EA09) as uint64; an int is broadcast."""
    if isinstance(keys, int | np.integer):
        if not 0 <= int(keys) < 1 << 64:
            raise FormatError("EA07 and EA09 need 64-bit decoder keys")
        return np.broadcast_to(np.uint64(int(keys)), (n,))
    arr = _int_array(keys, "keys")
    if arr.dtype != np.uint64:
        bad = arr < 0
        if bad.any():
            raise FormatError(f"keys[{int(np.argmax(bad))}] is not a 64-bit decoder key")
    out: U64 = arr.astype(np.uint64, copy=False)
    if out.shape != (n,):
        raise FormatError(f"need one key per token ({n}), got shape {out.shape}")
    return out
