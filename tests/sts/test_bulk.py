"""The bulk (NumPy) token path must give exactly what the single-token engine gives.

Two kinds of evidence: the conformance vectors in mita/conformance/vectors (or $MITA_VECTORS; a missing
folder fails, never skips), run through the bulk functions a whole file at a time; and Hypothesis
comparisons, element by element, against ``mita.sts.encode``/``decode``, ``to_block``, ``sta`` and
``misty1`` on random inputs. Chunk sizes are shrunk in some tests so that chunk and glue boundaries,
padding of the last STA chunk and the tail of the last MISTY1 chunk are all exercised with small N.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import load_json
from mita import sts
from mita.sts import EA, BaseDate, CreditKind, MeterNumber, TransferCredit, bulk, misty1
from mita.sts import ea as ea_mod
from mita.sts import sta as sta_mod
from mita.sts.amount import MAX_UNITS, OFFSETS, encode_amount
from mita.sts.bulk import chunks
from mita.sts.crc import crc_field
from mita.sts.errors import CrcError, FormatError, RangeError, UnsupportedError
from mita.sts.identity import control_block
from mita.sts.tokens import REGISTRY, from_block, to_block, uses_crc_c

M64 = (1 << 64) - 1
FAST = settings(max_examples=40, deadline=None)


def ea_of(vector: dict[str, Any]) -> EA | None:
    name = vector["encryption_algorithm"]
    if "SAMPLE" in name:
        return None  # the standard's example tables: checked separately
    return EA.STA if name.startswith("EA07") else EA.MISTY1 if name.startswith("EA11") else None


def keys128(keys: list[int]) -> npt.NDArray[np.uint8]:
    """EA11 keys as the (N, 16) uint8 array the bulk path documents."""
    return np.frombuffer(b"".join(k.to_bytes(16, "big") for k in keys), dtype=np.uint8).reshape(-1, 16)


def as_s20(tokens: list[str]) -> npt.NDArray[np.bytes_]:
    return np.array([t.encode("ascii") for t in tokens], dtype="S20")


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Tiny chunks, so a few hundred tokens cross many chunk and glue boundaries.

    Every stage reads its chunk size from :mod:`mita.sts.bulk.chunks` at call time, so that is the
    one place to shrink them.
    """
    monkeypatch.setattr(chunks, "STA_CHUNK", 128)
    monkeypatch.setattr(chunks, "MISTY1_CHUNK", 100)
    monkeypatch.setattr(chunks, "DES_CHUNK", 96)
    monkeypatch.setattr(chunks, "GLUE", 48)
    yield


# ---------------------------------------------------------------- conformance vectors


def token_vectors() -> list[dict[str, Any]]:
    data = load_json("tokens.json")
    return [
        v
        for v in data["compliance_and_nectar_vectors"] + data["other_vectors"]
        if "SAMPLE" not in v["encryption_algorithm"]
    ]


@pytest.mark.parametrize("ea", [EA.STA, EA.MISTY1, None], ids=["EA07", "EA11", "class1"])
def test_token_vectors_encode_and_decode(ea: EA | None) -> None:
    """Every token vector: data block -> token, token -> data block, per class in one call each."""
    group = [v for v in token_vectors() if ea_of(v) is ea]
    assert group, "no vectors for this algorithm"
    for token_class in sorted({v["token_class"] for v in group}):
        vs = [v for v in group if v["token_class"] == token_class]
        blocks = np.array([int(v["data_block_hex"], 16) for v in vs], dtype=np.uint64)
        keys = [int(v["decoder_key_hex"] or "0", 16) for v in vs]  # class 1 vectors carry no key
        bulk_keys = keys128(keys) if ea is EA.MISTY1 else np.array(keys, dtype=np.uint64)
        tokens = bulk.encode_blocks(token_class, blocks, None if ea is None else bulk_keys, ea or EA.STA)
        assert tokens.dtype == np.dtype("S20")
        assert [t.decode() for t in tokens] == [v["token"] for v in vs]
        if ea is not None:
            encrypted = bulk.encrypt_blocks(blocks, bulk_keys, ea)
            for v, e in zip(vs, encrypted, strict=True):
                if "encrypted_block_hex" in v:
                    assert int(e) == int(v["encrypted_block_hex"], 16)
        out = bulk.decode(tokens, bulk_keys, ea or EA.STA)
        assert out["ok"].all()
        assert list(out["block"]) == list(blocks)
        assert list(out["class"]) == [token_class] * len(vs)
        assert list(out["subclass"]) == [v["subclass"] for v in vs]
        # ... and the single path agrees, token by token.
        for token, key, block in zip(tokens, keys, blocks, strict=True):
            assert to_block(sts.decode(token.decode(), ea or EA.STA, key)) == int(block)


