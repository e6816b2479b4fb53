"""The compiled accelerator (``mita.sts._speedups``) against the pure-Python reference it stands in for.

The extension is optional: built by the install's hatchling hook when there is a C compiler, else the engine runs
pure Python. Here: each of its functions equals its reference on random inputs (a differential property test, in
both directions of every cipher), every shipped vector passes with it on and with it off, the engine falls back
silently when it is missing or stale, and the build hook compiles it from source (or gives up without raising).
"""

from __future__ import annotations

import hmac
import importlib.util
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mita import sts
from mita.conformance import run_report
from mita.sts import accel, dkga, identity, misty1
from mita.sts import ea as ea_mod
from mita.sts import tokens as tokens_mod
from mita.sts.crc import crc_field
from mita.sts.sta import STA

REPO = Path(__file__).resolve().parents[2]
HOOK = REPO / "src" / "mita" / "sts" / "_csrc" / "hatch_build.py"
U64 = st.integers(0, (1 << 64) - 1)
U128 = st.integers(0, (1 << 128) - 1)

needs_extension = pytest.mark.skipif(not accel.available(), reason="the C accelerator is not built here")


@pytest.fixture
def pure_then_back() -> Iterator[None]:
    """Leave the process with the accelerator on, as every process starts."""
    try:
        yield
    finally:
        accel.use(True)


def _fn(name: str):  # type: ignore[no-untyped-def]
    found = accel.function(name)
    assert found is not None
    return found


@needs_extension
@settings(max_examples=400, deadline=None)
@given(U64, U64)
def test_sta_equals_the_reference(block: int, key: int) -> None:
    encrypted = _fn("sta_encrypt")(block, key)
    assert encrypted == STA.encrypt(block, key)
    assert _fn("sta_decrypt")(encrypted, key) == STA.decrypt(encrypted, key) == block


@needs_extension
@settings(max_examples=400, deadline=None)
@given(U64, U128)
def test_misty1_equals_the_reference(block: int, key: int) -> None:
    encrypted = _fn("misty1_encrypt")(block, key)
    assert encrypted == misty1.encrypt(block, key)
    assert _fn("misty1_decrypt")(encrypted, key) == misty1.decrypt(encrypted, key) == block


@needs_extension
@settings(max_examples=400, deadline=None)
@given(st.integers(0, (1 << 50) - 1), st.booleans())
def test_crc_equals_the_reference(info: int, currency: bool) -> None:
    assert _fn("crc_field")(info, currency) == crc_field(info, currency)


@needs_extension
@settings(max_examples=400, deadline=None)
@given(st.text("0123456789", max_size=20), st.integers(0, 200))
def test_luhn_digits_equal_the_reference(drn: str, weight: int) -> None:
    assert _fn("pan_digit")(drn, weight) == identity._pan_digit_reference(drn, weight)


@pytest.fixture(params=[True, False], ids=["sha-extensions", "portable"])
def sha_ni(request: pytest.FixtureRequest) -> Iterator[bool]:
    """Both compressions of the C SHA-256: with the CPU's SHA extensions (when it has them) and portable C."""
    speedups = accel._load()
    assert speedups is not None
    had = speedups.sha_ni()
    speedups.sha_ni(request.param)
    try:
        yield speedups.sha_ni()
    finally:
        speedups.sha_ni(had)


@needs_extension
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.binary(max_size=64),
    st.integers(1, 55).flatmap(lambda width: st.lists(st.binary(min_size=width, max_size=width), max_size=6)),
    st.integers(1, 32),
)
def test_hmac_equals_hmac_digest(sha_ni: bool, key: bytes, messages: list[bytes], size: int) -> None:
    states = _fn("hmac_states")(key)
    expected = [hmac.digest(key, m, "sha256")[:size] for m in messages]
    assert [_fn("hmac_short")(states, size, m) for m in messages] == [int.from_bytes(e, "big") for e in expected]
    if messages:
        assert _fn("hmac_batch")(states, size, b"".join(messages), len(messages[0])) == b"".join(expected)


@needs_extension
def test_hmac_refuses_what_it_cannot_do() -> None:
    """Longer keys and messages than one block go to hashlib (dkga.key_mac); the C functions refuse them."""
    states = _fn("hmac_states")(bytes(20))
    for call in (
        lambda: _fn("hmac_states")(bytes(65)),
        lambda: _fn("hmac_short")(states, 8, bytes(56)),
        lambda: _fn("hmac_short")(states, 33, b"x"),
        lambda: _fn("hmac_batch")(states, 8, bytes(10), 3),  # not whole messages
        lambda: _fn("hmac_batch")(states, 8, b"", 0),
    ):
        with pytest.raises(ValueError):
            call()
    with pytest.raises(TypeError):
        _fn("hmac_short")(states[:10], 8, b"x")


