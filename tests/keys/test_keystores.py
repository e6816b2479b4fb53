"""Both keystores against the conformance vectors, and the PKCS#11 keystore against a real SoftHSM2.

No mocks: a session fixture initialises fresh SoftHSM2 tokens in a private folder (its own softhsm2.conf,
pointed to by SOFTHSM2_CONF) and the PKCS#11 keystore talks to them through python-pkcs11. Without
``softhsm2-util`` or the module these tests *fail*, saying so: CI must run them (``make test`` installs
SoftHSM2), and a green run without them would claim an HSM path nobody checked.

Tests here share the token, so each one uses its own SGC or removes what it stored.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pkcs11
import pytest
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass

from conftest import hexint, load_json, reproduced, vector_params
from mita import sts
from mita.keys.pkcs11 import DEFAULT_MODULE, Pkcs11KeyStore, attribute_mapper, key_label
from mita.keys.software import SoftwareKeyStore, key_check_value
from mita.keys.store import Derivation, KeyStore, StoredKey
from mita.sealing import KeyStoreError
from mita.sts import EA, BaseDate, FormatError, MeterNumber, UnsupportedError, bulk
from mita.sts.identity import luhn_digit

MODULE = os.environ.get("MITA_HSM_MODULE") or DEFAULT_MODULE
TOKEN = "mita-test"
PIN_TOKEN = "mita-test-pin"  # never logged in by the session fixture: a wrong PIN reaches C_Login for real
SO_PIN = "87654321"
PIN = "1234"
BASE_BY_CODE = {b.code: b for b in BaseDate}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Fresh SoftHSM2 tokens in a tmp folder (a reused tokendir would hold a second token with the same label)."""
    util = shutil.which("softhsm2-util")
    if util is None:
        pytest.fail(
            "softhsm2-util not found: the PKCS#11 keystore tests need SoftHSM2 "
            "(`make test` installs it; by hand: apt-get install --no-install-recommends softhsm2)",
            pytrace=False,
        )
    if not Path(MODULE).is_file():
        pytest.fail(f"the SoftHSM2 PKCS#11 module {MODULE} is missing (Debian package libsofthsm2)", pytrace=False)
    folder = tmp_path_factory.mktemp("softhsm")
    (folder / "tokens").mkdir()
    conf = folder / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {folder / 'tokens'}\n"
        "objectstore.backend = file\n"
        "log.level = ERROR\n"
        "slots.removable = false\n"
    )
    previous = os.environ.get("SOFTHSM2_CONF")
    os.environ["SOFTHSM2_CONF"] = str(conf)  # read by the module when it loads, and by softhsm2-util
    try:
        for label in (TOKEN, PIN_TOKEN):
            done = subprocess.run(
                [util, "--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", PIN],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=60,
            )
            if done.returncode != 0:
                pytest.fail(f"softhsm2-util --init-token failed: {done.stderr or done.stdout}", pytrace=False)
        yield conf
    finally:
        if previous is None:
            os.environ.pop("SOFTHSM2_CONF", None)
        else:
            os.environ["SOFTHSM2_CONF"] = previous


@pytest.fixture(scope="session")
def hsm(softhsm: Path) -> Iterator[Pkcs11KeyStore]:
    store = Pkcs11KeyStore(MODULE, TOKEN, PIN)
    yield store
    store.close()


@pytest.fixture(autouse=True)
def _master_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """The software keystore seals under the master key: CI sets MITA_MASTER_KEY_FILE, locally a throwaway one."""
    if not os.environ.get("MITA_MASTER_KEY") and not os.environ.get("MITA_MASTER_KEY_FILE"):
        monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))


@pytest.fixture
def software() -> SoftwareKeyStore:
    return SoftwareKeyStore()


@pytest.fixture
def token_session(hsm: Pkcs11KeyStore) -> Iterator[pkcs11.Session]:
    """A session of the test's own on the token: it reads (and tries to weaken) objects behind the keystore's back.

    The process is logged in already (the keystore's login), so this session sees private objects.
    """
    token = pkcs11.lib(MODULE).get_token(token_label=TOKEN)
    session = token.open(rw=True, attribute_mapper=attribute_mapper())
    yield session
    session.close()