def test_class1_decodes_without_keys() -> None:
    vs = [v for v in token_vectors() if v["token_class"] == 1]
    out = bulk.decode([v["token"] for v in vs], None, EA.STA)
    assert out["ok"].all()
    credit = [v for v in token_vectors() if v["token_class"] == 0][:3]
    out = bulk.decode([v["token"] for v in credit], None, EA.STA)
    assert out["format_ok"].all() and not out["crc_ok"].any()


def test_sta_vectors() -> None:
    data = load_json("sta.json")
    vs = data["vectors"] + [data["same_input_real_tables"]]
    plain = np.array([int(v["plaintext_hex"], 16) for v in vs], dtype=np.uint64)
    cipher = np.array([int(v["ciphertext_hex"], 16) for v in vs], dtype=np.uint64)
    keys = np.array([int(v["key_hex"], 16) for v in vs], dtype=np.uint64)
    assert (bulk.STA.encrypt(plain, keys) == cipher).all()
    assert (bulk.STA.decrypt(cipher, keys) == plain).all()
    assert (bulk.encrypt_blocks(plain, keys, EA.STA) == cipher).all()
    assert (bulk.decrypt_blocks(cipher, keys, 7) == plain).all()


def test_sta_worked_example_with_sample_tables() -> None:
    """The standard's worked example uses its printed sample tables; the circuit is derived from those too."""
    ex = load_json("sta.json")["worked_example_sample_tables"]
    key, plain, cipher = (int(ex[k], 16) for k in ("key_hex", "plaintext_hex", "ciphertext_hex"))
    assert list(bulk.SAMPLE_STA.encrypt([plain], key)) == [cipher]
    assert list(bulk.SAMPLE_STA.decrypt([cipher], key)) == [plain]
    rng = random.Random(7)
    blocks = [rng.getrandbits(64) for _ in range(200)]
    keys = [rng.getrandbits(64) for _ in range(200)]
    got = bulk.SAMPLE_STA.encrypt(np.array(blocks, dtype=np.uint64), np.array(keys, dtype=np.uint64))
    assert list(got) == [sta_mod.SAMPLE_STA.encrypt(b, k) for b, k in zip(blocks, keys, strict=True)]


def test_misty1_vectors() -> None:
    data = load_json("misty1.json")
    vs = data["rfc2994_vectors"] + data["sts_token_block_vectors"]
    plain = np.array([int(v["plaintext_hex"], 16) for v in vs], dtype=np.uint64)
    cipher = np.array([int(v["ciphertext_hex"], 16) for v in vs], dtype=np.uint64)
    ints = [int(v["key_hex"], 16) for v in vs]
    halves = np.array([[k >> 64, k & M64] for k in ints], dtype=np.uint64)
    for keys in (keys128(ints), halves, ints):
        assert (bulk.encrypt_blocks(plain, keys, EA.MISTY1) == cipher).all()
        assert (bulk.decrypt_blocks(cipher, keys, EA.MISTY1) == plain).all()


def test_des_vectors() -> None:
    vs = load_json("ea09_des_unverified.json")["vectors"]
    plain = [int(v["plaintext_hex"], 16) for v in vs]
    keys = np.array([int(v["decoder_key_hex"], 16) for v in vs], dtype=np.uint64)
    assert list(bulk.encrypt_blocks(plain, keys, EA.DEA)) == [int(v["ciphertext_hex"], 16) for v in vs]
    assert [t.decode() for t in bulk.encode_blocks(0, plain, keys, EA.DEA)] == [v["token"] for v in vs]


