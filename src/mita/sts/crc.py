"""CRC-16 of the token's 50 information bits, and CRC_C of the currency tokens.

IEC 62055-41 6.3.7: polynomial x^16 + x^15 + x^2 + 1, initialised to FFFF,
over the 50 bits Class|SubClass|data left-padded to 7 bytes. That is
CRC-16/MODBUS. The token carries the result byte-swapped (SPEC.md §2).
CRC_C (currency subclasses 4..7, 6.3.22) appends one byte 0x01 first.

Hand-written rather than a dependency: it is one table and a loop, and the
bulk path needs the same table as a NumPy array.
"""

from __future__ import annotations


def _make_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


TABLE = _make_table()


def crc16_modbus(data: bytes) -> int:
    """Plain CRC-16/MODBUS (reflected 0xA001, init FFFF, no final XOR)."""
    crc = 0xFFFF
    table = TABLE
    for b in data:
        crc = (crc >> 8) ^ table[(crc ^ b) & 0xFF]
    return crc


def crc_field(info50: int, currency: bool = False) -> int:
    """The 16-bit CRC field (as placed in bits 15..0) for 50 information bits."""
    data = info50.to_bytes(7, "big")
    crc = crc16_modbus(data + b"\x01" if currency else data)
    return (crc & 0xFF) << 8 | crc >> 8