@contextlib.contextmanager
def stored(store: KeyStore, sgc: str, krn: int, dkga: int, key: bytes) -> Iterator[StoredKey]:
    """A key put into a keystore for the test's duration (the token is shared by the whole session)."""
    kept = store.put(sgc, krn, dkga, key)
    try:
        yield kept
    finally:
        store.remove(kept)


def keystore(request: pytest.FixtureRequest, name: str) -> KeyStore:
    store: KeyStore = request.getfixturevalue("hsm" if name == "pkcs11" else "software")
    return store


def meter_from_pan(pan: str) -> MeterNumber:
    iin = "600727" if pan.startswith("600727") else "0000"
    meter = MeterNumber(iin, pan[len(iin) : -1])
    assert meter.pan == pan
    return meter


def meters(n: int) -> list[MeterNumber]:
    drns = (f"{i * 7919 % 10**10:010d}" for i in range(n))
    return [MeterNumber("600727", drn + str(luhn_digit(drn))) for drn in drns]


def derivation(ea: EA, sgc: str = "123457", krn: int = 1) -> Derivation:
    return Derivation(kt=2, sgc=sgc, ti=1, krn=krn, base_date=BaseDate.Y1993, ea=ea)


def codes(exc: pytest.ExceptionInfo[KeyStoreError]) -> str:
    return exc.value.code


# ---------------------------------------------------------------- the shared conformance vectors


def _dkga04() -> list[Any]:
    return [
        pytest.param(v, id=f"BD{v['base_date']}-EA{v['ea']}-sgc{v['sgc']}-ti{v['ti']}-krn{v['krn']}-{v['meter_pan']}")
        for v in load_json("dkga04.json")["vectors"]
        if reproduced(v)
    ]


def _dkga02() -> list[Any]:
    return [
        pytest.param(v, id=f"kt{v['key_type']}-sgc{v['sgc']}-ti{v['ti']}-krn{v['krn']}-{v['iin']}-{v['drn_iain']}")
        for v in load_json("dkga02.json")["vectors"]
        if reproduced(v)
    ]


@pytest.mark.parametrize("name", ["software", "pkcs11"])
@pytest.mark.parametrize("v", vector_params(_dkga04))
def test_dkga04_vectors(request: pytest.FixtureRequest, name: str, v: dict[str, Any]) -> None:
    store = keystore(request, name)
    meter = meter_from_pan(v["meter_pan"])
    ea = EA.parse(v["ea"])
    d = Derivation(v["key_type"], v["sgc"], int(v["ti"]), v["krn"], BASE_BY_CODE[v["base_date"]], ea)
    want = v["decoder_key_hex"]
    with stored(store, d.sgc, d.krn, 4, bytes.fromhex(v["vending_key_hex"])) as kept:
        assert kept.keystore == name
        key = store.open(kept)
        assert f"{key.decoder_key(meter, d):0{ea.key_bits // 4}x}" == want
        keys = key.decoder_keys([meter, meter], d)
    if ea is EA.MISTY1:
        assert keys.dtype == np.uint8 and keys.shape == (2, 16)
        assert [row.tobytes().hex() for row in keys] == [want, want]
    else:
        assert keys.dtype == np.uint64 and keys.shape == (2,)
        assert [f"{int(k):016x}" for k in keys] == [want, want]


@pytest.mark.parametrize("v", vector_params(_dkga02))
def test_dkga02_vectors_software(software: SoftwareKeyStore, v: dict[str, Any]) -> None:
    meter = MeterNumber(v["iin"], v["drn_iain"])
    d = Derivation(v["key_type"], v["sgc"], int(v["ti"]), v["krn"], BaseDate.Y1993, EA.STA)
    with stored(software, d.sgc, d.krn, 2, bytes.fromhex(v["vending_key_hex"])) as kept:
        key = software.open(kept)
        assert key.decoder_key(meter, d) == hexint(v["decoder_key_hex"])
        keys = key.decoder_keys([meter], d)
    assert keys.dtype == np.uint64 and [int(k) for k in keys] == [hexint(v["decoder_key_hex"])]


@pytest.mark.parametrize("v", vector_params(_dkga02))
def test_dkga02_refused_by_pkcs11(hsm: Pkcs11KeyStore, v: dict[str, Any]) -> None:
    vk = v["vending_key_hex"]
    with pytest.raises(KeyStoreError) as refused:
        hsm.put(v["sgc"], v["krn"], 2, bytes.fromhex(vk))
    assert codes(refused) == "keystore_unsupported"
    message = str(refused.value)
    assert "DKGA02" in message and "software keystore" in message and "XOR" in message
    assert vk not in message.lower()


