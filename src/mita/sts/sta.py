"""EA07: the Standard Transfer Algorithm (IEC 62055-41, 6.5.4 / 7.3.3).

A 16-round substitution-permutation cipher on a 64-bit block with a 64-bit key.
Bit 0 is the least significant bit of both block and key ("the first entry in
the permutation table corresponds to LSB bit position 0"); public code that
indexes the permutation MSB-first produces wrong tokens (SPEC.md §5.1).

Speed matters: the vend path derives a fresh decoder key for every token, so
nothing here may depend on a per-key precomputation. Each round is a
substitution of the 16 nibbles (E1 or E2, chosen by key bits 4i+3) followed by
a bit permutation; both act byte-locally on input, so we fold them into one
table per input byte position, indexed first by the round key's byte at that
position (which picks E1/E2 for its two nibbles) and then by the data byte.
A round is then eight double lookups ORed together.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property

#: The substitution and permutation tables of real tokens (SPEC.md §5.1; the
#: "sample" tables printed in the standard are in :data:`SAMPLE_TABLES`).
E1 = (14, 10, 7, 9, 12, 3, 2, 5, 13, 0, 15, 1, 4, 8, 6, 11)
E2 = (12, 8, 2, 13, 7, 6, 1, 3, 11, 5, 9, 15, 0, 4, 10, 14)
P = (
    55, 42, 10, 18, 24, 21, 44, 35, 2, 22, 56, 43, 27, 58, 9, 50,
    6, 36, 12, 61, 37, 38, 53, 16, 62, 3, 7, 4, 32, 20, 63, 25,
    51, 52, 54, 33, 49, 19, 46, 29, 48, 31, 23, 30, 41, 28, 13, 5,
    40, 60, 39, 11, 15, 17, 1, 0, 57, 34, 59, 8, 47, 14, 45, 26,
)  # fmt: skip

#: The example tables printed in the standard; only its worked example uses them.
SAMPLE_E1 = (12, 10, 8, 4, 3, 15, 0, 2, 14, 1, 5, 13, 6, 9, 7, 11)
SAMPLE_E2 = (6, 9, 7, 4, 3, 10, 12, 14, 2, 13, 1, 15, 0, 11, 8, 5)
SAMPLE_P = (
    29, 27, 34, 9, 16, 62, 55, 2, 40, 49, 38, 25, 33, 61, 30, 23,
    1, 41, 21, 57, 42, 15, 5, 58, 19, 53, 22, 17, 48, 28, 24, 39,
    3, 60, 36, 14, 11, 52, 54, 12, 31, 51, 10, 26, 0, 45, 37, 43,
    44, 6, 59, 4, 7, 35, 56, 50, 13, 18, 32, 47, 46, 63, 20, 8,
)  # fmt: skip

_M64 = (1 << 64) - 1

# A round table: for each input byte position j, for each key byte, a list of
# 256 outputs (already permuted and shifted into place).
_RoundTable = tuple[tuple[list[int], ...], ...]


def _inverse(table: Sequence[int]) -> tuple[int, ...]:
    out = [0] * len(table)
    for i, v in enumerate(table):
        out[v] = i
    return tuple(out)


def _byte_permutations(perm: Sequence[int] | None) -> tuple[list[int], ...]:
    """For each byte position j, the 256 values ``b << 8j`` permuted (or only shifted, without ``perm``).

    A byte's permutation is the OR of its bits' images, so each row is built from the row itself in one pass
    (``b`` = ``b`` without its lowest bit, plus that bit): 2,048 ORs instead of 2,048 64-step loops.
    """
    rows = []
    for j in range(8):
        bits = [1 << (perm[8 * j + k] if perm is not None else 8 * j + k) for k in range(8)]
        row = [0] * 256
        for b in range(1, 256):
            low = b & -b
            row[b] = row[b ^ low] | bits[low.bit_length() - 1]
        rows.append(row)
    return tuple(rows)


def _tables(low: Sequence[int], high: Sequence[int], bit: int, perm: Sequence[int] | None) -> _RoundTable:
    """Fold a keyed nibble substitution (then an optional permutation) into byte tables.

    Only bits ``bit`` and ``bit + 4`` of a key byte matter, so the 256 entries
    per position share four distinct lists.
    """
    placed = _byte_permutations(perm)
    # the byte a data byte becomes under each of the four (low nibble box, high nibble box) choices
    substituted = []
    for sel in range(4):
        lo_box = high if sel & 1 else low
        hi_box = high if sel & 2 else low
        substituted.append([lo_box[b & 15] | hi_box[b >> 4] << 4 for b in range(256)])
    selector = [(k >> bit & 1) | (k >> (bit + 4) & 1) << 1 for k in range(256)]
    positions = []
    for j in range(8):
        row = placed[j]
        variants = [[row[s] for s in substituted[sel]] for sel in range(4)]
        positions.append(tuple(variants[sel] for sel in selector))
    return tuple(positions)


class Sta:
    """STA with one set of tables (real by default; the sample set for the worked example).

    The tables are built on first use (a few milliseconds), not at import: a command that never runs EA07
    (``mita --help``, a DES or MISTY1 meter) does not pay for them.
    """

    def __init__(self, e1: Sequence[int] = E1, e2: Sequence[int] = E2, perm: Sequence[int] = P) -> None:
        self._e1, self._e2, self._perm = tuple(e1), tuple(e2), tuple(perm)
        self._decrypted = False

    def first_decryption(self) -> bool:
        """True once: for the process's first decryption, which :meth:`decrypt_direct` does without tables.

        ``mita meter enter`` decrypts one token per process: building the decryption tables (16,384 entries, about
        4 ms) would cost twenty times the decryption itself. A second decryption is worth the tables.
        """
        first, self._decrypted = not self._decrypted, True
        return first and "_dec" not in self.__dict__

    def decrypt_direct(self, block: int, key: int) -> int:
        """The decryption as the algorithm states it, bit by bit and nibble by nibble (about 0.2 ms): each round
        un-permutes, then un-substitutes with the round key's boxes, round keys walked backwards. The vectors and
        a property test hold it equal to the table path."""
        inv1, inv2, perm = _inverse(self._e1), _inverse(self._e2), self._perm
        k = ~key & _M64
        k = (k >> 12 | k << 52) & _M64
        k = (k << 15 | k >> 49) & _M64  # the 16th round key
        x = block
        for _ in range(16):
            y = 0
            for i, p in enumerate(perm):
                y |= (x >> p & 1) << i
            x = 0
            for i in range(0, 64, 4):
                x |= (inv2 if k >> (i + 3) & 1 else inv1)[y >> i & 15] << i
            k = k >> 1 | (k & 1) << 63
        return x

    @cached_property
    def _enc(self) -> _RoundTable:
        """Encryption round: substitute (E2 where key bit 4i+3 is set), then permute."""
        return _tables(self._e1, self._e2, 3, self._perm)

    # Decryption, with round keys walked backwards: inverse-permute, then
    # inverse-substitute. Grouped as "un-substitute round r, then
    # un-permute round r-1" so each middle step is again byte-local.
    @cached_property
    def _dec_first(self) -> tuple[list[int], ...]:
        return _byte_permutations(_inverse(self._perm))

    @cached_property
    def _dec(self) -> _RoundTable:
        return _tables(_inverse(self._e1), _inverse(self._e2), 3, _inverse(self._perm))

    @cached_property
    def _dec_last(self) -> _RoundTable:
        return _tables(_inverse(self._e1), _inverse(self._e2), 3, None)

    def encrypt(self, block: int, key: int) -> int:
        t0, t1, t2, t3, t4, t5, t6, t7 = self._enc
        k = ~key & _M64
        k = (k >> 12 | k << 52) & _M64
        x = block
        for _ in range(16):
            k0, k1, k2, k3, k4, k5, k6, k7 = k.to_bytes(8, "little")
            x0, x1, x2, x3, x4, x5, x6, x7 = x.to_bytes(8, "little")
            x = (
                t0[k0][x0] | t1[k1][x1] | t2[k2][x2] | t3[k3][x3]
                | t4[k4][x4] | t5[k5][x5] | t6[k6][x6] | t7[k7][x7]
            )  # fmt: skip
            k = (k << 1 & _M64) | k >> 63
        return x

    def decrypt(self, block: int, key: int) -> int:
        return self.decrypt_scheduled(block, self.decrypt_schedule(key))

    def decrypt_schedule(self, key: int) -> tuple[tuple[list[int], ...], ...]:
        """The table rows each decryption round uses under ``key``.

        A meter decrypts every token with the same key, so it pays for this
        once and then saves the per-round key lookups.
        """
        k = ~key & _M64
        k = (k >> 12 | k << 52) & _M64
        k = (k << 15 | k >> 49) & _M64  # the 16th round key
        rounds = []
        for r in range(16):
            tables = self._dec if r < 15 else self._dec_last
            rounds.append(tuple(t[b] for t, b in zip(tables, k.to_bytes(8, "little"), strict=True)))
            k = k >> 1 | (k & 1) << 63
        return tuple(rounds)

    def decrypt_scheduled(self, block: int, schedule: tuple[tuple[list[int], ...], ...]) -> int:
        d0, d1, d2, d3, d4, d5, d6, d7 = self._dec_first
        x0, x1, x2, x3, x4, x5, x6, x7 = block.to_bytes(8, "little")
        x = d0[x0] | d1[x1] | d2[x2] | d3[x3] | d4[x4] | d5[x5] | d6[x6] | d7[x7]
        for t0, t1, t2, t3, t4, t5, t6, t7 in schedule:
            x0, x1, x2, x3, x4, x5, x6, x7 = x.to_bytes(8, "little")
            x = t0[x0] | t1[x1] | t2[x2] | t3[x3] | t4[x4] | t5[x5] | t6[x6] | t7[x7]
        return x


STA = Sta()
SAMPLE_STA = Sta(SAMPLE_E1, SAMPLE_E2, SAMPLE_P)


def encrypt(block: int, key: int) -> int:
    """Encrypt a 64-bit block with a 64-bit decoder key (natural byte order)."""
    return STA.encrypt(block, key)


def decrypt(block: int, key: int) -> int:
    """Invert :func:`encrypt`."""
    return STA.decrypt(block, key)
