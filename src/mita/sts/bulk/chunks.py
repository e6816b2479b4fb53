"""How many tokens each stage of the bulk path works on at once (tuned on the 2-vCPU target).

Work is done in chunks into buffers allocated once per call, so that the working set stays in the
CPU caches and memory stays bounded however many tokens are passed. The sizes live here, in one
module that every stage reads at call time (``chunks.GLUE``, not a copy bound at import), so that
tests can shrink them all in one place to cross chunk boundaries with few tokens.
"""

from __future__ import annotations

from typing import Final

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