def test_dkga02_generate_and_open_refused(hsm: Pkcs11KeyStore, token_session: pkcs11.Session) -> None:
    with pytest.raises(KeyStoreError) as refused:
        hsm.generate("220001", 1, 2)
    assert codes(refused) == "keystore_unsupported"
    with pytest.raises(KeyStoreError) as refused:
        hsm.open(StoredKey("pkcs11", "220001", 1, 2, "000000", handle=key_label("220001", 1)))
    assert codes(refused) == "keystore_unsupported"
    assert not list(token_session.get_objects({Attribute.LABEL: key_label("220001", 1)}))  # nothing was stored


# ---------------------------------------------------------------- both keystores agree


@pytest.mark.parametrize("ea", [EA.STA, EA.MISTY1])
def test_bulk_matches_software_and_sts(hsm: Pkcs11KeyStore, software: SoftwareKeyStore, ea: EA) -> None:
    vk = secrets.token_bytes(20)
    d = derivation(ea, sgc="220002")
    group = meters(300)
    with stored(hsm, d.sgc, d.krn, 4, vk) as in_hsm, stored(software, d.sgc, d.krn, 4, vk) as in_software:
        assert in_hsm.kcv == in_software.kcv == key_check_value(4, vk)
        from_hsm = hsm.open(in_hsm).decoder_keys(group, d)
        from_software = software.open(in_software).decoder_keys(group, d)
        single = hsm.open(in_hsm).decoder_key(group[17], d)
        assert hsm.open(in_hsm).decoder_keys([], d).shape == from_software[:0].shape
    reference = bulk.dkga04(vk, group, d.kt, d.sgc, d.ti, d.krn, d.base_date, ea)
    assert from_hsm.dtype == from_software.dtype == reference.dtype
    assert from_hsm.shape == from_software.shape == reference.shape
    assert np.array_equal(from_hsm, reference) and np.array_equal(from_software, reference)
    assert single == sts.dkga04(vk, group[17], d.kt, d.sgc, d.ti, d.krn, d.base_date, ea)


def test_kcv_identical_between_keystores(hsm: Pkcs11KeyStore, software: SoftwareKeyStore) -> None:
    for i in range(5):
        vk = secrets.token_bytes(20)
        with stored(hsm, "220003", i + 1, 4, vk) as in_hsm:
            in_software = software.put("220003", i + 1, 4, vk)
            assert in_hsm.kcv == in_software.kcv == key_check_value(4, vk)
            assert len(in_hsm.kcv) == 6
            assert hsm.open(in_hsm).kcv == in_hsm.kcv


# ---------------------------------------------------------------- the PKCS#11 keystore's own behaviour


def test_put_gives_a_handle_and_no_blob(hsm: Pkcs11KeyStore) -> None:
    with stored(hsm, "220004", 3, 4, secrets.token_bytes(20)) as kept:
        assert kept.keystore == "pkcs11" == hsm.name
        assert (kept.sgc, kept.krn, kept.dkga) == ("220004", 3, 4)
        assert kept.handle == "mita-vk:220004:3" == key_label("220004", 3)
        assert kept.sealed == b""


def test_generate_gives_working_keys(hsm: Pkcs11KeyStore) -> None:
    first = hsm.generate("220005", 1, 4)
    second = hsm.generate("220005", 2, 4)
    try:
        assert first.keystore == "pkcs11" and first.dkga == 4 and first.sealed == b""
        assert first.handle == key_label("220005", 1)
        assert len(first.kcv) == 6 and int(first.kcv, 16) >= 0
        assert first.kcv != second.kcv  # two draws of 160 bits (a 2**-24 chance of a false alarm)
        d = derivation(EA.MISTY1, sgc="220005")
        group = meters(20)
        key = hsm.open(first)
        assert key.kcv == first.kcv
        # A second keystore on the same token (same process: it shares the login) makes its own session copy.
        with Pkcs11KeyStore(MODULE, TOKEN, PIN) as other:
            again = other.open(first)
            assert again is not key
            assert [again.decoder_key(m, d) for m in group] == [key.decoder_key(m, d) for m in group]
            assert np.array_equal(again.decoder_keys(group, d), key.decoder_keys(group, d))
        assert key.decoder_key(group[0], d) != hsm.open(second).decoder_key(group[0], d)
    finally:
        hsm.remove(first)
        hsm.remove(second)