def test_dkga02_vectors() -> None:
    by_key: dict[tuple[str, int, str, str, int], list[dict[str, Any]]] = {}
    for v in load_json("dkga02.json")["vectors"]:
        by_key.setdefault((v["vending_key_hex"], v["key_type"], v["sgc"], v["ti"], v["krn"]), []).append(v)
    for (vk, kt, sgc, ti, krn), vs in by_key.items():
        meters = [MeterNumber(v["iin"], v["drn_iain"]) for v in vs]
        cb = control_block(kt, sgc, int(ti), krn)
        assert cb == int(vs[0]["control_block_hex"], 16)
        got = bulk.dkga02(bytes.fromhex(vk), meters, cb)
        assert list(got) == [int(v["decoder_key_hex"], 16) for v in vs]
        pans = np.array([int(v["pan_block_hex"], 16) for v in vs], dtype=np.uint64)
        if kt != 3:
            assert list(bulk.dkga02(bytes.fromhex(vk), pans, cb)) == list(got)


def test_dkga04_vectors() -> None:
    base_by_code = {b.code: b for b in BaseDate}
    for v in load_json("dkga04.json")["vectors"]:
        pan = v["meter_pan"]
        iin = "600727" if pan.startswith("600727") else "0000"
        meter = MeterNumber(iin, pan[len(iin) : -1])
        assert meter.pan == pan
        ea = EA(int(v["ea"]))
        args = (v["key_type"], v["sgc"], int(v["ti"]), v["krn"], base_by_code[v["base_date"]], ea)
        keys = bulk.dkga04(bytes.fromhex(v["vending_key_hex"]), [meter, meter], *args)
        expected = int(v["decoder_key_hex"], 16)
        if ea is EA.STA:
            assert keys.dtype == np.uint64 and list(keys) == [expected] * 2
        else:
            assert keys.shape == (2, 16) and bytes(keys[1]) == expected.to_bytes(16, "big")


# ---------------------------------------------------------------- random inputs against the single path

credit_rows = st.lists(
    st.tuples(
        st.integers(0, (1 << 24) - 1),
        st.one_of(st.integers(0, MAX_UNITS), st.sampled_from([16383, 16384, 180214, 180215, 180223, 1818525])),
        st.integers(0, 15),
        st.integers(0, (1 << 128) - 1),
    ),
    min_size=1,
    max_size=40,
)


@FAST
@given(rows=credit_rows, subclass=st.integers(0, 3), ea=st.sampled_from([EA.STA, EA.MISTY1]))
def test_encode_credit_matches_single_path(rows: list[tuple[int, int, int, int]], subclass: int, ea: EA) -> None:
    tids, amounts, rnds, raw_keys = (list(col) for col in zip(*rows, strict=True))
    keys: list[int] = [k & M64 for k in raw_keys] if ea is EA.STA else raw_keys
    bulk_keys = np.array(keys, dtype=np.uint64) if ea is EA.STA else keys128(keys)
    tokens = bulk.encode_credit(np.array(tids), np.array(amounts), np.array(rnds), bulk_keys, ea, subclass)
    expected = [
        sts.encode(TransferCredit(t, a, r, CreditKind(subclass)), ea, k)
        for t, a, r, k in zip(tids, amounts, rnds, keys, strict=True)
    ]
    assert [t.decode() for t in tokens] == expected
    out = bulk.decode(tokens, bulk_keys, ea)
    assert out["ok"].all()
    fields = bulk.credit_fields(out["data"])
    single = [sts.decode(t, ea, k) for t, k in zip(expected, keys, strict=True)]
    assert list(fields["tid"]) == tids
    assert list(fields["rnd"]) == rnds
    assert list(fields["amount"]) == [s.amount for s in single]  # type: ignore[attr-defined]


