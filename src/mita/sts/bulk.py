"""The bulk token path: whole NumPy arrays of tokens at once, bit-identical to the single-token engine.

Why a second path: a utility that issues a month of tokens, re-keys a supply group or audits a
vending log handles millions of tokens, and the single-token engine costs tens of microseconds of
interpreter time per token. Here every step is a NumPy operation over a chunk of tokens, so the
interpreter cost is paid once per chunk instead of once per token.

What is here (every function is pure: no I/O, no clock, no randomness):

* :func:`encode_credit` builds class 0 TransferCredit tokens from TID, amount and RND arrays;
  :func:`encode_blocks` takes ready 64-bit data blocks of any class; :func:`data_blocks` builds
  such blocks from 44 data bits and adds the CRC (or CRC_C).
* :func:`decode` turns tokens back into class, subclass, data bits and per-token flags; it never
  raises on a bad token, it flags it (``format_ok``, ``crc_ok``, ``supported``, ``ok``).
* :func:`encrypt_blocks` / :func:`decrypt_blocks`: EA07 (STA, bitsliced), EA11 (MISTY1, table
  lookups over uint16 lanes) and the deprecated EA09 (DES, grouped by key).
* :func:`dkga02` / :func:`dkga04`: decoder keys for many meters in one call.

Keys: EA07 and EA09 keys are an ``uint64`` array (natural order, as the single path's integers),
or one ``int`` for every token. EA11 keys are either an ``(N, 16) uint8`` array (the 16 key bytes
in natural order, which is what :func:`dkga04` returns and what DKGA04 produces), an ``(N, 2)
uint64`` array of (high, low) halves, a sequence of Python ints, or one ``int``.

Work is done in chunks (:data:`STA_CHUNK`, :data:`MISTY1_CHUNK`, :data:`GLUE` tokens) into
buffers allocated once per call, so that the working set stays in the CPU caches and memory stays
bounded however many tokens are passed: besides the inputs and the output, a call holds a few
MiB. Measured on one core of the 2-vCPU target at N = 1e6 with a distinct key per token (best
of five, ``benchmarks/bulk_probe.py``): :func:`encode_credit` 5.3 million tokens/s with EA07 and
7.0 million with EA11, :func:`decode` 5.0 and 6.5 million; while other jobs loaded the machine
these fell to about 1.5 million.
"""

from __future__ import annotations

import hmac
import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

import numpy as np
import numpy.typing as npt
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from .amount import MAX_UNITS, OFFSETS
from .crc import crc16_modbus
from .dkga import DKGA04_VENDING_KEY_BYTES, dkga04_input
from .ea import EA
from .errors import FormatError, RangeError, UnsupportedError
from .identity import MeterNumber, check_key_params
from .misty1 import S7, S9
from .sta import E1, E2, SAMPLE_E1, SAMPLE_E2, SAMPLE_P, P
from .tid import BaseDate
from .tokens import (
    REGISTRY,
    Set1stSectionDecoderKey,
    Set2ndSectionDecoderKey,
    Set3rdSectionDecoderKey,
    Set4thSectionDecoderKey,
    Token,
)

U64: TypeAlias = npt.NDArray[np.uint64]
U32: TypeAlias = npt.NDArray[np.uint32]
U16: TypeAlias = npt.NDArray[np.uint16]
U8: TypeAlias = npt.NDArray[np.uint8]
I64: TypeAlias = npt.NDArray[np.int64]
Bools: TypeAlias = npt.NDArray[np.bool_]
Tokens: TypeAlias = npt.NDArray[np.bytes_]
#: Whatever :func:`encode_credit` and friends accept as per-token keys (see the module docstring).
Keys: TypeAlias = int | Sequence[int] | npt.NDArray[Any]

#: Tokens per call of the bitsliced STA; a multiple of 64, as one plane word holds 64 tokens. Each
#: circuit step then works on 16 rows of 512 words (64 KiB): large enough to amortise NumPy's
#: per-call cost, small enough for L2. Measured on the 2-vCPU target, 8K..64K: 32K was best.
STA_CHUNK: Final = 32768
#: Tokens per call of MISTY1 (its uint16 lanes are then 64 KiB each); 32K measured best as well.
MISTY1_CHUNK: Final = 32768
#: Tokens per call of EA09, which loops over distinct keys anyway.
DES_CHUNK: Final = 16384
#: Tokens per step of the glue around the ciphers (fields, CRC, digits). Temporaries of 8K uint64
#: are 64 KiB, under glibc's 128 KiB mmap threshold: larger ones arrive as fresh kernel pages on
#: every call, and their page faults cost more than the arithmetic (digits: 20 vs 75 ns/token).
GLUE: Final = 8192

_M44: Final = (1 << 44) - 1
_KEEP: Final = np.uint64(~(3 << 27) & ((1 << 64) - 1))


# ----------------------------------------------------------------------------------------------
# Input checks


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


# ----------------------------------------------------------------------------------------------
# TransferAmount (6.3.6.2), vectorised exactly like amount.encode_amount / decode_amount

_POW10: Final = np.array([1, 10, 100, 1000], dtype=np.int64)
_OFFSETS: Final = np.array(OFFSETS, dtype=np.int64)
#: The largest value each exponent band can carry; anything above band e needs e + 1.
_BAND_TOP: Final = tuple(OFFSETS[e] + 16383 * 10**e for e in range(4))


def _amount_fields(units: I64) -> U64:
    """16-bit fields for in-range units (0..MAX_UNITS), rounded up as the standard demands.

    The exponent is the number of bands whose top lies below the value; a value in the gap under
    a band (e.g. 180215..180223) gets that band's first value, which ``maximum(.., 0)`` gives.
    """
    e = (units > _BAND_TOP[0]).astype(np.int64)
    e += units > _BAND_TOP[1]
    e += units > _BAND_TOP[2]
    p = _POW10[e]
    m = np.maximum(units - _OFFSETS[e], 0)
    m += p - 1
    m //= p
    e <<= 14
    e |= m
    out: U64 = e.astype(np.uint64)
    return out


def encode_amounts(units: npt.ArrayLike) -> U16:
    """Vectorised :func:`mita.sts.encode_amount`; the first out-of-range element raises RangeError."""
    arr = np.atleast_1d(_int_array(units, "amounts"))
    _check_amounts(arr)
    return _amount_fields(arr.astype(np.int64)).astype(np.uint16)


def _check_amounts(arr: npt.NDArray[np.integer[Any]]) -> None:
    negative = arr < 0
    if negative.any():
        i = int(np.argmax(negative))
        raise RangeError(f"amounts[{i}]: amount must not be negative (got {arr[i]})")
    big = arr > MAX_UNITS
    if big.any():
        i = int(np.argmax(big))
        raise RangeError(f"amounts[{i}]: amount {arr[i]} exceeds the maximum of {MAX_UNITS} base units")


def decode_amounts(fields: npt.ArrayLike) -> I64:
    """Base units carried by 16-bit amount fields (vectorised :func:`mita.sts.decode_amount`)."""
    f = np.asarray(fields).astype(np.int64) & 0xFFFF
    e = f >> 14
    out: I64 = (f & 0x3FFF) * _POW10[e] + _OFFSETS[e]
    return out


# ----------------------------------------------------------------------------------------------
# CRC-16/MODBUS over the 7 big-endian bytes of class|subclass|data44 (SPEC.md §2)