@needs_extension
def test_the_key_states_never_show() -> None:
    """The C HMAC's states are as good as the vending key: a repr (a traceback's locals, a log line) hides them."""
    vk = bytes(range(20))
    mac, states = dkga.key_mac(vk, 16, 49)
    assert states is not None and len(states) == 64
    for shown in (repr(states), str(states), repr(mac), f"{states}"):
        assert "<secret>" in shown and vk.hex() not in shown and states.hex() not in shown
        assert "\\x" not in shown


@needs_extension
def test_luhn_digits_of_what_is_not_digits_are_refused() -> None:
    """MeterNumber checks the characters first; the C function still never reads a non-digit as one."""
    for text in ("4700000000a", "47000 00009", "٣٣", "/"):
        assert _fn("pan_digit")(text, 0) == -2


@needs_extension
@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("sta_encrypt", (-1, 5)),
        ("sta_encrypt", (1 << 64, 5)),
        ("misty1_encrypt", (1, 1 << 128)),
        ("misty1_encrypt", (1, -1)),
        ("misty1_decrypt", (1 << 64, 1)),
        ("crc_field", (1 << 56, False)),
    ],
)
def test_values_that_do_not_fit_are_refused_as_the_reference_refuses_them(name: str, args: tuple[int, int]) -> None:
    """Out of range is an OverflowError on both paths (``int.to_bytes`` in the reference), never a wrapped value."""
    reference = {
        "sta_encrypt": STA.encrypt,
        "misty1_encrypt": misty1.encrypt,
        "misty1_decrypt": misty1.decrypt,
        "crc_field": crc_field,
    }[name]
    with pytest.raises(OverflowError):
        reference(*args)
    with pytest.raises(OverflowError):
        _fn(name)(*args)


@needs_extension
@settings(max_examples=200, deadline=None)
@given(st.integers(0, 0xFFFFFF), st.integers(0, 100_000), st.integers(0, 15), U64, U128)
def test_tokens_are_the_same_with_the_accelerator_on_and_off(
    tid: int, amount: int, rnd: int, k64: int, k128: int
) -> None:
    token = sts.TransferCredit(tid, amount, rnd)
    carried = sts.TransferCredit(tid, sts.decode_amount(sts.encode_amount(amount)), rnd)  # rounded up
    try:
        on = [sts.encode(token, sts.EA.STA, k64), sts.encode(token, sts.EA.MISTY1, k128)]
        accel.use(False)
        off = [sts.encode(token, sts.EA.STA, k64), sts.encode(token, sts.EA.MISTY1, k128)]
        assert sts.decode(off[0], sts.EA.STA, k64) == sts.decode(off[1], sts.EA.MISTY1, k128) == carried
    finally:
        accel.use(True)
    assert on == off
    assert sts.decode(on[0], sts.EA.STA, k64) == sts.decode(on[1], sts.EA.MISTY1, k128) == carried


@pytest.mark.parametrize("on", [True, False], ids=["accelerated", "pure"])
def test_every_vector_passes_on_either_path(on: bool, pure_then_back: None) -> None:
    """The conformance report runs every shipped vector through the engine's dispatch (ea, codec, tokens)."""
    accel.use(on)
    assert accel.enabled() == (on and accel.available())
    report = run_report()
    failed = [(c.id, [(f.check, f.expected, f.got) for f in c.failures]) for c in report.failures]
    assert not failed, failed[:5]
    assert report.summary.total > 1000


def test_use_chooses_again(pure_then_back: None) -> None:
    accel.use(False)
    sts.encode(sts.TransferCredit(1, 1), sts.EA.MISTY1, 1)
    assert ea_mod.ENCRYPT[sts.EA.MISTY1] is misty1.encrypt
    assert tokens_mod._crc is crc_field
    sts.MeterNumber.parse("47000000009"[:-1] + str(sts.luhn_digit("4700000000")))
    assert identity._pan_digit is identity._pan_digit_reference
    vk = bytes(range(20))
    meter = sts.MeterNumber.parse("47000000009"[:-1] + str(sts.luhn_digit("4700000000")))
    pure_key = sts.dkga04(vk, meter, 2, "123456", 1, 1, sts.BaseDate.Y2014, sts.EA.MISTY1)
    assert dkga._dkga04_states(vk, 2, "123456", 1, 1, sts.BaseDate.Y2014, sts.EA.MISTY1)[0].__name__ == "mac"
    accel.use(True)
    assert dkga._dkga04_states.cache_info().currsize == 0
    assert sts.dkga04(vk, meter, 2, "123456", 1, 1, sts.BaseDate.Y2014, sts.EA.MISTY1) == pure_key
    assert not ea_mod.ENCRYPT and tokens_mod._crc is tokens_mod._bind_crc  # forgotten, chosen on next use
    assert identity._pan_digit is identity._bind_pan_digit
    sts.encode(sts.TransferCredit(1, 1), sts.EA.MISTY1, 1)
    chosen = ea_mod.ENCRYPT[sts.EA.MISTY1]
    assert (chosen is not misty1.encrypt) == accel.available()