@FAST
@given(
    blocks=st.lists(st.integers(0, M64), min_size=1, max_size=300),
    seed=st.integers(0, 2**32),
)
def test_ciphers_match_single_path(blocks: list[int], seed: int) -> None:
    rng = random.Random(seed)
    k64 = [rng.getrandbits(64) for _ in blocks]
    k128 = [rng.getrandbits(128) for _ in blocks]
    b = np.array(blocks, dtype=np.uint64)
    enc = bulk.encrypt_blocks(b, np.array(k64, dtype=np.uint64), EA.STA)
    assert list(enc) == [sta_mod.encrypt(x, k) for x, k in zip(blocks, k64, strict=True)]
    assert (bulk.decrypt_blocks(enc, np.array(k64, dtype=np.uint64), EA.STA) == b).all()
    enc = bulk.encrypt_blocks(b, keys128(k128), EA.MISTY1)
    assert list(enc) == [misty1.encrypt(x, k) for x, k in zip(blocks, k128, strict=True)]
    assert (bulk.decrypt_blocks(enc, keys128(k128), EA.MISTY1) == b).all()


@pytest.mark.usefixtures("small_chunks")
@pytest.mark.parametrize("n", [1, 47, 64, 65, 127, 128, 129, 300, 1000])
def test_chunk_boundaries(n: int) -> None:
    rng = random.Random(n)
    blocks = [rng.getrandbits(64) for _ in range(n)]
    k64 = [rng.getrandbits(64) for _ in range(n)]
    k128 = [rng.getrandbits(128) for _ in range(n)]
    for ea, keys, bulk_keys, cipher in (
        (EA.STA, k64, np.array(k64, dtype=np.uint64), sta_mod.encrypt),
        (EA.MISTY1, k128, keys128(k128), misty1.encrypt),
    ):
        expected = [cipher(b, k) for b, k in zip(blocks, keys, strict=True)]
        assert list(bulk.encrypt_blocks(blocks, bulk_keys, ea)) == expected
        tokens = bulk.encode_blocks(2, blocks, bulk_keys, ea)
        assert [t.decode() for t in tokens] == [sts.codec.to_digits(sts.insert_class(e, 2)) for e in expected]
        out = bulk.decode(tokens, bulk_keys, ea)
        assert list(out["block"]) == blocks
        assert list(out["class"]) == [2] * n


@FAST
@given(
    token_class=st.integers(0, 3),
    rows=st.lists(st.tuples(st.integers(0, 15), st.integers(0, (1 << 44) - 1)), min_size=1, max_size=30),
)
def test_data_blocks_match_crc(token_class: int, rows: list[tuple[int, int]]) -> None:
    subs = [s for s, _ in rows]
    data = [d for _, d in rows]
    blocks = bulk.data_blocks(token_class, subs, data)
    assert list(blocks) == [
        s << 60 | d << 16 | crc_field(token_class << 48 | s << 44 | d, uses_crc_c(token_class, s)) for s, d in rows
    ]


def test_data_blocks_match_to_block() -> None:
    """Real token values of every registered type, including CRC_C of the currency subclasses."""
    rng = random.Random(3)
    for (token_class, sub), kind in REGISTRY.items():
        for _ in range(5):
            data = rng.getrandbits(44)
            try:
                token = kind.from_data_bits(sub, data)
                block = to_block(token)
            except sts.StsError:
                continue
            got = bulk.data_blocks(token_class, sub, [block >> 16 & ((1 << 44) - 1)])
            assert list(got) == [block]
            assert from_block(token_class, int(got[0])) == token


def test_currency_vector_crc_c() -> None:
    v = next(v for v in token_vectors() if v["token"] == "07420412750539184100")
    block = int(v["data_block_hex"], 16)
    assert list(bulk.data_blocks(0, block >> 60, [block >> 16 & ((1 << 44) - 1)])) == [block]
    out = bulk.decode([v["token"]], int(v["decoder_key_hex"], 16), EA.STA)
    assert out["ok"].all() and out["subclass"][0] == 4


# ---------------------------------------------------------------- amounts and range errors