def _crc_tables(suffix: bytes) -> tuple[U16, int]:
    """Per-byte-position tables of the CRC field, and the field of an all-zero message.

    The CRC is affine over GF(2): crc(a ^ b) = crc(a) ^ crc(b) ^ crc(0) for equal-length
    messages. So the field of a 7-byte message is the zero-message field XORed with one
    table entry per byte, and the 7 lookups are independent (no serial dependency between
    bytes as in the textbook loop). The byte swap into the field is linear too, so it is
    folded into the tables. ``suffix`` is the 0x01 byte CRC_C appends, or nothing.
    """

    def field(message: bytes) -> int:
        crc = crc16_modbus(message + suffix)
        return (crc & 0xFF) << 8 | crc >> 8

    zero = field(bytes(7))
    table = np.zeros((7, 256), dtype=np.uint16)
    for j in range(7):
        for b in range(256):
            table[j, b] = field(bytes(j) + bytes([b]) + bytes(6 - j)) ^ zero
    return table, zero


_CRC_PLAIN: Final = _crc_tables(b"")
_CRC_CURRENCY: Final = _crc_tables(b"\x01")


def _crc_field(info: U64, currency: bool) -> U64:
    """CRC field of each 56-bit ``class << 48 | subclass << 44 | data44`` (CRC_C if ``currency``)."""
    table, zero = _CRC_CURRENCY if currency else _CRC_PLAIN
    signed = info.view(np.int64)  # below 2**56, so the view is the same number and indexes directly
    acc = np.full(info.shape, zero, dtype=np.uint16)
    idx = np.empty(info.shape, dtype=np.int64)
    part = np.empty(info.shape, dtype=np.uint16)
    for j in range(7):
        np.right_shift(signed, 8 * (6 - j), out=idx)
        np.bitwise_and(idx, 0xFF, out=idx)
        np.take(table[j], idx, out=part, mode="clip")
        acc ^= part
    return acc.astype(np.uint64)


def _crc_fields(token_class: U64, subclass: U64, data44: U64) -> U64:
    """CRC or CRC_C field per element, CRC_C where class 0 has subclass 4..7."""
    info = token_class << np.uint64(48) | subclass << np.uint64(44) | data44
    out = _crc_field(info, currency=False)
    currency = (token_class == 0) & (subclass >= 4) & (subclass <= 7)
    if currency.any():
        out[currency] = _crc_field(info[currency], currency=True)
    return out


def data_blocks(token_class: int | npt.ArrayLike, subclasses: int | npt.ArrayLike, data44: npt.ArrayLike) -> U64:
    """64-bit data blocks ``subclass << 60 | data44 << 16 | CRC`` (vectorised :func:`mita.sts.to_block`).

    ``token_class`` and ``subclasses`` may be one value or one per block; data44 holds the 44
    class-specific bits (D bits 59..16) of each token.
    """
    cls_a = _int_array(token_class, "token_class")
    sub_a = _int_array(subclasses, "subclasses")
    data_a = _int_array(data44, "data44")
    _check_range(cls_a, "token_class", 2)
    _check_range(sub_a, "subclasses", 4)
    _check_range(data_a, "data44", 44)
    cls_b, sub_b, data_b = (a.astype(np.uint64) for a in _broadcast(cls_a, sub_a, data_a))
    out: U64 = sub_b << np.uint64(60) | data_b << np.uint64(16) | _crc_fields(cls_b, sub_b, data_b)
    return out


# ----------------------------------------------------------------------------------------------
# Bitsliced STA (EA07)
#
# Transposed, the 64 bits of 64 tokens become 64 words ("bit-planes"): word b holds bit b of each
# of the 64 tokens. The STA permutation is then a relabelling of planes (one row gather), key
# rotations are relabellings of key planes (slices of a suitably ordered copy), and the key-selected nibble
# substitution is a Boolean circuit of AND/XOR/NOT evaluated on whole planes. Each NumPy call
# processes 64 tokens per machine word, which is why this beats per-byte table lookups, whose
# gathers cost a few nanoseconds per element per round.

_AND, _XOR, _NOT, _COPY = 0, 1, 2, 3
#: (opcode, destination register, operand register, operand register)
Instr: TypeAlias = tuple[int, int, int, int]
_INPUTS = 5  # registers 0..3: nibble bits x0..x3; register 4: the key selector bit
_OUTPUTS = 4  # registers 5..8: substituted bits y0..y3; temporaries follow


@dataclass(frozen=True, slots=True)
class SboxCircuit:
    """A straight-line AND/XOR/NOT program computing y = (when_set if s else when_clear)[x].

    Derived at import from the algebraic normal form (ANF) of each output bit as a function of
    the five inputs, with shared monomials and greedily shared XOR pairs (Paar's heuristic).
    Deriving it from the tables, instead of pasting a hand-made circuit, keeps the tables the
    one source of truth (the sample-table STA gets its own circuit for free), and
    :func:`_check_circuit` proves each circuit against its tables at import.
    """

    program: tuple[Instr, ...]
    temps: int


def _anf(truth: Sequence[int]) -> set[int]:
    """Monomials (as variable bit-masks) of a Boolean function given by its truth table (Möbius transform)."""
    a = list(truth)
    n = len(a).bit_length() - 1
    for i in range(n):
        for m in range(len(a)):
            if m >> i & 1:
                a[m] ^= a[m ^ (1 << i)]
    return {m for m in range(len(a)) if a[m]}


def _compile_sbox(when_set: Sequence[int], when_clear: Sequence[int]) -> SboxCircuit:
    ssa: list[tuple[int, int, int]] = []  # node i + _INPUTS = (op, a, b); nodes 0..4 are the inputs

    def emit(op: int, a: int, b: int) -> int:
        ssa.append((op, a, b))
        return _INPUTS + len(ssa) - 1

    node_of: dict[int, int] = {1 << v: v for v in range(_INPUTS)}

    def monomial(m: int) -> int:
        if m in node_of:
            return node_of[m]
        have = sorted(node_of)
        for a, c in itertools.product(have, have):
            if a | c == m and a != m and c != m:
                node_of[m] = emit(_AND, node_of[a], node_of[c])
                return node_of[m]
        top = m.bit_length() - 1
        node_of[m] = emit(_AND, monomial(m & ~(1 << top)), top)
        return node_of[m]

    anfs = []
    for j in range(4):
        truth = [((when_set if m >> 4 else when_clear)[m & 15] >> j) & 1 for m in range(32)]
        anfs.append(_anf(truth))
    for m in sorted(set().union(*anfs) - {0}, key=lambda m: (m.bit_count(), m)):
        monomial(m)
    sums = [{node_of[m] for m in f if m} for f in anfs]
    # Share the XOR of the pair of terms that occurs in most outputs, while some pair repeats.
    while True:
        counts: Counter[tuple[int, int]] = Counter()
        for s in sums:
            counts.update(itertools.combinations(sorted(s), 2))
        best = max(counts.items(), key=lambda kv: (kv[1], [-v for v in kv[0]]), default=None)
        if best is None or best[1] < 2:
            break
        (u, v), _ = best
        w = emit(_XOR, u, v)
        for s in sums:
            if u in s and v in s:
                s -= {u, v}
                s.add(w)
    finals = []
    for s, f in zip(sums, anfs, strict=True):
        terms = sorted(s)
        acc = terms[0]
        for t in terms[1:]:
            acc = emit(_XOR, acc, t)
        if 0 in f:  # the constant monomial: complement
            acc = emit(_NOT, acc, acc)
        finals.append(acc)
    return _allocate(*_schedule(ssa, finals))


