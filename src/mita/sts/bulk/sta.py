"""Bitsliced STA (EA07).

Transposed, the 64 bits of 64 tokens become 64 words ("bit-planes"): word b holds bit b of each
of the 64 tokens. The STA permutation is then a relabelling of planes (one row gather), key
rotations are relabellings of key planes (slices of a suitably ordered copy), and the key-selected nibble
substitution is a Boolean circuit of AND/XOR/NOT evaluated on whole planes. Each NumPy call
processes 64 tokens per machine word, which is why this beats per-byte table lookups, whose
gathers cost a few nanoseconds per element per round. The circuit comes from :mod:`.sboxcircuit`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from ..sta import E1, E2, SAMPLE_E1, SAMPLE_E2, SAMPLE_P, P
from . import chunks
from .arrays import U64, Keys, _blocks, _keys64
from .sboxcircuit import _AND, _NOT, _XOR, SboxCircuit, _check_circuit, _compile_sbox

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
        work = _StaWork(self, min(chunks.STA_CHUNK, -(-len(b) // 64) * 64))
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