def test_amounts_match_single_path() -> None:
    edges = [0, 1, MAX_UNITS]
    for off in OFFSETS[1:]:
        edges += list(range(off - 12, off + 12))
    for e in range(4):
        top = OFFSETS[e] + 16383 * 10**e
        edges += list(range(top - 12, top + 12))
    rng = random.Random(5)
    values = sorted({v for v in edges if 0 <= v <= MAX_UNITS} | {rng.randrange(MAX_UNITS + 1) for _ in range(3000)})
    assert list(bulk.encode_amounts(values)) == [encode_amount(v) for v in values]
    fields = bulk.encode_amounts(values)
    assert list(bulk.decode_amounts(fields)) == [sts.decode_amount(int(f)) for f in fields]


def test_range_errors_name_the_first_bad_index() -> None:
    ok = np.zeros(5, dtype=np.int64)
    with pytest.raises(RangeError, match=r"amounts\[3\]"):
        bulk.encode_credit(ok, [0, 1, 2, MAX_UNITS + 1, MAX_UNITS + 2], ok, 0, EA.STA)
    with pytest.raises(RangeError, match=r"amounts\[1\]"):
        bulk.encode_credit(ok, [0, -1, 2, 3, 4], ok, 0, EA.STA)
    with pytest.raises(RangeError, match=r"tids\[2\]"):
        bulk.encode_credit([0, 1, 1 << 24, -1, 0], ok, ok, 0, EA.STA)
    with pytest.raises(RangeError, match=r"rnds\[4\]"):
        bulk.encode_credit(ok, ok, [0, 1, 2, 15, 16], 0, EA.MISTY1)
    with pytest.raises(RangeError, match=r"data44\[1\]"):
        bulk.data_blocks(0, 0, [1, 1 << 44])
    with pytest.raises(RangeError, match=r"amounts\[0\]"):
        bulk.encode_amounts([1 << 70])
    with pytest.raises(UnsupportedError):
        bulk.encode_credit(ok, ok, ok, 0, EA.STA, subclass=4)
    with pytest.raises(FormatError):
        bulk.encode_credit(ok, ok, ok, 1 << 64, EA.STA)
    with pytest.raises(FormatError):
        bulk.encode_credit(ok, ok, ok, np.zeros(4, dtype=np.uint64), EA.STA)
    with pytest.raises(FormatError):
        bulk.encode_credit(ok, ok, ok, np.zeros((5, 3), dtype=np.uint8), EA.MISTY1)


def test_key_forms_agree() -> None:
    rng = random.Random(11)
    n = 70
    tids = [rng.randrange(1 << 24) for _ in range(n)]
    amounts = [rng.randrange(MAX_UNITS + 1) for _ in range(n)]
    k128 = [rng.getrandbits(128) for _ in range(n)]
    halves = np.array([[k >> 64, k & M64] for k in k128], dtype=np.uint64)
    forms: list[bulk.Keys] = [keys128(k128), halves, k128]
    results = [bulk.encode_credit(tids, amounts, 5, keys, EA.MISTY1) for keys in forms]
    assert all((r == results[0]).all() for r in results)
    one = bulk.encode_credit(tids, amounts, 5, k128[0], EA.MISTY1)
    assert [t.decode() for t in one] == [
        sts.encode(TransferCredit(t, a, 5), EA.MISTY1, k128[0]) for t, a in zip(tids, amounts, strict=True)
    ]
    k64 = [k & M64 for k in k128]
    assert (
        bulk.encode_credit(tids, amounts, 5, k64, EA.STA)
        == bulk.encode_credit(tids, amounts, 5, np.array(k64, dtype=np.uint64), EA.STA)
    ).all()


def test_empty_input() -> None:
    assert bulk.encode_credit([], [], [], [], EA.STA).shape == (0,)
    assert bulk.encode_credit([], [], [], np.zeros((0, 16), dtype=np.uint8), EA.MISTY1).shape == (0,)
    assert bulk.decode(np.zeros(0, dtype="S20"), [], EA.STA)["ok"].shape == (0,)


# ---------------------------------------------------------------- decoding bad tokens: flags, never raises