def test_a_missing_or_stale_extension_falls_back_to_pure_python(
    monkeypatch: pytest.MonkeyPatch, pure_then_back: None
) -> None:
    expected = sts.encode(sts.TransferCredit(7, 8, 9), sts.EA.MISTY1, 12345)
    stale = ModuleType("mita.sts._speedups")
    stale.ABI = accel.ABI - 1  # type: ignore[attr-defined]
    real_import = importlib.import_module
    for found in (ImportError("no such module"), stale):

        def fake_import(name: str, package: str | None = None, found: object = found) -> ModuleType:
            if name == "._speedups":
                if isinstance(found, ImportError):
                    raise found
                assert isinstance(found, ModuleType)
                return found
            return real_import(name, package)

        monkeypatch.setattr(accel.importlib, "import_module", fake_import)
        monkeypatch.setattr(accel, "_tried", False)
        monkeypatch.setattr(accel, "_module", None)
        accel.use(True)
        assert not accel.available() and not accel.enabled()
        assert sts.encode(sts.TransferCredit(7, 8, 9), sts.EA.MISTY1, 12345) == expected
        assert ea_mod.ENCRYPT[sts.EA.MISTY1] is misty1.encrypt
    monkeypatch.undo()
    accel.use(True)


def test_a_table_of_the_wrong_size_is_not_used(monkeypatch: pytest.MonkeyPatch, pure_then_back: None) -> None:
    """A set-up the extension refuses (a mismatched build) answers None: the reference runs, no error."""
    if not accel.available():
        pytest.skip("the C accelerator is not built here")

    def bad_setup(module: ModuleType) -> None:
        module.crc_setup(b"\x00" * 10)

    monkeypatch.setitem(accel._SETUP, "crc_field", bad_setup)
    monkeypatch.setattr(accel, "_ready", set())
    assert accel.function("crc_field") is None
    accel.use(True)
    assert sts.decode(sts.encode(sts.TransferCredit(3, 4), sts.EA.STA, 99), sts.EA.STA, 99) == sts.TransferCredit(3, 4)
    assert tokens_mod._crc is crc_field


def _load_hook() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mita_speedups_hook", HOOK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler")
def test_the_build_hook_compiles_the_extension_from_source(tmp_path: Path) -> None:
    hook = _load_hook()
    built = hook.build(tmp_path)
    assert built is not None and built.parent == tmp_path and built.name.startswith("_speedups")
    assert [p.name for p in tmp_path.iterdir()] == [built.name]  # no temporary file left behind
    spec = importlib.util.spec_from_file_location("_speedups", built)
    assert spec is not None and spec.loader is not None
    fresh = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fresh)
    assert fresh.ABI == accel.ABI
    accel._setup_misty1(fresh)
    assert fresh.misty1_encrypt(0x0123456789ABCDEF, 1 << 100) == misty1.encrypt(0x0123456789ABCDEF, 1 << 100)


def test_the_build_hook_gives_up_quietly_without_a_compiler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    hook = _load_hook()
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    assert hook.build(tmp_path) is None
    assert list(tmp_path.iterdir()) == []
    assert "pure Python instead" in capsys.readouterr().err
    monkeypatch.setenv("CC", "false")  # a compiler that fails
    assert hook.build(tmp_path) is None
    assert list(tmp_path.iterdir()) == []


def test_the_hook_builds_wheels_only_and_marks_them_platform_specific(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook = _load_hook()
    built = tmp_path / "_speedups.so"
    monkeypatch.setattr(hook, "build", lambda: built)
    plugin = hook.SpeedupsHook.__new__(hook.SpeedupsHook)
    for target, version, expected in (
        ("sdist", "standard", {"force_include": {}}),
        ("wheel", "editable", {"force_include": {}, "pure_python": False, "infer_tag": True}),
        (
            "wheel",
            "standard",
            {"force_include": {str(built): f"mita/sts/{built.name}"}, "pure_python": False, "infer_tag": True},
        ),
    ):
        plugin.target_name = target
        data: dict[str, object] = {"force_include": {}}
        plugin.initialize(version, data)
        assert data == expected, (target, version)