def _schedule(ssa: list[tuple[int, int, int]], finals: list[int]) -> tuple[list[tuple[int, int, int]], list[int]]:
    """Reorder the SSA program to keep few values alive (greedy list scheduling).

    Among the instructions whose operands are ready, take the one that ends the life of the
    most temporaries (ties: the earliest). Fewer live values mean fewer plane buffers, and
    those buffers then fit in the CPU's L2 cache.
    """
    uses: Counter[int] = Counter()
    for _, a, b in ssa:
        uses.update({a, b})
    done: set[int] = set(range(_INPUTS))
    renumber: dict[int, int] = {v: v for v in range(_INPUTS)}
    order: list[tuple[int, int, int]] = []
    pending = set(range(len(ssa)))
    while pending:
        best, best_score = -1, -1
        for i in sorted(pending):
            op, a, b = ssa[i]
            if a not in done or b not in done:
                continue
            score = sum(1 for v in {a, b} if v >= _INPUTS and uses[v] == 1)
            if score > best_score:
                best, best_score = i, score
        op, a, b = ssa[best]
        for v in {a, b}:
            uses[v] -= 1
        pending.remove(best)
        done.add(_INPUTS + best)
        renumber[_INPUTS + best] = _INPUTS + len(order)
        order.append((op, renumber[a], renumber[b]))
    return order, [renumber[f] for f in finals]


def _allocate(ssa: list[tuple[int, int, int]], finals: list[int]) -> SboxCircuit:
    """Map SSA nodes to few registers (linear scan), so the circuit's planes stay in cache."""
    end = len(ssa)
    last_use: dict[int, int] = {}
    for i, (_, a, b) in enumerate(ssa):
        last_use[a] = last_use[b] = i
    for f in finals:
        last_use[f] = end
    out_reg: dict[int, int] = {}
    for j, f in enumerate(finals):
        if f >= _INPUTS and finals.count(f) == 1:
            out_reg[f] = _INPUTS + j
    reg: dict[int, int] = {v: v for v in range(_INPUTS)}
    free: list[int] = []
    temps = 0
    program: list[Instr] = []
    for i, (op, a, b) in enumerate(ssa):
        node = _INPUTS + i
        ra, rb = reg[a], reg[b]
        for operand in {a, b}:
            r = reg[operand]
            if last_use[operand] == i and r >= _INPUTS + _OUTPUTS:
                free.append(r)
        if node in out_reg:
            r = out_reg[node]
        elif free:
            free.sort()
            r = free.pop(0)
        else:
            r = _INPUTS + _OUTPUTS + temps
            temps += 1
        reg[node] = r
        program.append((op, r, ra, rb))
    for j, f in enumerate(finals):
        if out_reg.get(f) != _INPUTS + j:
            program.append((_COPY, _INPUTS + j, reg[f], reg[f]))
    return SboxCircuit(tuple(program), temps)


def _check_circuit(circuit: SboxCircuit, when_set: Sequence[int], when_clear: Sequence[int]) -> None:
    """Run the circuit on 32-bit truth tables (one bit per input combination) and compare."""
    full = (1 << 32) - 1
    regs = [sum(1 << m for m in range(32) if m >> v & 1) for v in range(_INPUTS)]
    regs += [0] * (_OUTPUTS + circuit.temps)
    for op, d, a, b in circuit.program:
        if op == _AND:
            regs[d] = regs[a] & regs[b]
        elif op == _XOR:
            regs[d] = regs[a] ^ regs[b]
        elif op == _NOT:
            regs[d] = ~regs[a] & full
        else:
            regs[d] = regs[a]
    for m in range(32):
        y = sum((regs[_INPUTS + j] >> m & 1) << j for j in range(4))
        if y != (when_set if m >> 4 else when_clear)[m & 15]:
            raise AssertionError("bitsliced S-box circuit does not match its tables")


_UFUNC: Final = {_AND: np.bitwise_and, _XOR: np.bitwise_xor}

_TRANSPOSE_MASKS: Final = {j: np.uint64(sum(1 << b for b in range(64) if not b & j)) for j in (32, 16, 8, 4, 2, 1)}


