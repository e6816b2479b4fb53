"""The cipher tables are built on first use, not at import (a command that does not run a cipher does not pay for
them), and the fast builders give the same tables as the definitions."""

from __future__ import annotations

import json
import subprocess
import sys
from array import array

from hypothesis import given
from hypothesis import strategies as st

from mita.sts import misty1, sta

PROBE = """
import json, sys
import mita.sts
from hypothesis import given
from hypothesis import strategies as st

from mita.sts import misty1, sta
before = {"sta": "_enc" in vars(sta.STA), "misty1": misty1._fi_tables.cache_info().currsize,
          "des": "cryptography" in sys.modules}
mita.sts.encode(mita.sts.TransferCredit(1, 1, 0), mita.sts.EA.STA, 1)
after_sta = {"sta": "_enc" in vars(sta.STA), "misty1": misty1._fi_tables.cache_info().currsize}
mita.sts.encode(mita.sts.TransferCredit(1, 1, 0), mita.sts.EA.MISTY1, 1)
print(json.dumps([before, after_sta, misty1._fi_tables.cache_info().currsize]))
"""


def test_tables_are_built_on_first_use() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=60)
    before, after_sta, after_misty1 = json.loads(done.stdout)
    assert before == {"sta": False, "misty1": 0, "des": False}  # importing the engine builds nothing
    assert after_sta == {"sta": True, "misty1": 0}  # an EA07 token builds STA's tables only
    assert after_misty1 == 1


def _permute(value: int, perm: tuple[int, ...]) -> int:
    return sum(1 << target for i, target in enumerate(perm) if value >> i & 1)


def test_the_sta_tables_are_the_substitution_then_the_permutation() -> None:
    """The byte-wise builder against the definition: output bit P[i] is input bit i of the substituted block."""
    table = sta.STA._enc
    for j in range(8):
        for key_byte in (0x00, 0x08, 0x80, 0x88, 0x5A):
            for b in (0x00, 0x01, 0x37, 0xA5, 0xFF):
                lo = sta.E2 if key_byte >> 3 & 1 else sta.E1
                hi = sta.E2 if key_byte >> 7 & 1 else sta.E1
                substituted = (lo[b & 15] | hi[b >> 4] << 4) << (8 * j)
                assert table[j][key_byte][b] == _permute(substituted, sta.P)


def test_the_misty1_fi_tables_are_the_fi_halves() -> None:
    fi_in, fi_out = misty1._fi_tables()
    assert fi_in == array("H", map(misty1._fi_in, range(1 << 16)))
    assert fi_out == array("H", map(misty1._fi_out, range(1 << 16)))


@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_the_direct_sta_decryption_is_the_table_one(block: int, key: int) -> None:
    for cipher in (sta.STA, sta.SAMPLE_STA):
        assert cipher.decrypt_direct(block, key) == cipher.decrypt_scheduled(block, cipher.decrypt_schedule(key))
        assert cipher.decrypt_direct(cipher.encrypt(block, key), key) == block


ONE_TOKEN = """
import json, mita.sts
from mita.sts import ea, sta
key = 0xE653341F9D5BF36F
block = ea.encrypt(ea.EA.STA, 0x00FF00FF00FF00FE, key)
first = ea.decrypt(ea.EA.STA, block, key)
built_after_first = "_dec" in vars(sta.STA)
second = ea.decrypt(ea.EA.STA, block, key)
print(json.dumps([first, second, built_after_first, "_dec" in vars(sta.STA)]))
"""


def test_a_process_decrypting_one_token_builds_no_decryption_tables() -> None:
    done = subprocess.run([sys.executable, "-c", ONE_TOKEN], capture_output=True, text=True, check=True, timeout=60)
    first, second, built_after_first, built_after_second = json.loads(done.stdout)
    assert first == second == 0x00FF00FF00FF00FE
    assert (built_after_first, built_after_second) == (False, True)
