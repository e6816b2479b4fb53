"""EA11: MISTY1 (RFC 2994, ISO/IEC 18033-3) with a 128-bit decoder key.

In STS the 64-bit data block is the cipher block as 8 big-endian bytes and the
key is the 16 DKGA04 bytes in natural order (SPEC.md §5.3).

The FI function is the inner loop of both the key schedule and the rounds.
Its two key-independent halves are each a fixed map on 16 bits, so we keep
them as two 65,536-entry tables, built on first use (compact arrays: on random input a
list of int objects misses the cache twice as often): FI(x, k) = _FI_OUT[_FI_IN[x] ^ k]. The
S-boxes below are RFC 2994's S7 and S9 tables (a permutation each, checked at
import).
"""

from __future__ import annotations

import operator
import struct
from array import array
from collections.abc import Callable
from functools import cache

_S7_HEX = (
    "1b32335a3b1017545b1a72736b2c66491f24136c372e3f4a5d0f405625511c04"
    "0b46200d7b3544422b1e41144b79156f0e550936740c6753280a7e3802076029"
    "1912652f303908685f782a4c6445753d594803577c4f623c1d215e276a704d3a"
    "016d6e6318772305267600312d7a7f61502211064716524e713e6943345c587d"
)
_S9_HEX = (
    "1c30cb15319f1e30e90fb0351810b91171eb13300902d0d30c714a03707e0eb1641931d8"
    "0a311e05502c01d1a216311814b1521d200f02b03013a0e511113818e0630e30c81f401b"
    "00109d0f81a016d1f301c14607d0d10821ea18312d0f419e1d30dd1e21281e00ec059091"
    "01112f0260dc0b018c10f1f70e716c0b60f90d815110114c1030b815412b1ae01707100c"
    "04705807f1a413412908415d19d1b21a304807c0511ca02313d1a716503b0420da1920ce"
    "0c106b09f1f112c1840fa1961e116917d03118010a0941da18613e11c0601751cf067119"
    "06506809915000800717c0b70240190de1270db0e41a905210909019c1c10281b313516a"
    "1760df1e51880c516e1de1b10c31df0360ee1ee0f009304909a1b606908112500b05e0b4"
    "1491c717403e13b1b708e1c60ae0100951ef04e0f21fd0850fd0f60a016f08308a15609b"
    "13c1071670981d01e90031fe0bd1220890d218f01203306a1420ed17011b0e214f158131"
    "14705d1131cd0791611a517909e1b40cc02213201a0e80041871ed1970391bf1d702718b"
    "0c609c0d014e06c0341f206e0ca0250ba1910fe01310602f1ad1721db0c010b1d60f51ec"
    "10d0761141ab07510c1e415905411f04b0c41be0f70290a400e1f007704d17a08608b0b3"
    "1710bf10e10409715b1601680d70bb0661ce0fc0921c506f01604a0a11390af0f119000a"
    "1aa14317b05618d1660d41fb14d19419a0871f81230a71b814103c1f914002a15511a1a1"
    "1980d51261af06112e1571dc07218a0aa0961150ef04507b08d14505305f1780b202e020"
    "1d503f1c91e71ac0440380140b116b0ab0b505a1821c81d40181770640cf06d100199130"
    "15a0051201bb1bd0e004f0d613f1c412a0150060ff19b0a604308805015f1e812107317e"
    "0bc0c20c91731891f50741cc1e61a819501f04100d1ba03203d1d10800a80571b9162148"
    "0d910506207a0211ff1121081c00a911d1b01a60cd0f305c10205b1d91441f60ad0a503a"
    "1cb13617f0460e101e1dd0e61371fa18508c08f0401b50be0780000ac11015e1240021bc"
    "0a20ea0701fc11615c04c1c2"
)

S7 = tuple(bytes.fromhex(_S7_HEX))
S9 = tuple(int(_S9_HEX[i : i + 3], 16) for i in range(0, len(_S9_HEX), 3))
assert sorted(S7) == list(range(128)) and sorted(S9) == list(range(512))


def _fi_in(x: int) -> int:
    """First half of FI, before the key: returns d7 << 9 | d9."""
    d9 = S9[x >> 7] ^ (x & 0x7F)
    d7 = (S7[x & 0x7F] ^ d9) & 0x7F
    return d7 << 9 | d9


def _fi_out(y: int) -> int:
    """Second half of FI, after ``d7 ^= k >> 9`` and ``d9 ^= k & 0x1ff``."""
    d7 = y >> 9
    return d7 << 9 | (S9[y & 0x1FF] ^ d7)


@cache
def _fi_tables() -> tuple[array[int], array[int]]:
    """``_fi_in`` and ``_fi_out`` as tables, built on first use rather than at import (only EA11 needs them).

    Built row by row (x = hi9 << 7 | lo7, y = d7 << 9 | lo9) in comprehensions: the same values as mapping the
    two functions over 0..65535 (a test checks it), in a third of the time.
    """
    s7, s9 = S7, S9
    fi_in = array("H", [((s7[lo] ^ s ^ lo) & 0x7F) << 9 | (s ^ lo) for s in s9 for lo in range(128)])
    fi_out = array("H", [d7 << 9 | (s ^ d7) for d7 in range(128) for s in s9])
    return fi_in, fi_out


_M32 = 0xFFFFFFFF
_UNPACK_KEY = struct.Struct(">8H").unpack
_UNPACK_BLOCK: Callable[[bytes], tuple[int, ...]] = struct.Struct(">4H").unpack


