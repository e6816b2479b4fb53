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
* :func:`dkga02` / :func:`dkga04`: decoder keys for many meters in one call, from :class:`MeterNumber`
  objects or straight from meter numbers as text; :func:`meter_pans` / :func:`pan_blocks`: those numbers
  checked and read in bulk.

Keys: EA07 and EA09 keys are an ``uint64`` array (natural order, as the single path's integers),
or one ``int`` for every token. EA11 keys are either an ``(N, 16) uint8`` array (the 16 key bytes
in natural order, which is what :func:`dkga04` returns and what DKGA04 produces), an ``(N, 2)
uint64`` array of (high, low) halves, a sequence of Python ints, or one ``int``.

Work is done in chunks (:mod:`.chunks`: ``STA_CHUNK``, ``MISTY1_CHUNK``, ``GLUE`` tokens) into
buffers allocated once per call, so that the working set stays in the CPU caches and memory stays
bounded however many tokens are passed: besides the inputs and the output, a call holds a few
MiB. Measured on one core of the 2-vCPU target at N = 1e6 with a distinct key per token (best
of five, ``benchmarks/bulk_probe.py``): :func:`encode_credit` 5.3 million tokens/s with EA07 and
7.0 million with EA11, :func:`decode` 5.0 and 6.5 million; while other jobs loaded the machine
these fell to about 1.5 million.

The modules, each importing only those above it:

* :mod:`.chunks`: the chunk sizes; :mod:`.arrays`: array types and input checks;
* :mod:`.amounts`: the 16-bit amount field; :mod:`.crc`: CRC and CRC_C tables;
* :mod:`.sboxcircuit`: S-box tables to a Boolean circuit; :mod:`.sta`: bitsliced STA (EA07);
  :mod:`.misty1`: MISTY1 (EA11); :mod:`.des`: DES (EA09); :mod:`.ciphers`: the three behind one
  interface, chunk by chunk;
* :mod:`.digits`: 66 bits <-> 20 ASCII digits; :mod:`.layout`: data bits and blocks from the
  token layout table;
* :mod:`.tokens`: the encode and decode pipelines; :mod:`.meters`: meter numbers to MeterPANs and PAN
  blocks; :mod:`.keys`: DKGA02, DKGA04 and key change sets.

This package's namespace is its public API: the names below. The rest is internal to the package.
"""

from __future__ import annotations

from .amounts import decode_amounts, encode_amounts
from .arrays import Keys
from .ciphers import decrypt_blocks, encrypt_blocks
from .keys import dkga02, dkga04, key_change_sets
from .layout import credit_fields, data_blocks, layout_data
from .meters import meter_pans, pan_blocks
from .sta import SAMPLE_STA, STA
from .tokens import decode, encode_blocks, encode_credit

__all__ = [
    "SAMPLE_STA",
    "STA",
    "Keys",
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
    "meter_pans",
    "pan_blocks",
]
