"""MISTY1 (EA11) over uint16 lanes, and the per-token 128-bit keys it takes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import FormatError
from ..misty1 import S7, S9
from .arrays import U8, U16, U64, Keys


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
