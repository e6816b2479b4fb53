"""The token gateway's ``token_status`` (IC 115 attribute 6): the meter's :class:`~mita.meter.Result` as a code 0-8.

IEC 62056-6-2 / Blue Book IC 115 ``token_status_code`` (as gurux's ``TokenStatusCode`` enumerates it; the licensed
Blue Book text was not at hand, see ../shared/research/dlms.md §4.1):

====  =====================================  ==================================================================
code  meaning                                Mita results, and why
====  =====================================  ==================================================================
0     token format result OK                 (an intermediate step; never the final answer here)
1     authentication result OK               (intermediate)
2     validation result OK                   ``kct_pending``: a key change section, checked and kept, waiting for
                                             its other half; nothing executed yet
3     token execution result OK              ``accept``, ``key_changed``: the token did what it carries
4     token format failure                   ``format_error``, and an octet-string that is not 20 digits (not
                                             packed BCD/ASCII): the token's *form* is wrong
5     authentication failure                 ``crc_error``: STS authenticates a token by decrypting it with the
                                             meter's key and checking its CRC; a mistyped digit fails here
6     validation result failure              ``used``, ``old``, ``key_expired``, ``ddtk``: an authentic token the
                                             meter must not take (TID already used or too old, the key expired,
                                             credit on a default key) -- the standard's validation step
7     token execution result failure         ``range_error``, ``unsupported``, ``overflow``, ``key_type_error``,
                                             ``locked_out``: valid, but the meter cannot carry it out now
8     token received and not yet processed   never: the simulated meter answers ``enter`` synchronously
====  =====================================  ==================================================================

``data_value`` (a bit-string whose meaning the standard leaves to the carrier) holds Mita's own result as 8 bits,
most significant first: its index in :data:`mita.meter.profiles.RESULTS`, so a head-end learns the exact reason
(``used`` and ``old`` are both 6) without a vendor table.
"""

from __future__ import annotations

from mita.meter import Result
from mita.meter.profiles import RESULTS

FORMAT_FAILURE = 4

#: Mita's result -> token_status_code. One table; the docstring says why each row is what it is.
STATUS_CODE: dict[Result, int] = {
    Result.ACCEPT: 3,
    Result.KEY_CHANGED: 3,
    Result.KCT_PENDING: 2,
    Result.FORMAT_ERROR: 4,
    Result.CRC_ERROR: 5,
    Result.USED: 6,
    Result.OLD: 6,
    Result.KEY_EXPIRED: 6,
    Result.DDTK: 6,
    Result.RANGE_ERROR: 7,
    Result.UNSUPPORTED: 7,
    Result.OVERFLOW: 7,
    Result.KEY_TYPE_ERROR: 7,
    Result.LOCKED_OUT: 7,
}


def data_bits(result: Result) -> str:
    """The ``data_value`` bit-string, as '0'/'1' characters (8 bits: the result's index in RESULTS)."""
    return f"{RESULTS.index(result.value):08b}"