def test_open_is_cached(hsm: Pkcs11KeyStore) -> None:
    with stored(hsm, "220006", 1, 4, secrets.token_bytes(20)) as kept:
        assert hsm.open(kept) is hsm.open(kept)


def test_put_refuses_an_existing_label(hsm: Pkcs11KeyStore) -> None:
    vk = secrets.token_bytes(20)
    with stored(hsm, "220007", 1, 4, vk) as kept:
        for attempt in (lambda: hsm.put("220007", 1, 4, vk), lambda: hsm.generate("220007", 1, 4)):
            with pytest.raises(KeyStoreError) as refused:
                attempt()
            assert codes(refused) == "key_exists"
            assert vk.hex() not in str(refused.value)
        assert hsm.open(kept).kcv == kept.kcv  # the first key is untouched


def test_remove_then_open(hsm: Pkcs11KeyStore, token_session: pkcs11.Session) -> None:
    kept = hsm.put("220008", 1, 4, secrets.token_bytes(20))
    opened = hsm.open(kept)
    d = derivation(EA.STA, sgc="220008")
    opened.decoder_key(meters(1)[0], d)
    hsm.remove(kept)
    assert not list(token_session.get_objects({Attribute.LABEL: kept.handle}))  # token object and session copy
    with pytest.raises(KeyStoreError) as gone:
        hsm.open(kept)
    assert codes(gone) == "key_not_found"
    with pytest.raises(KeyStoreError) as gone:
        opened.decoder_key(meters(1)[0], d)  # a key opened before the removal no longer derives
    assert codes(gone) == "key_not_found"
    hsm.remove(kept)  # removing again is no error: an interrupted retirement can be retried


def test_open_checks_the_kcv_and_the_keystore(hsm: Pkcs11KeyStore) -> None:
    with stored(hsm, "220009", 1, 4, secrets.token_bytes(20)) as kept:
        wrong = "000000" if kept.kcv != "000000" else "111111"
        with pytest.raises(KeyStoreError) as refused:
            hsm.open(StoredKey("pkcs11", kept.sgc, kept.krn, 4, wrong, handle=kept.handle))
        assert codes(refused) == "key_mismatch"
        hsm.open(kept)  # cached now: the check holds for a cached key too
        with pytest.raises(KeyStoreError) as refused:
            hsm.open(StoredKey("pkcs11", kept.sgc, kept.krn, 4, wrong, handle=kept.handle))
        assert codes(refused) == "key_mismatch"
        with pytest.raises(KeyStoreError) as refused:
            hsm.open(StoredKey("software", kept.sgc, kept.krn, 4, kept.kcv))
        assert codes(refused) == "wrong_keystore"


def test_bad_requests(hsm: Pkcs11KeyStore) -> None:
    with pytest.raises(KeyStoreError) as refused:
        hsm.put("220010", 1, 3, secrets.token_bytes(20))
    assert codes(refused) == "invalid_dkga"
    with pytest.raises(FormatError):
        hsm.put("220010", 1, 4, secrets.token_bytes(16))
    with pytest.raises(FormatError):
        hsm.put("22001", 1, 4, secrets.token_bytes(20))  # an SGC that would make an ambiguous label
    with stored(hsm, "220010", 1, 4, secrets.token_bytes(20)) as kept, pytest.raises(UnsupportedError):
        hsm.open(kept).decoder_key(meters(1)[0], derivation(EA.DEA, sgc="220010"))