def single_outcome(token: str, ea: EA, key: int) -> str:
    try:
        sts.decode(token, ea, key)
    except FormatError:
        return "format"
    except UnsupportedError:
        return "unsupported"
    except CrcError:
        return "crc"
    return "ok"


def bulk_outcomes(out: dict[str, npt.NDArray[Any]]) -> list[str]:
    result = []
    for i in range(len(out["ok"])):
        if not out["format_ok"][i]:
            result.append("format")
        elif out["class"][i] == 3:
            result.append("unsupported")
        elif not out["crc_ok"][i]:
            result.append("crc")
        elif not out["supported"][i]:
            result.append("unsupported")
        else:
            result.append("ok")
    return result


digit_tokens = st.text(alphabet="0123456789", min_size=20, max_size=20)
odd_tokens = st.one_of(
    digit_tokens,
    st.text(alphabet="0123456789 -x", min_size=0, max_size=24),
    st.sampled_from(["73786976294838206463", "73786976294838206464", "99999999999999999999", "", "٠" * 20]),
)


@FAST
@given(tokens=st.lists(odd_tokens, min_size=1, max_size=25), key=st.integers(0, M64))
def test_decode_flags_match_single_path_errors(tokens: list[str], key: int) -> None:
    for ea, k in ((EA.STA, key), (EA.MISTY1, key << 64 | key)):
        out = bulk.decode(tokens, k, ea)
        assert bulk_outcomes(out) == [single_outcome(t, ea, k) for t in tokens]
        for i, t in enumerate(tokens):
            if out["ok"][i]:
                assert to_block(sts.decode(t, ea, k)) == int(out["block"][i])


def test_decode_flags_on_unsupported_and_mistyped() -> None:
    """A reserved subclass with a good CRC is unsupported; one wrong digit fails the CRC."""
    rng = random.Random(9)
    keys = np.array([rng.getrandbits(64) for _ in range(40)], dtype=np.uint64)
    data = [rng.getrandbits(44) for _ in range(40)]
    tokens = bulk.encode_blocks(0, bulk.data_blocks(0, 9, data), keys, EA.STA)
    out = bulk.decode(tokens, keys, EA.STA)
    assert out["crc_ok"].all() and not out["supported"].any() and not out["ok"].any()
    text = [t.decode() for t in tokens]
    assert bulk_outcomes(out) == [single_outcome(t, EA.STA, int(k)) for t, k in zip(text, keys, strict=True)]
    typo = [t[:7] + str((int(t[7]) + 1) % 10) + t[8:] for t in text]
    out = bulk.decode(typo, keys, EA.STA)
    assert bulk_outcomes(out) == [single_outcome(t, EA.STA, int(k)) for t, k in zip(typo, keys, strict=True)]


def test_token_input_forms_agree() -> None:
    vs = [v for v in token_vectors() if ea_of(v) is EA.STA][:30]
    keys = np.array([int(v["decoder_key_hex"], 16) for v in vs], dtype=np.uint64)
    plain = [v["token"] for v in vs]
    spaced = [f"{t[:4]} {t[4:8]}-{t[8:12]} {t[12:16]}-{t[16:]}" for t in plain]
    reference = bulk.decode(as_s20(plain), keys, EA.STA)
    for form in (plain, np.array(plain), spaced, [t.encode() for t in plain]):
        out = bulk.decode(form, keys, EA.STA)
        for name, arr in reference.items():
            assert (out[name] == arr).all(), name


def test_single_key_broadcast_matches_ea_module() -> None:
    rng = random.Random(13)
    blocks = [rng.getrandbits(64) for _ in range(50)]
    for ea, key in ((EA.STA, rng.getrandbits(64)), (EA.MISTY1, rng.getrandbits(128)), (EA.DEA, rng.getrandbits(64))):
        assert list(bulk.encrypt_blocks(blocks, key, ea)) == [ea_mod.encrypt(ea, b, key) for b in blocks]
        assert list(bulk.decrypt_blocks(blocks, key, ea)) == [ea_mod.decrypt(ea, b, key) for b in blocks]