def _transpose64(m: U64, tmp: U64) -> None:
    """In place on (k, 64, G) arrays: afterwards bit c of m[i, b, g] is what bit b of m[i, c, g] was.

    The classic six-step recursive 64x64 bit-matrix transpose (swap off-diagonal blocks of
    32, 16, ... 1 bits with masks), done for all G columns, and all k matrices, at once; each
    step works on contiguous runs of j*G words. Its own inverse. ``tmp`` holds 32*k*G words.
    Stacking the key and the block matrices (k = 2) halves the NumPy calls, which at these
    sizes cost as much as the work.
    """
    k, g = m.shape[0], m.shape[2]
    for j in (32, 16, 8, 4, 2, 1):
        v = m.reshape(k, 64 // (2 * j), 2, j * g)
        a, b = v[:, :, 0], v[:, :, 1]  # rows r (bit j of r clear) and r + j
        t = tmp.reshape(k, 64 // (2 * j), j * g)
        np.right_shift(a, j, out=t)
        np.bitwise_xor(t, b, out=t)
        np.bitwise_and(t, _TRANSPOSE_MASKS[j], out=t)
        np.bitwise_xor(b, t, out=b)
        np.left_shift(t, j, out=t)
        np.bitwise_xor(a, t, out=a)


def _inverse(table: Sequence[int]) -> tuple[int, ...]:
    out = [0] * len(table)
    for i, v in enumerate(table):
        out[v] = i
    return tuple(out)


def _label(b: int) -> int:
    """Row of data plane b (bit b of the block) in the round layout: bit j of nibble i at row 16 j + i.

    With this layout the four circuit inputs x0..x3 of all 16 nibbles are four contiguous
    (16, G) blocks of rows. Contiguity matters: a NumPy call on rows picked with a stride
    costs two to three times one on contiguous rows.
    """
    return (b % 4) * 16 + b // 4


class BitslicedSta:
    """STA over arrays of blocks and per-block keys, bitsliced (real tables by default).

    Round r (0-based) of the single path substitutes nibble i with E2 when bit 4i+3 of
    ``rotl(rotr(~K, 12), r)`` is set, i.e. when bit (4i + 15 - r) mod 64 of K is *clear*. So the
    selector of nibble i is K's plane (4i + 15 - r) mod 64 and the circuit takes E1 when it is
    set; the complement costs nothing. Those 16 planes all have the residue c = (15 - r) mod 4
    and consecutive quotients from (15 - r) // 4 on (mod 16), so the key planes are stored
    grouped by residue, each group of 16 written twice: a round's selectors are then one
    contiguous slice. Decryption walks the rounds backwards with the inverse tables.
    """

    def __init__(self, e1: Sequence[int] = E1, e2: Sequence[int] = E2, perm: Sequence[int] = P) -> None:
        d1, d2 = _inverse(e1), _inverse(e2)
        self.enc = _compile_sbox(e1, e2)
        self.dec = _compile_sbox(d1, d2)
        _check_circuit(self.enc, e1, e2)
        _check_circuit(self.dec, d1, d2)
        inv = _inverse(perm)
        label = [_label(b) for b in range(64)]
        nat = _inverse(label)
        #: Natural planes (transpose output) to round layout, and back.
        self.to_rounds = np.array(nat, dtype=np.intp)
        self.from_rounds = np.array(label, dtype=np.intp)
        #: Encryption moves bit b to bit perm[b]: row label(c) gathers row label(perm^-1[c]).
        self.gather_enc = np.array([label[inv[nat[q]]] for q in range(64)], dtype=np.intp)
        #: Decryption first undoes that: row label(b) gathers row label(perm[b]).
        self.gather_dec = np.array([label[perm[nat[q]]] for q in range(64)], dtype=np.intp)
        #: Key planes in residue groups, each group twice: row 32 c + t holds plane c + 4 (t mod 16).
        self.key_rows = np.array([c + 4 * (t % 16) for c in range(4) for t in range(32)], dtype=np.intp)

    def encrypt(self, blocks: npt.ArrayLike, keys: Keys) -> U64:
        """Encrypt each block with its key (an int is used for every block)."""
        return self._run(blocks, keys, decrypt=False)

    def decrypt(self, blocks: npt.ArrayLike, keys: Keys) -> U64:
        """Invert :meth:`encrypt`."""
        return self._run(blocks, keys, decrypt=True)

    def _run(self, blocks: npt.ArrayLike, keys: Keys, decrypt: bool) -> U64:
        b = _blocks(blocks)
        k = _keys64(keys, len(b))
        out = np.empty_like(b)
        work = _StaWork(self, min(STA_CHUNK, -(-len(b) // 64) * 64))
        for start in range(0, len(b), work.size):
            sl = slice(start, start + work.size)
            out[sl] = work.run(b[sl], k[sl], decrypt)  # a view of the work buffer: copy it out
        return out


class _StaWork:
    """The planes and circuit registers for one chunk size, allocated once per call."""

    def __init__(self, sta: BitslicedSta, size: int) -> None:
        g = max(size, 64) // 64
        self.sta = sta
        self.size = g * 64
        self.nat = np.empty((2, 64, g), dtype=np.uint64)  # key, block planes in natural order
        self.x = np.empty((64, g), dtype=np.uint64)  # round layout, between rounds
        self.s = np.empty((64, g), dtype=np.uint64)  # round layout, inside a round
        self.k = np.empty((128, g), dtype=np.uint64)  # key planes, see BitslicedSta.key_rows
        self.tmp = np.empty(64 * g, dtype=np.uint64)
        temps = max(sta.enc.temps, sta.dec.temps)
        self.temps = [np.empty((16, g), dtype=np.uint64) for _ in range(temps)]
        self.enc = self._steps(sta.enc, self.x, self.s)
        self.dec = self._steps(sta.dec, self.s, self.x)

    def _steps(self, circuit: SboxCircuit, src: U64, dst: U64) -> list[list[tuple[Any, tuple[U64, ...]]]]:
        """Per round, the ufunc calls of the circuit with their operand views bound once."""
        rounds = []
        for r in range(16):
            first = 32 * ((15 - r) % 4) + (15 - r) // 4
            regs = [src[16 * j : 16 * j + 16] for j in range(4)]
            regs.append(self.k[first : first + 16])
            regs += [dst[16 * j : 16 * j + 16] for j in range(4)]
            regs += self.temps
            steps: list[tuple[Any, tuple[U64, ...]]] = []
            for op, d, a, b in circuit.program:
                if op in _UFUNC:
                    steps.append((_UFUNC[op], (regs[a], regs[b], regs[d])))
                elif op == _NOT:
                    steps.append((np.invert, (regs[a], regs[d])))
                else:
                    steps.append((np.copyto, (regs[d], regs[a])))
            rounds.append(steps)
        return rounds

    def run(self, blocks: U64, keys: U64, decrypt: bool) -> U64:
        """Encrypt or decrypt up to ``size`` blocks."""
        n = len(blocks)
        sta, nat, x, s = self.sta, self.nat, self.x, self.s
        # Token t = c * G + g sits in row c, column g; the transpose turns row b into plane b.
        keys_in: U64 = nat[0].reshape(-1)
        blocks_in: U64 = nat[1].reshape(-1)
        keys_in[:n] = keys
        keys_in[n:] = 0
        blocks_in[:n] = blocks
        blocks_in[n:] = 0
        _transpose64(nat, self.tmp)
        np.take(nat[0], sta.key_rows, axis=0, out=self.k)
        np.take(nat[1], sta.to_rounds, axis=0, out=x)
        if decrypt:
            for r in range(15, -1, -1):
                np.take(x, sta.gather_dec, axis=0, out=s)
                for f, args in self.dec[r]:
                    f(*args)
        else:
            for r in range(16):
                for f, args in self.enc[r]:
                    f(*args)
                np.take(s, sta.gather_enc, axis=0, out=x)
        out = nat[1:]
        np.take(x, sta.from_rounds, axis=0, out=out[0])
        _transpose64(out, self.tmp[: 32 * x.shape[1]])
        return blocks_in[:n]


STA: Final = BitslicedSta()
SAMPLE_STA: Final = BitslicedSta(SAMPLE_E1, SAMPLE_E2, SAMPLE_P)


# ----------------------------------------------------------------------------------------------
# MISTY1 (EA11) over uint16 lanes


def _fi_tables() -> tuple[U16, U16]:
    """FI split around its key: FI(x, k) = FI_OUT[FI_IN[x] ^ k] (RFC 2994 §2.3.2).

    The 7-bit and 9-bit halves before the key XOR are a fixed function of x, and so are those
    after it; the key is XORed into both halves at once as one 16-bit value. Two gathers per FI.
    """
    s7 = np.array(S7, dtype=np.uint32)
    s9 = np.array(S9, dtype=np.uint32)
    x = np.arange(1 << 16, dtype=np.uint32)
    d9 = s9[x >> 7] ^ (x & 0x7F)
    d7 = (s7[x & 0x7F] ^ d9) & 0x7F
    fi_in = (d7 << 9 | d9).astype(np.uint16)
    d7 = x >> 9
    fi_out = (d7 << 9 | (s9[x & 0x1FF] ^ d7)).astype(np.uint16)
    return fi_in, fi_out


_FI_IN, _FI_OUT = _fi_tables()


class _MistyWork:
    """MISTY1 over one chunk of tokens, with every buffer allocated once per call.

    The state is four uint16 lanes per token (the 16-bit halves of the two 32-bit halves of
    the block): FO, FI and FL all work on 16-bit words, and 16-bit lanes keep each NumPy call
    on a few tens of KiB. Buffers are reused rather than allocated per operation because
    NumPy takes temporaries of 128 KiB and more straight from the kernel, and the page faults
    of fresh memory would cost more than the arithmetic.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.words = np.empty((8, size), dtype=np.uint16)  # K_0..K_7, filled by the caller
        self.kp = np.empty((8, size), dtype=np.uint16)  # K'_0..K'_7
        self.lanes = np.empty((4, size), dtype=np.uint16)
        self.scratch = np.empty((4, size), dtype=np.uint16)
        self.wide = np.empty(size, dtype=np.uint64)
        self.out = np.empty(size, dtype=np.uint64)

    def run(self, blocks: U64, decrypt: bool) -> U64:
        """Encrypt or decrypt ``blocks`` with the key words in ``self.words``; returns a view of ``self.out``."""
        m = len(blocks)
        k = [self.words[i, :m] for i in range(8)]
        kp = [self.kp[i, :m] for i in range(8)]
        a, b, t0, t1 = (self.scratch[i, :m] for i in range(4))
        wide, out = self.wide[:m], self.out[:m]

        def fi(x: U16, key: U16, result: U16) -> None:
            np.take(_FI_IN, x, out=a, mode="clip")  # x is never ``a``
            np.bitwise_xor(a, key, out=a)
            np.take(_FI_OUT, a, out=result, mode="clip")

        def fo_into(h: U16, lo: U16, sub: Sequence[U16], th: U16, tl: U16) -> None:
            """(th, tl) ^= FO((h, lo)) with subkeys KO1, KI1, KO2, KI2, KO3, KI3, KO4."""
            ko1, ki1, ko2, ki2, ko3, ki3, ko4 = sub
            np.bitwise_xor(h, ko1, out=b)
            fi(b, ki1, t0)
            np.bitwise_xor(t0, lo, out=t0)  # t0 = FI(h ^ KO1, KI1) ^ lo
            np.bitwise_xor(lo, ko2, out=b)
            fi(b, ki2, t1)
            np.bitwise_xor(t1, t0, out=t1)  # t1 = FI(lo ^ KO2, KI2) ^ t0
            np.bitwise_xor(t0, ko3, out=b)
            fi(b, ki3, t0)
            np.bitwise_xor(t0, t1, out=t0)  # t0 = FI(t0 ^ KO3, KI3) ^ t1
            th ^= t1
            th ^= ko4
            tl ^= t0

        def fl(h: U16, lo: U16, kl: tuple[U16, U16]) -> None:
            np.bitwise_and(h, kl[0], out=b)
            lo ^= b
            np.bitwise_or(lo, kl[1], out=b)
            h ^= b

        def fl_inv(h: U16, lo: U16, kl: tuple[U16, U16]) -> None:
            np.bitwise_or(lo, kl[1], out=b)
            h ^= b
            np.bitwise_and(h, kl[0], out=b)
            lo ^= b

        # Key schedule (RFC 2994 §2.2): K'_i = FI(K_i, K_{i+1 mod 8}), then the subkeys in use order.
        for i in range(8):
            fi(k[i], k[(i + 1) % 8], kp[i])
        fo = [
            [k[r], kp[(r + 5) % 8], k[(r + 2) % 8], kp[(r + 1) % 8], k[(r + 7) % 8], kp[(r + 3) % 8], k[(r + 4) % 8]]
            for r in range(8)
        ]
        fls = [
            (k[i // 2], kp[(i // 2 + 6) % 8]) if i % 2 == 0 else (kp[(i // 2 + 2) % 8], k[(i // 2 + 4) % 8])
            for i in range(10)
        ]

        lane = [self.lanes[i, :m] for i in range(4)]
        for i, shift in enumerate((48, 32, 16, 0)):
            np.right_shift(blocks, shift, out=wide)
            np.copyto(lane[i], wide, casting="unsafe")  # keeps the low 16 bits
        if not decrypt:
            h0, l0, h1, l1 = lane
            for r in (0, 2, 4, 6):
                fl(h0, l0, fls[r])
                fl(h1, l1, fls[r + 1])
                fo_into(h0, l0, fo[r], h1, l1)
                fo_into(h1, l1, fo[r + 1], h0, l0)
            fl(h0, l0, fls[8])
            fl(h1, l1, fls[9])
            order = (h1, l1, h0, l0)
        else:
            h1, l1, h0, l0 = lane
            fl_inv(h0, l0, fls[8])
            fl_inv(h1, l1, fls[9])
            for r in (6, 4, 2, 0):
                fo_into(h1, l1, fo[r + 1], h0, l0)
                fo_into(h0, l0, fo[r], h1, l1)
                fl_inv(h0, l0, fls[r])
                fl_inv(h1, l1, fls[r + 1])
            order = (h0, l0, h1, l1)
        np.copyto(out, order[0])
        for part in order[1:]:
            out <<= np.uint64(16)
            np.copyto(wide, part)
            out |= wide
        return out


# ----------------------------------------------------------------------------------------------
# Keys


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


class _Keys128:
    """Per-token 128-bit keys (EA11), normalised once and cut into 16-bit words chunk by chunk.

    Accepted: an (N, 16) uint8 array of key bytes (natural order, as DKGA04 makes them), an
    (N, 2) uint64 array of (high, low) halves, a sequence of Python ints, or one int. Words are
    produced per chunk into the MISTY1 buffers so that no (8, N) copy of all keys is made.
    """

    def __init__(self, keys: Keys, n: int) -> None:
        self.const: U16 | None = None
        if isinstance(keys, int | np.integer):
            if not 0 <= int(keys) < 1 << 128:
                raise FormatError("EA11 needs 128-bit decoder keys")
            self.const = np.frombuffer(int(keys).to_bytes(16, "big"), dtype=">u2").astype(np.uint16)
            return
        arr = keys if isinstance(keys, np.ndarray) and keys.dtype != object else None
        if arr is None:
            try:
                raw = b"".join(int(k).to_bytes(16, "big") for k in keys)
            except (OverflowError, TypeError, ValueError):
                raise FormatError("EA11 needs 128-bit decoder keys (0 <= key < 2**128)") from None
            arr = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 16)
        self.bytes_: U8 | None = None
        self.halves: U64 | None = None
        if arr.ndim == 2 and arr.shape[1] == 16 and arr.dtype == np.uint8:
            self.bytes_ = np.ascontiguousarray(arr, dtype=np.uint8)
        elif arr.ndim == 2 and arr.shape[1] == 2 and arr.dtype == np.uint64:
            self.halves = np.asarray(arr, dtype=np.uint64)
        else:
            raise FormatError(f"EA11 keys must be (N, 16) uint8 or (N, 2) uint64 (got {arr.dtype} {arr.shape})")
        if len(arr) != n:
            raise FormatError(f"need one key per token ({n}), got {len(arr)}")

    def fill(self, words: U16, sl: slice, wide: U64) -> None:
        """Write K_0..K_7 of tokens ``sl`` into the (8, m) ``words``; ``wide`` is (m,) scratch."""
        if self.const is not None:
            words[...] = self.const[:, None]
        elif self.bytes_ is not None:
            np.copyto(words, self.bytes_[sl].view(">u2").T)  # byte-swapping copy, no temporary
        else:
            assert self.halves is not None
            for half in range(2):
                for w in range(4):
                    np.right_shift(self.halves[sl, half], 48 - 16 * w, out=wide)
                    np.copyto(words[4 * half + w], wide, casting="unsafe")


# ----------------------------------------------------------------------------------------------
# EA09 (DES): deprecated, kept for meters that still have it


def _des(blocks: U64, keys: U64, decrypt: bool) -> U64:
    """Single DES ECB; one cipher context per distinct key, every block of that key in one call."""
    out = np.empty_like(blocks)
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
    ends = np.r_[starts[1:], len(order)]
    for s, e in zip(starts, ends, strict=True):
        idx = order[s:e]
        cipher = Cipher(TripleDES(int(sorted_keys[s]).to_bytes(8, "big") * 3), modes.ECB())
        ctx = cipher.decryptor() if decrypt else cipher.encryptor()
        data = ctx.update(blocks[idx].astype(">u8").tobytes()) + ctx.finalize()
        out[idx] = np.frombuffer(data, dtype=">u8")
    return out


# ----------------------------------------------------------------------------------------------
# Ciphers over whole arrays


class _Cipher:
    """One algorithm with its normalised keys and buffers, applied chunk by chunk.

    Callers write up to ``chunk`` blocks into ``inbuf`` (or pass any array) and call it with
    the slice of the tokens those blocks belong to. The result is a view of an internal
    buffer, valid until the next call: fresh arrays of this size would cost page faults.
    """

    def __init__(self, ea: EA, keys: Keys | None, n: int, decrypt: bool, sta: BitslicedSta = STA) -> None:
        self.ea, self.decrypt = ea, decrypt
        if keys is None:
            raise FormatError("a decoder key is needed to encrypt or decrypt class 0 and class 2 tokens")
        if ea is EA.MISTY1:
            self.keys128 = _Keys128(keys, n)
            self.misty = _MistyWork(max(1, min(MISTY1_CHUNK, n)))
            self.chunk = self.misty.size
        else:
            self.keys64 = _keys64(keys, n)
            if ea is EA.STA:
                self.sta = _StaWork(sta, min(STA_CHUNK, -(-n // 64) * 64))
                self.chunk = self.sta.size
            else:
                self.chunk = DES_CHUNK
        self.inbuf = np.empty(self.chunk, dtype=np.uint64)

    def __call__(self, blocks: U64, sl: slice) -> U64:
        if self.ea is EA.STA:
            return self.sta.run(blocks, self.keys64[sl], self.decrypt)
        if self.ea is EA.MISTY1:
            m = len(blocks)
            self.keys128.fill(self.misty.words[:, :m], sl, self.misty.wide[:m])
            return self.misty.run(blocks, self.decrypt)
        return _des(blocks, self.keys64[sl], self.decrypt)


def encrypt_blocks(blocks: npt.ArrayLike, keys: Keys, ea: EA | int) -> U64:
    """Encrypt 64-bit data blocks, each with its own decoder key (vectorised ``ea.encrypt``)."""
    return _crypt(blocks, keys, _ea(ea), decrypt=False)


def decrypt_blocks(blocks: npt.ArrayLike, keys: Keys, ea: EA | int) -> U64:
    """Decrypt 64-bit blocks, each with its own decoder key (vectorised ``ea.decrypt``)."""
    return _crypt(blocks, keys, _ea(ea), decrypt=True)


def _crypt(blocks: npt.ArrayLike, keys: Keys, ea: EA, decrypt: bool) -> U64:
    b = _blocks(blocks)
    cipher = _Cipher(ea, keys, len(b), decrypt)
    out = np.empty_like(b)
    for start in range(0, len(b), cipher.chunk):
        sl = slice(start, start + cipher.chunk)
        out[sl] = cipher(b[sl], sl)
    return out


# ----------------------------------------------------------------------------------------------
# 66-bit TokenData <-> 20 ASCII digits (SPEC.md §3)

#: "0000".."9999" as four ASCII bytes each, read as little-endian uint32 (so stores keep byte order).
_DIGITS4: Final = np.frombuffer("".join(f"{v:04d}" for v in range(10000)).encode("ascii"), dtype="<u4").copy()
_TEN10: Final = 10**10
_2_64_MOD_TEN10: Final = (1 << 64) % _TEN10  # 3709551616
_2_64_DIV_TEN10: Final = (1 << 64) // _TEN10  # 1844674407


def _digits_into(hi: U64, lo: U64, out: U32) -> None:
    """Write the 20 digits of ``hi * 2**64 + lo`` (hi < 4) as five 4-digit groups into (n, 5) '<u4' ``out``.

    The 66-bit value is split into two 10-digit halves q, r with 64-bit arithmetic:
    2**64 = 1844674407 * 10**10 + 3709551616, so q = lo // 10**10 + hi * 1844674407 + carry and
    r = lo % 10**10 + hi * 3709551616 - carry * 10**10, where the carry (0..2) keeps r below
    10**10. Each half then yields 4-digit groups whose ASCII comes from one 10,000-entry table.
    Divisions are by constants, which NumPy turns into multiplications.
    """
    u = np.uint64
    lq = lo // u(_TEN10)
    r = lo - lq * u(_TEN10)
    r += hi * u(_2_64_MOD_TEN10)
    carry = (r >= u(_TEN10)).astype(np.uint64)
    carry += r >= u(2 * _TEN10)
    r -= carry * u(_TEN10)
    q = lq + hi * u(_2_64_DIV_TEN10) + carry
    g0 = q // u(10**6)
    rest = q - g0 * u(10**6)
    g1 = rest // u(100)
    g2 = (rest - g1 * u(100)) * u(100)
    g2h = r // u(10**8)
    g2 += g2h
    rest = r - g2h * u(10**8)
    g3 = rest // u(10**4)
    g4 = rest - g3 * u(10**4)
    for col, g in enumerate((g0, g1, g2, g3, g4)):
        out[:, col] = _DIGITS4[g.view(np.int64)]


def _class_insert(blocks: U64, token_class: int | U64) -> tuple[U64, U64]:
    """(hi, lo) of the 66-bit TokenData: class bits at 28..27, the displaced bits moved to 65..64."""
    hi = (blocks >> np.uint64(27)) & np.uint64(3)
    lo = (blocks & _KEEP) | (np.asarray(token_class, dtype=np.uint64) << np.uint64(27))
    return hi, lo


def _parse_groups(groups: U32) -> tuple[U64, U64, Bools]:
    """(hi, lo, ok) from five little-endian 4-ASCII-digit groups per token.

    SWAR: after XOR with '0000' each byte must be 0..9, i.e. have no high-nibble bits and
    not reach 16 when 6 is added. A group's value is then formed two digits at a time with two
    multiply-adds. The halves q, r recombine as q * 10**10 + r = (q * 5**10) << 10 + r, whose
    high part is (q * 5**10) >> 54 (q * 5**10 < 2**57 fits uint64), plus the carry of the add.
    Column by column, so that every operation after the first runs on contiguous arrays.
    """
    u, w = np.uint64, np.uint32
    bad = np.zeros(len(groups), dtype=np.uint32)
    v = []
    for col in range(5):
        x = groups[:, col] ^ w(0x30303030)
        bad |= x & w(0xF0F0F0F0)
        bad |= (x + w(0x06060606)) & w(0x10101010)
        t = (x * w(10) + (x >> w(8))) & w(0x00FF00FF)
        v.append(((t * w(100) + (t >> w(16))) & w(0xFFFF)).astype(np.uint64))
    ok: Bools = bad == 0
    mid = v[2] // u(100)
    q = v[0] * u(10**6) + v[1] * u(100) + mid
    r = (v[2] - mid * u(100)) * u(10**8) + v[3] * u(10**4) + v[4]
    qq = q * u(5**10)
    hi = qq >> u(54)
    lo = (qq << u(10)) + r
    hi += lo < r
    ok &= hi <= u(3)
    np.copyto(hi, 0, where=~ok)
    np.copyto(lo, 0, where=~ok)
    return hi, lo, ok


def _token_groups(tokens: npt.ArrayLike) -> tuple[U32, Bools]:
    """Tokens as (n, 5) '<u4' groups of 4 ASCII bytes, and which ones could be read at all.

    The fast path is an 'S20' array (what the encoders return): a zero-copy view. Anything
    else (str lists, 'U' arrays, tokens with the spaces or dashes the single path allows) goes
    through a per-token normalisation first; unreadable tokens are flagged, never raised.
    """
    arr = np.asarray(tokens)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    if arr.ndim != 1:
        raise FormatError(f"tokens must be one-dimensional (got shape {arr.shape})")
    if arr.dtype == np.dtype("S20"):
        raw = np.ascontiguousarray(arr)
        return raw.view("<u4").reshape(len(raw), 5), np.ones(len(raw), dtype=np.bool_)
    readable = np.ones(len(arr), dtype=np.bool_)
    clean = np.empty(len(arr), dtype="S20")
    for i, item in enumerate(arr.tolist()):
        text = item.decode("ascii", "replace") if isinstance(item, bytes) else str(item)
        text = text.replace(" ", "").replace("-", "")
        if len(text) == 20 and text.isascii():
            clean[i] = text.encode("ascii")
        else:
            clean[i] = b"x" * 20
            readable[i] = False
    return clean.view("<u4").reshape(len(clean), 5), readable


# ----------------------------------------------------------------------------------------------
# Public encoders and decoder


def _glue_steps(start: int, stop: int) -> list[tuple[slice, slice]]:
    """(token slice, slice within the chunk) for each GLUE-sized step of tokens start..stop."""
    return [
        (slice(a, min(a + GLUE, stop)), slice(a - start, min(a + GLUE, stop) - start)) for a in range(start, stop, GLUE)
    ]


def _pipeline(n: int, make_blocks: Callable[[slice], U64], token_class: int, cipher: _Cipher | None) -> Tokens:
    """Cipher chunk by cipher chunk: blocks -> encrypt -> class bits -> digits, into the output array.

    The glue on either side of the cipher runs in GLUE-sized steps (small temporaries);
    the cipher runs on its own, larger, preallocated chunk.
    """
    out = np.empty(n, dtype="S20")
    groups = out.view("<u4").reshape(n, 5)
    step = GLUE if cipher is None else cipher.chunk
    for start in range(0, n, step):
        stop = min(start + step, n)
        if cipher is None:
            blocks = make_blocks(slice(start, stop))
        else:
            blocks = cipher.inbuf[: stop - start]
            for tokens, local in _glue_steps(start, stop):
                blocks[local] = make_blocks(tokens)
            blocks = cipher(blocks, slice(start, stop))
        for tokens, local in _glue_steps(start, stop):
            hi, lo = _class_insert(blocks[local], token_class)
            _digits_into(hi, lo, groups[tokens])
    return out


def encode_blocks(token_class: int, blocks: npt.ArrayLike, keys: Keys | None, ea: EA | int) -> Tokens:
    """20-digit tokens ('S20') of data blocks (from :func:`data_blocks`) of one class.

    Class 0 and 2 blocks are encrypted with each token's key; class 1 goes in clear and
    ``keys`` may be None. Vectorised ``encode(from_block(..), ea, key)`` without the object.
    """
    if token_class not in (0, 1, 2, 3):
        raise RangeError(f"token class must be 0..3 (got {token_class})")
    if token_class == 3:
        raise UnsupportedError("class 3 is reserved")
    b = _blocks(blocks)
    cipher = None if token_class == 1 else _Cipher(_ea(ea), keys, len(b), decrypt=False)
    return _pipeline(len(b), lambda sl: b[sl], token_class, cipher)


def encode_credit(
    tids: npt.ArrayLike,
    amounts: npt.ArrayLike,
    rnds: npt.ArrayLike,
    keys: Keys,
    ea: EA | int,
    subclass: int = 0,
) -> Tokens:
    """TransferCredit tokens (class 0, subclass 0..3) as an 'S20' array of 20 ASCII digits.

    Amounts are in base units (0.1 kWh etc.) and rounded up exactly as
    :func:`mita.sts.encode_amount` does; any TID, amount or RND out of range raises a
    RangeError naming the first bad index before any work is done. A scalar argument is
    used for every token. Same digits as ``encode(TransferCredit(tid, amount, rnd, kind), ea, key)``.
    Currency credit (subclasses 4..7) is not here: build its blocks with :func:`data_blocks`.
    """
    if not 0 <= subclass <= 3:
        raise UnsupportedError(f"encode_credit makes subclass 0..3 tokens (got {subclass}); use data_blocks")
    t_a = _int_array(tids, "tids")
    a_a = _int_array(amounts, "amounts")
    r_a = _int_array(rnds, "rnds")
    _check_range(t_a, "tids", 24)
    _check_amounts(np.atleast_1d(a_a))
    _check_range(r_a, "rnds", 4)
    t_b, a_b, r_b = _broadcast(t_a, a_a, r_a)
    ea_ = _ea(ea)
    n = len(t_b)
    cipher = _Cipher(ea_, keys, n, decrypt=False)
    sub = np.uint64(subclass)

    def make(sl: slice) -> U64:
        data = r_b[sl].astype(np.uint64) << np.uint64(40)
        data |= t_b[sl].astype(np.uint64) << np.uint64(16)
        data |= _amount_fields(a_b[sl].astype(np.int64))
        crc = _crc_field(data | sub << np.uint64(44), currency=False)
        data <<= np.uint64(16)
        data |= crc
        data |= sub << np.uint64(60)
        return data

    return _pipeline(n, make, 0, cipher)


_SUPPORTED: Final = np.zeros((4, 16), dtype=np.bool_)
for _c, _s in REGISTRY:
    _SUPPORTED[_c, _s] = True


def decode(tokens: npt.ArrayLike, keys: Keys | None, ea: EA | int) -> dict[str, npt.NDArray[Any]]:
    """Parse, decrypt and CRC-check many tokens; never raises on a bad token.

    Returns arrays, one element per token:

    - ``class``, ``subclass`` (uint8) and ``data`` (uint64, the 44 bits D 59..16);
    - ``block``: the decrypted data block D (class 1: as sent; class 3: not decrypted);
    - ``format_ok``: 20 digits below 2**66 (else every other field is 0 / False);
    - ``crc_ok``: the CRC (CRC_C for class 0 subclass 4..7) matches: a wrong key or a
      mistyped digit fails here;
    - ``supported``: (class, subclass) is a defined token type (class 3 and reserved
      subclasses are not);
    - ``ok``: all three, i.e. exactly the tokens :func:`mita.sts.decode` would accept.

    ``keys`` as for the encoders; it may be None only when no token needs decrypting, and
    then class 0 and 2 tokens come back with ``crc_ok`` False.
    """
    groups, readable = _token_groups(tokens)
    n = len(groups)
    ea_ = _ea(ea)
    cipher = _Cipher(ea_, keys, n, decrypt=True) if keys is not None else None
    cls = np.zeros(n, dtype=np.uint8)
    sub = np.zeros(n, dtype=np.uint8)
    data = np.zeros(n, dtype=np.uint64)
    block = np.zeros(n, dtype=np.uint64)
    format_ok = np.zeros(n, dtype=np.bool_)
    crc_ok = np.zeros(n, dtype=np.bool_)
    supported = np.zeros(n, dtype=np.bool_)
    step = GLUE if cipher is None else cipher.chunk
    for start in range(0, n, step):
        stop = min(start + step, n)
        steps = _glue_steps(start, stop)
        for part, _ in steps:  # digits -> the block as sent, written into ``block``
            hi, lo, ok = _parse_groups(groups[part])
            ok &= readable[part]
            format_ok[part] = ok
            np.copyto(cls[part], (lo >> np.uint64(27)) & np.uint64(3), casting="unsafe")
            np.bitwise_or(lo & _KEEP, hi << np.uint64(27), out=block[part])
        if cipher is not None:
            plain = cipher(block[start:stop], slice(start, stop))
            for part, local in steps:  # classes 0 and 2 are encrypted; 1 is clear, 3 reserved
                c = cls[part]
                np.copyto(block[part], plain[local], where=(c == 0) | (c == 2))
        for part, _ in steps:
            blk, c, ok = block[part], cls[part], format_ok[part]
            np.copyto(blk, 0, where=~ok)
            s = blk >> np.uint64(60)
            d = (blk >> np.uint64(16)) & np.uint64(_M44)
            good = _crc_fields(c.astype(np.uint64), s, d) == (blk & np.uint64(0xFFFF))
            good &= ok
            if cipher is None:
                good &= c == 1
            sub[part] = s
            data[part] = d
            crc_ok[part] = good
            supported[part] = _SUPPORTED[c, s] & ok
    return {
        "class": cls,
        "subclass": sub,
        "data": data,
        "block": block,
        "format_ok": format_ok,
        "crc_ok": crc_ok,
        "supported": supported,
        "ok": format_ok & crc_ok & supported,
    }


def credit_fields(data44: npt.ArrayLike) -> dict[str, I64]:
    """rnd, tid and amount (base units) of class 0 subclass 0..3 data bits, e.g. ``decode(..)["data"]``."""
    d = np.asarray(data44).astype(np.uint64)
    return {
        "rnd": (d >> np.uint64(40)).astype(np.int64) & 0xF,
        "tid": (d >> np.uint64(16)).astype(np.int64) & 0xFFFFFF,
        "amount": decode_amounts(d & np.uint64(0xFFFF)),
    }


# ----------------------------------------------------------------------------------------------
# Decoder keys for many meters


def dkga02(
    vending_key: bytes, meters: Sequence[MeterNumber] | npt.ArrayLike, control_block: int | npt.ArrayLike
) -> U64:
    """DKGA02 for many meters: DK = DES(VK, X) ^ X ^ VK with X = PANBlock ^ CONTROLBlock.

    ``meters`` is a sequence of :class:`MeterNumber` or an array of PAN blocks;
    ``control_block`` is :func:`mita.sts.control_block` (one for all, or one per meter). For a
    KT 3 control block the common PAN block (DRN digits zero) is used, as the single path does.
    One DES-ECB call covers every meter: ECB encrypts 8-byte blocks independently, and the
    vending key is the same for the whole supply group.
    """
    if len(vending_key) != 8:
        raise FormatError("DKGA02 needs a 64-bit (8-byte) vending key")
    cb = _int_array(control_block, "control_block")
    _check_range(cb, "control_block", 64)
    items: list[Any] = [] if isinstance(meters, np.ndarray) else list(meters)  # type: ignore[arg-type]
    numbers = [m for m in items if isinstance(m, MeterNumber)]
    if items and len(numbers) == len(items):
        try:
            cbs = np.broadcast_to(np.atleast_1d(cb).astype(np.uint64), (len(numbers),))
        except ValueError:
            raise FormatError("need one control block, or one per meter") from None
        common = (cbs >> np.uint64(60)) == 3
        pan = np.array([m.pan_block(common=bool(c)) for m, c in zip(numbers, common, strict=True)], dtype=np.uint64)
    else:
        pan = _blocks(np.asarray(meters))
    x = pan ^ np.atleast_1d(cb).astype(np.uint64)
    encryptor = Cipher(TripleDES(vending_key * 3), modes.ECB()).encryptor()
    enc = np.frombuffer(encryptor.update(x.astype(">u8").tobytes()) + encryptor.finalize(), dtype=">u8")
    out: U64 = enc.astype(np.uint64) ^ x ^ np.uint64(int.from_bytes(vending_key, "big"))
    return out


def dkga04(
    vending_key: bytes,
    meters: Sequence[MeterNumber],
    kt: int,
    sgc: str,
    ti: int,
    krn: int,
    base: BaseDate,
    ea: EA | int,
) -> npt.NDArray[Any]:
    """DKGA04 for many meters of one supply group: uint64 keys for EA07, (N, 16) uint8 for EA11.

    HMAC-SHA-256 has no batch form in the standard library, so this loops over ``hmac.digest``
    (C code, about a microsecond each); the outputs are laid out as :func:`encode_credit` wants.
    """
    ea_ = _ea(ea)
    if len(vending_key) != DKGA04_VENDING_KEY_BYTES:
        raise FormatError("DKGA04 needs a 160-bit (20-byte) vending key")
    if ea_ is EA.DEA:
        raise UnsupportedError("DKGA04 is defined for EA07 and EA11 only")
    size = ea_.key_bits // 8
    raw = b"".join(
        hmac.digest(vending_key, dkga04_input(m, kt, sgc, ti, krn, base, ea_), "sha256")[:size] for m in meters
    )
    keys = np.frombuffer(raw, dtype=np.uint8).reshape(-1, size)
    if ea_ is EA.MISTY1:
        return keys.copy()
    return keys.view(">u8").reshape(-1).astype(np.uint64)


def layout_data(token_type: type[Token], n: int, **fields: int | npt.ArrayLike) -> U64:
    """The 44 data bits of ``n`` tokens of one type, field by field from its LAYOUT table.

    The vectorised ``Token.data_bits`` for "int" fields; fields not given are zero. Every value
    is range-checked against its width before any work is done.
    """
    layout = {name: (shift, width, codec) for name, shift, width, codec in token_type.LAYOUT}
    unknown = set(fields) - set(layout)
    if unknown:  # a misspelt field would silently be zero bits
        raise FormatError(f"{token_type.__name__} has no field {', '.join(sorted(unknown))}")
    data = np.zeros(n, dtype=np.uint64)
    for name, value in fields.items():
        shift, width, codec = layout[name]
        if codec != "int":
            raise UnsupportedError(f"layout_data takes plain integer fields ({name} is {codec})")
        arr = _int_array(value, name)
        _check_range(arr, name, width)
        try:
            wide = np.broadcast_to(arr.astype(np.uint64), (n,))
        except ValueError:
            raise FormatError(f"{name}: need one value, or one per token ({n})") from None
        data |= wide << np.uint64(shift - 16)
    return data


def _key_words(keys: Keys, key_bits: int, n: int) -> list[U64]:
    """Decoder keys as their 32-bit words, most significant first (2 for 64-bit keys, 4 for 128)."""
    if key_bits == 64:
        k = _keys64(keys, n)
        return [k >> np.uint64(32), k & np.uint64(0xFFFFFFFF)]
    arr = np.asarray(keys)
    if arr.dtype == np.uint8 and arr.shape == (n, 16):
        words = np.ascontiguousarray(arr).view(">u4").reshape(n, 4).astype(np.uint64)
    else:
        try:
            each = np.broadcast_to(np.asarray(keys, dtype=object), (n,))
            raw = b"".join(int(k).to_bytes(16, "big") for k in each)
        except ValueError:
            raise FormatError(f"need one new key, or one per meter ({n})") from None
        except OverflowError:
            raise RangeError("a new key does not fit in 128 bits") from None
        words = np.frombuffer(raw, dtype=">u4").reshape(n, 4).astype(np.uint64)
    return [words[:, i].copy() for i in range(4)]


def key_change_sets(
    new_keys: Keys,
    old_keys: Keys,
    old_ea: EA | int,
    n: int,
    *,
    key_bits: int,
    ken: int,
    krn: int,
    kt: int,
    ti: int | npt.ArrayLike,
    ro: int,
    sgc: str | None = None,
) -> Tokens:
    """Key change sets for ``n`` meters: an (n, 2) or (n, 4) 'S20' array, sections 1st, 2nd[, 3rd, 4th].

    Each set installs ``new_keys[i]`` and is encrypted under ``old_keys[i]`` with the meters'
    current algorithm; the same digits as :func:`mita.sts.key_change_set` then ``encode`` per meter.
    """
    if key_bits not in (64, 128):
        raise FormatError(f"a decoder key has 64 or 128 bits (got {key_bits})")
    if not 0 <= ken <= 255:
        raise RangeError(f"key expiry number KEN must be 0..255 (got {ken})")
    tis = _int_array(ti, "ti")
    for one in {int(t) for t in np.atleast_1d(tis)}:  # the single path's rules, once per distinct TI
        check_key_params(kt, sgc if sgc is not None else "000000", one, krn)
    words = _key_words(new_keys, key_bits, n)
    fields: list[tuple[type[Token], dict[str, int | npt.ArrayLike]]] = [
        (Set1stSectionDecoderKey, {"kenho": ken >> 4, "krn": krn, "ro": ro, "kt": kt, "nkho": words[0]}),
        (Set2ndSectionDecoderKey, {"kenlo": ken & 15, "ti": ti, "nklo": words[-1]}),
    ]
    if key_bits == 128:
        if sgc is None:
            raise FormatError("a 4-token key change set needs the 6-digit SGC")
        code = int(sgc)
        fields += [
            (Set3rdSectionDecoderKey, {"sgclo": code & 0xFFF, "nkmo2": words[1]}),
            (Set4thSectionDecoderKey, {"sgcho": code >> 12, "nkmo1": words[2]}),
        ]
    out = np.empty((n, len(fields)), dtype="S20")
    for i, (token_type, values) in enumerate(fields):
        blocks = data_blocks(2, token_type.subclass, layout_data(token_type, n, **values))
        out[:, i] = encode_blocks(2, blocks, old_keys, old_ea)
    return out


__all__ = [
    "DES_CHUNK",
    "GLUE",
    "MISTY1_CHUNK",
    "SAMPLE_STA",
    "STA",
    "STA_CHUNK",
    "BitslicedSta",
    "Keys",
    "SboxCircuit",
    "credit_fields",
    "data_blocks",
    "decode",
    "decode_amounts",
    "decrypt_blocks",
    "dkga02",
    "dkga04",
    "encode_amounts",
    "encode_blocks",
    "encode_credit",
    "encrypt_blocks",
    "key_change_sets",
    "layout_data",
]