def test_key_objects_are_locked_down(hsm: Pkcs11KeyStore, token_session: pkcs11.Session) -> None:
    vk = secrets.token_bytes(20)
    with stored(hsm, "220011", 1, 4, vk) as kept:
        hsm.open(kept)  # makes the session copy
        objects = list(token_session.get_objects({Attribute.LABEL: kept.handle}))
        assert sorted(o[Attribute.TOKEN] for o in objects) == [False, True]  # the token object and its copy
        for obj in objects:
            assert obj[Attribute.CLASS] == ObjectClass.SECRET_KEY
            assert obj[Attribute.KEY_TYPE] == KeyType.GENERIC_SECRET
            assert obj[Attribute.VALUE_LEN] == 32  # the 160-bit key, zero-padded for SoftHSM's HMAC minimum
            assert obj[Attribute.SENSITIVE] is True
            assert obj[Attribute.EXTRACTABLE] is False
            assert obj[Attribute.PRIVATE] is True
            assert obj[Attribute.SIGN] is True
            for use in (Attribute.VERIFY, Attribute.ENCRYPT, Attribute.DECRYPT, Attribute.WRAP, Attribute.UNWRAP):
                assert obj[use] is False, use
            assert obj[Attribute.DERIVE] is False
            assert obj[Attribute.ALLOWED_MECHANISMS] == [Mechanism.SHA256_HMAC]
            with pytest.raises(pkcs11.AttributeSensitive):
                obj[Attribute.VALUE]
            with pytest.raises(pkcs11.MechanismInvalid):
                obj.sign(b"anything", mechanism=Mechanism.SHA_1_HMAC)  # type: ignore[attr-defined]
        token_object = next(o for o in objects if o[Attribute.TOKEN])
        for attribute, value in ((Attribute.SENSITIVE, False), (Attribute.EXTRACTABLE, True)):
            with pytest.raises(pkcs11.AttributeReadOnly):
                token_object[attribute] = value
        with pytest.raises(pkcs11.AttributeReadOnly):
            token_object[Attribute.ALLOWED_MECHANISMS] = [Mechanism.SHA256_HMAC, Mechanism.SHA_1_HMAC]
        with pytest.raises(pkcs11.AttributeReadOnly):
            token_object.copy({Attribute.TOKEN: False, Attribute.EXTRACTABLE: True})
        # The token computes with it all the same: the padded key gives the 160-bit key's HMAC.
        assert token_object.sign(bytes(8), mechanism=Mechanism.SHA256_HMAC)[:3].hex() == key_check_value(4, vk)  # type: ignore[attr-defined]


def test_no_secret_in_reprs(hsm: Pkcs11KeyStore) -> None:
    vk = secrets.token_bytes(20)
    with stored(hsm, "220012", 1, 4, vk) as kept:
        key = hsm.open(kept)
        for text in (repr(key), str(key), repr(hsm), repr(kept)):
            assert vk.hex() not in text.lower() and PIN not in text
        assert "mita-vk:220012:1" in repr(key)


def test_derivation_from_many_threads(hsm: Pkcs11KeyStore) -> None:
    vk = secrets.token_bytes(20)
    d = derivation(EA.STA, sgc="220013")
    group = meters(400)
    want = [sts.dkga04(vk, m, d.kt, d.sgc, d.ti, d.krn, d.base_date, d.ea) for m in group]
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []
    with stored(hsm, d.sgc, d.krn, 4, vk) as kept:
        key = hsm.open(kept)

        def work(i: int) -> None:
            try:
                if i % 2:
                    results[i] = [int(k) for k in key.decoder_keys(group, d)]
                else:
                    results[i] = [key.decoder_key(m, d) for m in group]
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert not errors
    assert len(results) == 6 and all(r == want for r in results.values())


# ---------------------------------------------------------------- errors from the token


def test_wrong_pin(hsm: Pkcs11KeyStore) -> None:
    with pytest.raises(KeyStoreError) as refused:
        Pkcs11KeyStore(MODULE, PIN_TOKEN, "99999")  # C_Login on a token this process is not logged in to
    assert codes(refused) == "hsm_unavailable"
    assert "PIN" in str(refused.value) and "99999" not in str(refused.value)
    with Pkcs11KeyStore(MODULE, PIN_TOKEN, PIN) as right:
        assert right.token_label == PIN_TOKEN
        # Logged in now, the token would accept any PIN without checking it: the keystore checks it instead.
        with pytest.raises(KeyStoreError) as refused:
            Pkcs11KeyStore(MODULE, PIN_TOKEN, "99999")
        assert codes(refused) == "hsm_unavailable"
    with pytest.raises(KeyStoreError) as refused:
        Pkcs11KeyStore(MODULE, TOKEN, "99999")  # the fixture's keystore is logged in to this one
    assert codes(refused) == "hsm_unavailable"


def test_missing_token_or_module(softhsm: Path) -> None:
    with pytest.raises(KeyStoreError) as refused:
        Pkcs11KeyStore(MODULE, "no-such-token", PIN)
    assert codes(refused) == "hsm_unavailable" and "no-such-token" in str(refused.value)
    with pytest.raises(KeyStoreError) as refused:
        Pkcs11KeyStore("/nonexistent/libnothing.so", TOKEN, PIN)
    assert codes(refused) == "hsm_unavailable" and "libnothing" in str(refused.value)


