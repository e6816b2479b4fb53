"""Saving and loading a meter (mita.meter.storage): round trip, sealed key, atomic writes, clear errors.

The master key lives in a file under pytest's tmp_path (``MITA_MASTER_KEY_FILE``); ``MITA_MASTER_KEY`` is
removed from the environment so that no test reads or creates anything outside its own folder.

Errors are checked by their stable ``code``: a state that cannot be read is a :class:`MeterError`; a bad master
key is reported by the key store (``mita.sealing``), also an :class:`~mita.sts.StsError` with a code.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from mita import sts
from mita.meter import Meter, Result, storage
from mita.meter.errors import MeterError

KEY = 0x0123456789ABCDEF
NEW_KEY = 0xFEDCBA9876543210
KEY128 = 0x00112233445566778899AABBCCDDEEFF
NEW128 = 0xF0E1D2C3B4A5968778695A4B3C2D1E0F
DRN = "47500150231"
T0 = dt.datetime(2024, 3, 1, 12, 0)
TID0 = sts.tid_from_datetime(T0)


@pytest.fixture
def master_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("MITA_MASTER_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # never ~/.config/mita, whatever happens
    path = tmp_path / "secrets" / "master.key"
    monkeypatch.setenv("MITA_MASTER_KEY_FILE", str(path))
    return path


@pytest.fixture
def folder(tmp_path: Path, master_file: Path) -> Path:
    path = tmp_path / "meters"
    path.mkdir()
    return path


def make_meter(profile: str = "legacy-ea07", ea: int = 7, key: int = KEY) -> Meter:
    return Meter.create(drn=DRN, ea=ea, decoder_key=key, sgc="123456", ti=1, krn=1, kt=2, profile=profile)


def credit(meter: Meter, tid: int, amount: int = 100) -> str:
    s = meter.state
    kind = sts.CreditKind.WATER if meter.profile.utility == "water" else sts.CreditKind.ELECTRICITY
    return sts.encode(sts.TransferCredit(tid, amount, 5, kind), sts.EA(s.ea), s.decoder_key)


def busy_meter(profile: str = "legacy-ea07", ea: int = 7, key: int = KEY) -> Meter:
    """A meter with something in every part of its state."""
    meter = make_meter(profile, ea, key)
    algorithm = sts.EA(ea)
    assert meter.enter(credit(meter, TID0, 500), T0).result == Result.ACCEPT
    assert meter.enter(sts.encode(sts.SetMaximumPowerLimit(TID0 + 1, 3000), algorithm, key), T0).result == "accept"
    assert meter.enter(sts.encode(sts.SetTariffRate(TID0 + 2, 120), algorithm, key), T0).result == "accept"
    meter.run(600, 1500, T0)
    meter.run(100, 4000, T0 + dt.timedelta(seconds=600))  # trips: tripped_until is set
    meter.tamper("cover", T0 + dt.timedelta(seconds=700))
    bits = 128 if ea == 11 else 64
    sections = sts.key_change_set(
        NEW128 if ea == 11 else NEW_KEY, key_bits=bits, ken=255, krn=2, kt=2, ti=1, sgc="654321"
    )
    now = T0 + dt.timedelta(seconds=800)
    assert meter.enter(sts.encode(sections[0], algorithm, key), now).result == Result.KCT_PENDING
    assert meter.enter("1234", now).result == Result.FORMAT_ERROR  # one reject on the counter
    s = meter.state
    assert s.registers and s.tids.count(TID0) == 1 and s.mpl == 3000 and s.tamper == ["cover"]
    assert s.tripped_until is not None and s.pending_kct and s.pending_since is not None and s.failures == 1
    return meter


def key_forms(key: int, bits: int) -> list[str]:
    """Ways a key could be written out: hex both cases, byte-reversed hex (NectarAPI's EA07 order), decimal."""
    raw = key.to_bytes(bits // 8, "big")
    forms = [raw.hex(), raw[::-1].hex(), str(key)]
    return forms + [f.upper() for f in forms[:2]]


def only_file(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ---------------------------------------------------------------- round trip


@pytest.mark.parametrize(
    ("profile", "ea", "key"),
    [("legacy-ea07", 7, KEY), ("edition2-ea11", 11, KEY128), ("water-valve", 9, KEY)],
)
def test_save_load_round_trip(folder: Path, profile: str, ea: int, key: int) -> None:
    meter = busy_meter(profile, ea, key)
    path = folder / "meter.json"
    storage.save(meter, path)
    assert only_file(folder) == ["meter.json"]
    loaded = storage.load(path)
    assert loaded.state == meter.state
    assert loaded.state.decoder_key == key
    assert loaded.profile == meter.profile
    assert loaded.status() == meter.status()
    # The loaded meter goes on where the saved one stopped.
    later = T0 + dt.timedelta(hours=2)
    assert loaded.enter(credit(loaded, TID0), later).result == Result.USED
    assert loaded.enter(credit(loaded, TID0 + 10), later).result == Result.ACCEPT


def test_a_pending_key_change_completes_after_a_reload(folder: Path) -> None:
    meter = busy_meter()
    path = folder / "meter.json"
    storage.save(meter, path)
    loaded = storage.load(path)
    second = sts.key_change_set(NEW_KEY, key_bits=64, ken=255, krn=2, kt=2, ti=1)[1]
    now = T0 + dt.timedelta(seconds=810)
    assert loaded.enter(sts.encode(second, sts.EA.STA, KEY), now).result == Result.KEY_CHANGED
    assert loaded.state.decoder_key == NEW_KEY
    storage.save(loaded, path)
    assert storage.load(path).state.decoder_key == NEW_KEY


def test_dumps_loads_in_memory(master_file: Path) -> None:
    meter = busy_meter()
    text = storage.dumps(meter)
    data = json.loads(text)
    assert data["format"] == storage.FORMAT
    assert "decoder_key" not in data
    assert storage.loads(text).state == meter.state
    assert storage.dumps(meter) != text  # a fresh nonce every time


def test_save_overwrites(folder: Path) -> None:
    meter = make_meter()
    path = folder / "meter.json"
    storage.save(meter, path)
    meter.enter(credit(meter, TID0), T0)
    storage.save(meter, path)
    assert storage.load(path).state.registers == meter.state.registers
    assert only_file(folder) == ["meter.json"]


def test_the_last_entry_is_saved_and_loaded(folder: Path) -> None:
    meter = make_meter()
    path = folder / "meter.json"
    token = credit(meter, TID0, 70)
    assert meter.enter(token, T0, via="remote").result == Result.ACCEPT
    storage.save(meter, path)
    saved = json.loads(path.read_text())["last_entry"]
    assert saved == {"token": token, "at": "2024-03-01T12:00:00", "result": "accept", "via": "remote"}
    loaded = storage.load(path)
    assert loaded.state.last_entry == meter.state.last_entry
    assert loaded.status()["last_entry"] == saved  # what `mita meter show` prints
    assert loaded.enter(f"{token[:4]} {token[4:]}", T0 + dt.timedelta(minutes=1)).result == Result.USED
    assert loaded.state.last_entry is not None
    assert (loaded.state.last_entry.token, loaded.state.last_entry.via) == (token, "keypad")  # as typed, unspaced


def test_a_file_from_before_the_last_entry_loads(folder: Path) -> None:
    """Files saved before the meter remembered its last entry have no ``last_entry``: a meter that took none."""
    path = folder / "meter.json"
    storage.save(busy_meter(), path)
    _edit(path, last_entry=None)
    assert "last_entry" not in path.read_text()
    loaded = storage.load(path)
    assert loaded.state.last_entry is None
    assert loaded.status()["last_entry"] is None
    assert loaded.enter(credit(loaded, TID0 + 20), T0 + dt.timedelta(hours=1)).result == Result.ACCEPT
    storage.save(loaded, path)
    assert storage.load(path).state.last_entry == loaded.state.last_entry


def test_a_key_change_sections_digits_are_not_remembered(folder: Path) -> None:
    """A key change token carries part of the new key (encrypted under the old one, which may be a known default
    key): the last entry keeps its time and result, not its digits."""
    meter = make_meter()
    section = sts.encode(sts.key_change_set(NEW_KEY, key_bits=64, ken=255, krn=2, kt=2, ti=1)[0], sts.EA.STA, KEY)
    assert meter.enter(section, T0).result == Result.KCT_PENDING
    path = folder / "meter.json"
    storage.save(meter, path)
    assert section not in path.read_text()
    last = storage.load(path).state.last_entry
    assert last is not None and (last.token, last.result, last.via) == (None, "kct_pending", "keypad")


def test_save_says_which_file_it_wrote(folder: Path) -> None:
    """The written file's status, taken before the rename: a program sharing the file compares it with a later
    stat to learn whether someone else saved it since (mita.sim.meterfile)."""
    meter = make_meter()
    path = folder / "meter.json"
    first = storage.save(meter, path)
    now = os.stat(path)
    assert (first.st_ino, first.st_mtime_ns, first.st_size) == (now.st_ino, now.st_mtime_ns, now.st_size)
    second = storage.save(meter, path, sync=False)
    assert second.st_ino != first.st_ino  # every save is a new file renamed over the old one
    assert second.st_ino == os.stat(path).st_ino


def test_master_key_file_is_created_private(folder: Path, master_file: Path) -> None:
    assert not master_file.exists()
    storage.save(make_meter(), folder / "meter.json")
    text = master_file.read_text().strip()
    assert len(bytes.fromhex(text)) == 32
    assert stat.S_IMODE(master_file.stat().st_mode) == 0o600
    storage.save(make_meter(), folder / "other.json")
    assert master_file.read_text().strip() == text  # made once, then reused


def test_master_key_from_the_environment(folder: Path, master_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MITA_MASTER_KEY", "ab" * 32)
    meter = make_meter()
    storage.save(meter, folder / "meter.json")
    assert not master_file.exists()  # the environment wins; no file is made
    assert storage.load(folder / "meter.json").state == meter.state


# ---------------------------------------------------------------- the key is sealed


@pytest.mark.parametrize(("ea", "key", "profile"), [(7, KEY, "legacy-ea07"), (11, KEY128, "edition2-ea11")])
def test_decoder_key_is_not_in_the_file(folder: Path, ea: int, key: int, profile: str) -> None:
    meter = make_meter(profile, ea, key)
    path = folder / "meter.json"
    storage.save(meter, path)
    text = path.read_text()
    for form in key_forms(key, 128 if ea == 11 else 64):
        assert form not in text, form
    assert "decoder_key" not in json.loads(text)


def test_pending_key_change_sections_are_not_in_the_file(folder: Path) -> None:
    """Three of four sections entered: 96 bits of the *new* decoder key wait in the state, and must not be on
    disk in the clear (the storage promise: decoder keys never sit on disk in plaintext)."""
    meter = make_meter("edition2-ea11", 11, KEY128)
    sections = sts.key_change_set(NEW128, key_bits=128, ken=255, krn=2, kt=2, ti=1, sgc="654321")
    for section in sections[:3]:
        assert meter.enter(sts.encode(section, sts.EA.MISTY1, KEY128), T0).result == Result.KCT_PENDING
    path = folder / "meter.json"
    storage.save(meter, path)
    text = path.read_text()
    for form in key_forms(NEW128, 128):
        assert form not in text, form
    for shift in (96, 64, 32, 0):
        part = NEW128 >> shift & 0xFFFFFFFF
        for form in (str(part), f"{part:08x}", f"{part:08X}"):
            assert form not in text, f"32 bits of the new key ({form}) are in the state file"
    loaded = storage.load(path)  # and the set still completes after a reload
    last = sts.encode(sections[3], sts.EA.MISTY1, KEY128)
    assert loaded.enter(last, T0 + dt.timedelta(seconds=5)).result == Result.KEY_CHANGED
    assert loaded.state.decoder_key == NEW128


def test_wrong_master_key_is_key_unreadable(folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = folder / "meter.json"
    storage.save(make_meter(), path)
    monkeypatch.setenv("MITA_MASTER_KEY_FILE", str(tmp_path / "another.key"))  # a new, different master key
    with pytest.raises(MeterError) as exc:
        storage.load(path)
    assert exc.value.code == "key_unreadable"
    assert "the meter's sealed decoder key" in exc.value.message


def test_wrong_master_key_from_the_environment(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = folder / "meter.json"
    storage.save(make_meter(), path)
    monkeypatch.setenv("MITA_MASTER_KEY", "00" * 32)
    with pytest.raises(MeterError) as exc:
        storage.load(path)
    assert exc.value.code == "key_unreadable"


def _edit(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    for name, value in changes.items():
        if value is None:
            data.pop(name, None)
        else:
            data[name] = value
    path.write_text(json.dumps(data))


@pytest.mark.parametrize(
    "changes",
    [
        {"drn": "12123456787"},  # the sealed key is bound to the meter number
        {"decoder_key_sealed": None},
        {"decoder_key_sealed": ""},
        {"decoder_key_sealed": "00" * 44},
        {"decoder_key_sealed": "00" * 5},
    ],
    ids=["other-drn", "missing", "empty", "forged", "short"],
)
def test_tampered_seal_is_key_unreadable(folder: Path, changes: dict[str, Any]) -> None:
    path = folder / "meter.json"
    storage.save(make_meter(), path)
    _edit(path, **changes)
    with pytest.raises(MeterError) as exc:
        storage.load(path)
    assert exc.value.code == "key_unreadable"


def test_seal_that_is_not_hex_is_corrupt_state(folder: Path) -> None:
    path = folder / "meter.json"
    storage.save(make_meter(), path)
    _edit(path, decoder_key_sealed="zz")
    with pytest.raises(MeterError) as exc:
        storage.load(path)
    assert exc.value.code == "corrupt_state"


def test_flipped_bit_in_the_seal_is_key_unreadable(folder: Path) -> None:
    path = folder / "meter.json"
    storage.save(make_meter(), path)
    sealed = json.loads(path.read_text())["decoder_key_sealed"]
    flipped = sealed[:-1] + ("0" if sealed[-1] != "0" else "1")
    _edit(path, decoder_key_sealed=flipped)
    with pytest.raises(MeterError) as exc:
        storage.load(path)
    assert exc.value.code == "key_unreadable"


@pytest.mark.parametrize("value", ["abcd", "ab" * 31, "ab" * 33, "zz" * 32, ""])
def test_bad_master_key_in_the_environment(folder: Path, monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MITA_MASTER_KEY", value)
    if not value:  # empty: the variable is ignored and the file is used
        storage.save(make_meter(), folder / "meter.json")
        return
    with pytest.raises(sts.StsError) as exc:
        storage.save(make_meter(), folder / "meter.json")
    assert exc.value.code == "bad_master_key"
    assert only_file(folder) == []


@pytest.mark.parametrize("content", ["abcd", "ab" * 33, "not a hex key at all, just text", "zz" * 32])
def test_bad_master_key_file(folder: Path, master_file: Path, content: str) -> None:
    master_file.parent.mkdir(parents=True)
    master_file.write_text(content)
    with pytest.raises(sts.StsError) as exc:
        storage.save(make_meter(), folder / "meter.json")
    assert exc.value.code == "bad_master_key"
    assert only_file(folder) == []


# ---------------------------------------------------------------- corrupt or missing state


@pytest.mark.parametrize(
    "text",
    ["", "not json", "{", "[1, 2, 3]", "null", '"mita-meter/1"', '{"format": "mita-meter/0"}', "{}"],
    ids=["empty", "text", "open-brace", "list", "null", "string", "old-format", "no-format"],
)
def test_corrupt_json_is_corrupt_state(folder: Path, text: str) -> None:
    path = folder / "meter.json"
    path.write_text(text)
    with pytest.raises(MeterError) as exc:
        storage.load(path)
    assert exc.value.code == "corrupt_state"


def test_truncated_file_is_corrupt_state(folder: Path) -> None:
    path = folder / "meter.json"
    storage.save(busy_meter(), path)
    text = path.read_text()
    for cut in (1, len(text) // 3, len(text) // 2, len(text) - 3):
        path.write_text(text[:cut])
        with pytest.raises(MeterError) as exc:
            storage.load(path)
        assert exc.value.code == "corrupt_state", cut


@pytest.mark.parametrize(
    "changes",
    [
        {"tids": None},
        {"profile": None},
        {"registers": {"0": "lots"}},
        {"registers": {"electricity": 5}},
        {"clock": "yesterday"},
        {"locked_until": 5},
        {"pending_kct": {"3": 7}},
        {"last_entry": "yesterday"},
        {"last_entry": {"token": 5, "at": "2024-03-01T12:00:00", "result": "accept", "via": "keypad"}},
        {"last_entry": {"token": "1", "at": "noon", "result": "accept", "via": "keypad"}},
        {"last_entry": {"token": "1", "at": "2024-03-01T12:00:00", "result": "accept", "via": "post"}},
        {"last_entry": {"token": "1", "result": "accept", "via": "keypad"}},
    ],
    ids=[
        "no-tids",
        "no-profile",
        "register-text",
        "register-name",
        "clock-text",
        "lock-number",
        "pending-int",
        "entry-text",
        "entry-token-number",
        "entry-time-text",
        "entry-via-unknown",
        "entry-no-time",
    ],
)
def test_invalid_fields_are_corrupt_state(folder: Path, changes: dict[str, Any]) -> None:
    path = folder / "meter.json"
    storage.save(busy_meter(), path)
    _edit(path, **changes)
    with pytest.raises(MeterError) as exc:
        storage.load(path)
    assert exc.value.code == "corrupt_state"


def test_missing_file_is_no_state(folder: Path) -> None:
    with pytest.raises(MeterError) as exc:
        storage.load(folder / "nowhere.json")
    assert exc.value.code == "no_state"


# ---------------------------------------------------------------- atomic writes


class Crash(Exception):
    """The simulated power cut."""


def _saved_twice(folder: Path) -> tuple[Meter, Path, str]:
    """A meter saved once (the old state on disk), then changed in memory (the new state to save)."""
    meter = make_meter()
    meter.enter(credit(meter, TID0, 100), T0)
    path = folder / "meter.json"
    storage.save(meter, path)
    old = path.read_text()
    meter.enter(credit(meter, TID0 + 1, 900), T0)
    return meter, path, old


def _assert_old_state_intact(folder: Path, path: Path, old: str) -> None:
    assert path.read_text() == old
    assert only_file(folder) == ["meter.json"]  # no temporary file left behind
    assert storage.load(path).state.registers == {0: 100 * 360_000}


def test_crash_at_the_rename_keeps_the_old_file(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meter, path, old = _saved_twice(folder)

    def crash(src: Any, dst: Any) -> None:
        raise Crash("power cut at rename")

    with monkeypatch.context() as patch:
        patch.setattr(storage.os, "replace", crash)
        with pytest.raises(Crash):
            storage.save(meter, path)
    _assert_old_state_intact(folder, path, old)


def test_crash_at_fsync_keeps_the_old_file(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meter, path, old = _saved_twice(folder)

    def crash(fd: int) -> None:
        raise OSError(5, "I/O error")

    with monkeypatch.context() as patch:
        patch.setattr(storage.os, "fsync", crash)
        with pytest.raises(OSError):
            storage.save(meter, path)
    _assert_old_state_intact(folder, path, old)


def test_crash_half_way_through_the_write_keeps_the_old_file(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meter, path, old = _saved_twice(folder)
    real_fdopen = os.fdopen
    written: list[str] = []

    class HalfWriter:
        def __init__(self, f: Any) -> None:
            self.f = f

        def __enter__(self) -> HalfWriter:
            return self

        def __exit__(self, *exc: object) -> None:
            self.f.close()

        def write(self, text: str) -> int:
            self.f.write(text[: len(text) // 2])
            self.f.flush()
            written.append(text)
            raise OSError(28, "No space left on device")

        def __getattr__(self, name: str) -> Any:
            return getattr(self.f, name)

    with monkeypatch.context() as patch:
        patch.setattr(storage.os, "fdopen", lambda fd, *a, **k: HalfWriter(real_fdopen(fd, *a, **k)))
        with pytest.raises(OSError):
            storage.save(meter, path)
    assert written, "the simulated crash did not happen inside the write"
    _assert_old_state_intact(folder, path, old)


def test_interrupt_mid_save_keeps_the_old_file(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meter, path, old = _saved_twice(folder)

    def interrupted(m: Meter) -> str:
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(storage, "dumps", interrupted)
        with pytest.raises(KeyboardInterrupt):
            storage.save(meter, path)
    _assert_old_state_intact(folder, path, old)


def test_crash_on_the_first_save_leaves_nothing(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(src: Any, dst: Any) -> None:
        raise Crash("power cut at rename")

    with monkeypatch.context() as patch:
        patch.setattr(storage.os, "replace", crash)
        with pytest.raises(Crash):
            storage.save(make_meter(), folder / "meter.json")
    assert only_file(folder) == []
    with pytest.raises(MeterError) as exc:
        storage.load(folder / "meter.json")
    assert exc.value.code == "no_state"


def test_successful_save_after_a_crash(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meter, path, _ = _saved_twice(folder)
    with monkeypatch.context() as patch:
        patch.setattr(storage.os, "replace", lambda src, dst: (_ for _ in ()).throw(Crash()))
        with pytest.raises(Crash):
            storage.save(meter, path)
    storage.save(meter, path)
    assert storage.load(path).state == meter.state
    assert only_file(folder) == ["meter.json"]