def _subkey_order() -> tuple[int, ...]:
    """Indices into EK = K[0..7] + K'[0..7] (RFC 2994 §2.2), in the order rounds use them.

    Each double round r = 0, 2, 4, 6 takes FL(r), FL(r+1) as (KL1, KL2) pairs,
    then FO(r), FO(r+1) as (KO1, KI1, KO2, KI2, KO3, KI3, KO4); the last two FL
    layers close the block. Flattening the schedule into one tuple lets one
    C-level ``itemgetter`` call build it.
    """

    def fl(i: int) -> tuple[int, int]:
        h = i // 2
        return (h, 8 + (h + 6) % 8) if i % 2 == 0 else (8 + (h + 2) % 8, (h + 4) % 8)

    def fo(r: int) -> tuple[int, ...]:
        return (r, 8 + (r + 5) % 8, (r + 2) % 8, 8 + (r + 1) % 8, (r + 7) % 8, 8 + (r + 3) % 8, (r + 4) % 8)

    order: list[int] = []
    for r in (0, 2, 4, 6):
        order += [*fl(r), *fl(r + 1), *fo(r), *fo(r + 1)]
    return (*order, *fl(8), *fl(9))


_SUBKEYS = operator.itemgetter(*_subkey_order())

#: A key schedule: 76 subkeys, flat, in the order :func:`encrypt_scheduled` uses them.
Schedule = tuple[int, ...]


def schedule(key: int) -> Schedule:
    """Expand a 128-bit key (RFC 2994 §2.2): K'[i] = FI(K[i], K[i+1 mod 8])."""
    k = _UNPACK_KEY(key.to_bytes(16, "big"))
    k0, k1, k2, k3, k4, k5, k6, k7 = k
    fi_in, fi_out = _fi_tables()
    kp = (
        fi_out[fi_in[k0] ^ k1], fi_out[fi_in[k1] ^ k2], fi_out[fi_in[k2] ^ k3], fi_out[fi_in[k3] ^ k4],
        fi_out[fi_in[k4] ^ k5], fi_out[fi_in[k5] ^ k6], fi_out[fi_in[k6] ^ k7], fi_out[fi_in[k7] ^ k0],
    )  # fmt: skip
    sched: Schedule = _SUBKEYS(k + kp)
    return sched


def encrypt_scheduled(block: int, sched: Schedule) -> int:
    # Unrolled by hand, on four 16-bit words (a b | c d): this is the EA11 hot path, and working on
    # halves saves the shifts and masks of packing 32-bit words between steps.
    fi_in, fi_out = _fi_tables()
    a, b, c, d = _UNPACK_BLOCK(block.to_bytes(8, "big"))
    for i in (0, 18, 36, 54):
        l1, l2, l3, l4, a1, a2, a3, a4, a5, a6, a7, b1, b2, b3, b4, b5, b6, b7 = sched[i : i + 18]
        b ^= a & l1  # FL on the left half
        a ^= b | l2
        d ^= c & l3  # FL on the right half
        c ^= d | l4
        t0 = fi_out[fi_in[a ^ a1] ^ a2] ^ b  # right ^= FO(left)
        t1 = fi_out[fi_in[b ^ a3] ^ a4] ^ t0
        t0 = fi_out[fi_in[t0 ^ a5] ^ a6] ^ t1
        c ^= t1 ^ a7
        d ^= t0
        t0 = fi_out[fi_in[c ^ b1] ^ b2] ^ d  # left ^= FO(right)
        t1 = fi_out[fi_in[d ^ b3] ^ b4] ^ t0
        t0 = fi_out[fi_in[t0 ^ b5] ^ b6] ^ t1
        a ^= t1 ^ b7
        b ^= t0
    l1, l2, l3, l4 = sched[72:]
    b ^= a & l1
    a ^= b | l2
    d ^= c & l3
    c ^= d | l4
    return c << 48 | d << 32 | a << 16 | b


def decrypt_scheduled(block: int, sched: Schedule) -> int:
    fi_in, fi_out = _fi_tables()
    c, d, a, b = _UNPACK_BLOCK(block.to_bytes(8, "big"))
    l1, l2, l3, l4 = sched[72:]
    a ^= b | l2  # FL^-1 on the left half
    b ^= a & l1
    c ^= d | l4  # FL^-1 on the right half
    d ^= c & l3
    for i in (54, 36, 18, 0):
        l1, l2, l3, l4, a1, a2, a3, a4, a5, a6, a7, b1, b2, b3, b4, b5, b6, b7 = sched[i : i + 18]
        t0 = fi_out[fi_in[c ^ b1] ^ b2] ^ d  # left ^= FO(right)
        t1 = fi_out[fi_in[d ^ b3] ^ b4] ^ t0
        t0 = fi_out[fi_in[t0 ^ b5] ^ b6] ^ t1
        a ^= t1 ^ b7
        b ^= t0
        t0 = fi_out[fi_in[a ^ a1] ^ a2] ^ b  # right ^= FO(left)
        t1 = fi_out[fi_in[b ^ a3] ^ a4] ^ t0
        t0 = fi_out[fi_in[t0 ^ a5] ^ a6] ^ t1
        c ^= t1 ^ a7
        d ^= t0
        a ^= b | l2
        b ^= a & l1
        c ^= d | l4
        d ^= c & l3
    return a << 48 | b << 32 | c << 16 | d


def encrypt(block: int, key: int) -> int:
    """Encrypt a 64-bit block with a 128-bit key (both as big-endian integers)."""
    return encrypt_scheduled(block, schedule(key))


def decrypt(block: int, key: int) -> int:
    """Invert :func:`encrypt`."""
    return decrypt_scheduled(block, schedule(key))