def test_closed_keystore(softhsm: Path, hsm: Pkcs11KeyStore) -> None:
    vk = secrets.token_bytes(20)
    with stored(hsm, "220014", 1, 4, vk) as kept:
        other = Pkcs11KeyStore(MODULE, TOKEN, PIN)
        key = other.open(kept)
        other.close()
        other.close()  # twice is fine
        with pytest.raises(KeyStoreError) as closed:
            key.decoder_key(meters(1)[0], derivation(EA.STA, sgc="220014"))
        assert codes(closed) == "hsm_unavailable" and "closed" in str(closed.value)
        with pytest.raises(KeyStoreError) as closed:
            other.open(kept)
        assert codes(closed) == "hsm_unavailable"
        assert hsm.open(kept).kcv == kept.kcv  # the other keystore's close left this one logged in


def test_from_env(softhsm: Path, hsm: Pkcs11KeyStore, tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    env = {"MITA_HSM_MODULE": MODULE, "MITA_HSM_TOKEN": TOKEN, "MITA_HSM_PIN_FILE": str(pin_file)}
    with Pkcs11KeyStore.from_env(env) as store:
        assert (store.module, store.token_label) == (MODULE, TOKEN)
    if MODULE == DEFAULT_MODULE:
        with Pkcs11KeyStore.from_env({"MITA_HSM_TOKEN": TOKEN, "MITA_HSM_PIN": PIN}) as store:
            assert store.module == DEFAULT_MODULE
    for broken, code in (
        ({"MITA_HSM_PIN": PIN}, "hsm_not_configured"),
        ({"MITA_HSM_TOKEN": TOKEN}, "hsm_not_configured"),
        ({"MITA_HSM_TOKEN": TOKEN, "MITA_HSM_PIN_FILE": str(tmp_path / "missing")}, "hsm_not_configured"),
    ):
        with pytest.raises(KeyStoreError) as refused:
            Pkcs11KeyStore.from_env(broken)
        assert codes(refused) == code


def test_lost_session_is_reopened(hsm: Pkcs11KeyStore) -> None:
    """A session that dies under the keystore (an HSM restart, a network HSM's idle timeout) costs no failed call."""
    vk = secrets.token_bytes(20)
    d = derivation(EA.MISTY1, sgc="220015")
    meter = meters(1)[0]
    want = sts.dkga04(vk, meter, d.kt, d.sgc, d.ti, d.krn, d.base_date, d.ea)
    with stored(hsm, d.sgc, d.krn, 4, vk) as kept, Pkcs11KeyStore(MODULE, TOKEN, PIN) as other:
        key = other.open(kept)
        assert key.decoder_key(meter, d) == want
        assert other._session is not None
        other._session.close()  # C_CloseSession behind the keystore's back: the session copy dies with it
        assert key.decoder_key(meter, d) == want  # a new session, a new copy (same KCV), the same key
        other._session.close()
        assert other.open(kept) is key and key.decoder_key(meter, d) == want


def test_lost_login_is_renewed(hsm: Pkcs11KeyStore) -> None:
    """A C_Logout destroys every private session object of the process: every keystore recovers by itself."""
    vk = secrets.token_bytes(20)
    d = derivation(EA.STA, sgc="220016")
    meter = meters(1)[0]
    want = sts.dkga04(vk, meter, d.kt, d.sgc, d.ti, d.krn, d.base_date, d.ea)
    with stored(hsm, d.sgc, d.krn, 4, vk) as kept, Pkcs11KeyStore(MODULE, TOKEN, PIN) as other:
        mine, theirs = hsm.open(kept), other.open(kept)
        assert mine.decoder_key(meter, d) == theirs.decoder_key(meter, d) == want
        login, generation = other._login.session, other._login.generation
        assert login is not None and other._login is hsm._login  # one login per token per process
        login.close()  # C_Logout + C_CloseSession: the process is logged out, every session copy destroyed
        assert theirs.decoder_key(meter, d) == want  # logs in again
        assert mine.decoder_key(meter, d) == want  # sees the new login and keeps it
        assert theirs.decoder_key(meter, d) == want  # no ping-pong of log-outs between the two
        assert mine.decoder_keys([meter], d).tolist() == [want]
        assert other._login.generation == generation + 1  # logged in again exactly once


# ---------------------------------------------------------------- the HSM behind the vending service


def test_vends_and_a_campaign_with_the_vending_keys_in_the_hsm(
    hsm: Pkcs11KeyStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end with DKGA04 keys held by SoftHSM2: a vend the meter accepts, then a KRN rotation campaign."""
    import datetime as dt

    from sqlalchemy import select

    from mita import campaign
    from mita.meter.model import Meter
    from mita.vend import database, keyring, registry
    from mita.vend.schema import vending_keys
    from mita.vend.service import VendingService

    monkeypatch.setenv("MITA_HSM_MODULE", MODULE)
    monkeypatch.setenv("MITA_HSM_TOKEN", TOKEN)
    monkeypatch.setenv("MITA_HSM_PIN", PIN)
    monkeypatch.setattr(keyring, "_stores", {})  # this test's keystores, from the environment above
    url = f"sqlite:///{tmp_path / 'hsm.db'}"
    database.upgrade(url)
    engine = database.make_engine(url)
    admin, sgc = registry.SYSTEM, "220020"
    vk = secrets.token_bytes(20)
    registry.Registry(engine).create_supply_group(
        admin,
        sgc=sgc,
        name="HSM town",
        vending_key=vk.hex(),
        dkga=4,
        ea=11,
        kt=2,
        krn=1,
        base_date=2014,
        keystore_name="pkcs11",
    )
    registry.Registry(engine).create_tariff(
        admin,
        name="flat",
        currency="ZAR",
        spec={"blocks": [{"up_to": None, "price": "2.00"}]},
        effective_from=dt.datetime(2020, 1, 1),
    )
    body = "0100000001"
    drn = body + str(luhn_digit(body))
    registry.Registry(engine).create_meter(admin, drn=drn, sgc=sgc, tariff="flat")
    with engine.connect() as conn:
        row = conn.execute(select(vending_keys)).one()
    assert (row.keystore, row.sealed, row.kcv) == ("pkcs11", b"", key_check_value(4, vk))  # nothing to unseal

    number = MeterNumber("600727", drn)
    dk = sts.derive_decoder_key(4, vk, number, 2, sgc, 1, 1, BaseDate.Y2014, EA.MISTY1)  # the software reference
    meter = Meter.create(drn=drn, ea=11, decoder_key=dk, sgc=sgc, ti=1, krn=1, kt=2, profile="edition2-ea11")
    now = dt.datetime(2026, 11, 25, 10, 0)
    clock = [now]
    svc = VendingService(engine, clock=lambda: clock[0])
    _, api_key = registry.Registry(engine).create_api_key("till", "admin")
    caller = registry.authenticate(engine, api_key)
    sold = svc.vend(caller, "hsm-1", {"meter": drn, "amount": 1000}).body
    assert [meter.enter(t["digits"], now).result.value for t in sold["tokens"]] == ["accept"]

    keyring.add_key(engine, admin, sgc=sgc, krn=2, dkga=4, keystore_name="pkcs11", at=now)  # made by the token
    keyring.activate_key(engine, admin, sgc=sgc, krn=2, at=now)
    plan = campaign.plan(engine, admin, name="rotate in the HSM", sgc=sgc, target={"krn": 2}, at=now)
    done = campaign.generate(engine, admin, plan["id"], at=now)
    assert done["meters"]["issued"] == 1
    (line,) = list(campaign.export_csv(engine, plan["id"]))[1:]
    tokens = [t for t in line.strip().split(",")[8:] if t]
    assert len(tokens) == 4  # a 128-bit key travels in four tokens
    assert [meter.enter(t, now).result.value for t in tokens] == ["kct_pending"] * 3 + ["key_changed"]
    campaign.mark(svc, caller, plan["id"], [drn], "confirmed", at=now)
    clock[0] = now + dt.timedelta(minutes=5)
    sold = svc.vend(caller, "hsm-2", {"meter": drn, "amount": 1000}).body
    assert [t["kind"] for t in sold["tokens"]] == ["credit"]
    assert [meter.enter(t["digits"], clock[0]).result.value for t in sold["tokens"]] == ["accept"]
    assert meter.state.krn == 2
    engine.dispose()
