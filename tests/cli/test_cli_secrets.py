"""Keys never on the command line: ``mita token`` and ``mita meter new`` read them from a file, standard input
or an environment variable (``--key-file``, ``--key-file -``, ``--key-env`` and the like), and refuse the old
``--key``, ``--vending-key``, ``--new-key`` and ``--decoder-key`` without echoing the value.

The process-list tests run the real command as a subprocess and read ``/proc/<pid>/cmdline`` while it waits
for its key (from a FIFO, or from standard input the test has not written yet), so the command is certainly
running when its command line is read.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import leak_scan
from cli_run import run
from mita import sts
from mita.cli import secrets, token_ops

VK = "abababababababab"  # the STS 531 test vending key (leak_scan.TEST_KEYS has it)
DRN, SGC = "47500150231", "123456"
DECODER = "141003ec71fa1465"  # DKGA02 of VK for DRN, KT 2, SGC, TI 1, KRN 1
METER_KEY = "e653341f9d5bf36f"  # the compliance suites' test meter
NEW_KEY = "0123456789abcdef"
REASON = "keys on the command line are visible to every local user in ps and in shell history"
CLI = [sys.executable, "-m", "mita.cli.main"]
DERIVE = ["token", "derive-key", "--drn", DRN, "--sgc", SGC]
AT = ["--at", "2026-11-25T14:00", "--base-date", "2014"]


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Run in a folder of our own, with a throwaway master key (``mita meter new`` seals the key under it)."""
    monkeypatch.delenv("MITA_MASTER_KEY", raising=False)
    monkeypatch.setenv("MITA_MASTER_KEY_FILE", str(tmp_path / "master.key"))
    monkeypatch.chdir(tmp_path)
    yield tmp_path


def key_file(name: str, text: str) -> str:
    Path(name).write_text(text, encoding="utf-8")
    return name


def random_key() -> str:
    """A random 16-digit key the leak scan looks for in every output of the run."""
    key = os.urandom(8).hex()
    leak_scan.add_secret(key, "test_cli_secrets: a key given where it must not be echoed")
    return key


def invoke(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = run(list(args), input=stdin, env=env)
    assert "error[internal_error]" not in result.stderr, result.stderr
    return result.exit_code, result.stdout, result.stderr


def token_error(args: list[str], code: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    """``mita token``: ``error[code]: message`` on standard error, status 1, nothing on standard output."""
    status, out, err = invoke(*args, stdin=stdin, env=env)
    assert status == 1, (out, err)
    assert out == ""
    assert err.startswith(f"error[{code}]: ") and err.count("\n") == 1, err
    return err


def meter_error(args: list[str], code: str, stdin: str | None = None, env: dict[str, str] | None = None) -> str:
    """``mita meter``: ``{"error": {"code", "message"}}`` on standard output, the error line on stderr, status 1."""
    status, out, err = invoke(*args, stdin=stdin, env=env)
    assert status == 1, (out, err)
    error = json.loads(out)["error"]
    assert error["code"] == code, error
    assert err == f"error[{code}]: {error['message']}\n"
    return str(error["message"])


# ---------------------------------------------------------------- (a) the key is not in the process list


def cmdline(proc: subprocess.Popen[Any]) -> bytes:
    """The running process's command line, as ``ps`` shows it to every local user.

    Empty for a moment while ``execve`` finishes (``Popen`` returns once the new program replaced the old, a
    little before the kernel records its arguments), and for good once the process has ended.
    """
    deadline = time.monotonic() + 30
    while not (data := Path(f"/proc/{proc.pid}/cmdline").read_bytes()):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate(timeout=60)
            pytest.fail(f"the command ended (status {proc.returncode}) before its command line was read: {err!r}")
        time.sleep(0.005)
    return data


def assert_key_not_in(blob: bytes, key: str) -> None:
    assert key.lower().encode() not in blob.lower()


needs_proc = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="needs Linux /proc")


@needs_proc
@pytest.mark.parametrize(
    ("args", "option", "key", "expect"),
    [
        (DERIVE, "--vending-key-file", VK, DECODER),
        (["meter", "new", "kitchen.json", "--drn", DRN, "--ea", "07", "--sgc", SGC], "--decoder-key-file", DECODER,
         '"drn": "47500150231"'),
        (["token", "credit", "--ea", "7", "--amount", "100", *AT], "--key-file", METER_KEY, None),
    ],
    ids=["derive-key", "meter-new", "credit"],
)  # fmt: skip
def test_key_from_a_fifo_is_not_on_the_running_commands_command_line(
    workdir: Path, args: list[str], option: str, key: str, expect: str | None
) -> None:
    fifo = workdir / "key.fifo"
    os.mkfifo(fifo, 0o600)
    proc = subprocess.Popen(
        [*CLI, *args, option, str(fifo)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        started = cmdline(proc)
        with open(fifo, "w", encoding="utf-8") as f:  # returns once the command has opened the FIFO to read its key
            waiting = cmdline(proc)  # ... and it cannot go on before the key is written: it is running
            assert proc.poll() is None
            f.write(key + "\n")
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err.decode()
    for line in (started, waiting):
        assert option.encode() in line and str(fifo).encode() in line
        assert_key_not_in(line, key)
    assert_key_not_in(out + err, VK)
    if expect is not None:
        assert expect in out.decode()
    else:
        assert sts.decode(out.decode().strip(), sts.EA.STA, int(key, 16)).fields()["amount"] == 100


@needs_proc
@pytest.mark.parametrize("ea", ["07", "11"])
def test_key_from_standard_input_is_not_on_the_running_commands_command_line(ea: str) -> None:
    key = DECODER if ea == "07" else DECODER * 2
    args = ["meter", "new", f"meter-{ea}.json", "--drn", DRN, "--ea", ea, "--sgc", SGC, "--decoder-key-file", "-"]
    proc = subprocess.Popen(
        [*CLI, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = cmdline(proc)  # the key is not written yet: the command is still running
        assert proc.poll() is None
        out, err = proc.communicate(key + "\n", timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert b"--decoder-key-file\0-" in line
    assert_key_not_in(line, key)
    assert json.loads(out)["drn"] == DRN


@needs_proc
def test_vending_key_from_standard_input_is_not_on_the_command_line() -> None:
    proc = subprocess.Popen(
        [*CLI, *DERIVE, "--vending-key-file", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = cmdline(proc)
        assert proc.poll() is None
        out, err = proc.communicate(VK + "\n", timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert_key_not_in(line, VK)
    assert out.strip() == DECODER


# ---------------------------------------------------------------- (b) the old options are refused


OLD_OPTIONS = [
    pytest.param("token", ["token", "derive-key", "--drn", DRN, "--sgc", SGC], "vending-key", id="derive-key"),
    pytest.param("token", ["token", "credit", "--ea", "7", "--amount", "1", *AT], "key", id="credit"),
    pytest.param("token", ["token", "management", "clear_tamper", "--ea", "7", *AT], "key", id="management"),
    pytest.param("token", ["token", "key-change", "--ea", "7", "--krn", "2"], "key", id="key-change-key"),
    pytest.param("token", ["token", "key-change", "--ea", "7", "--krn", "2"], "new-key", id="key-change-new-key"),
    pytest.param("token", ["token", "decode", "23716100501183194197", "--ea", "7"], "key", id="decode"),
    pytest.param("meter", ["meter", "new", "m.json", "--drn", DRN, "--ea", "07", "--sgc", SGC], "decoder-key",
                 id="meter-new"),
]  # fmt: skip


@pytest.mark.parametrize("joined", [False, True], ids=["option-value", "option=value"])
@pytest.mark.parametrize(("family", "args", "name"), OLD_OPTIONS)
def test_a_key_on_the_command_line_is_refused_and_not_echoed(
    family: str, args: list[str], name: str, joined: bool
) -> None:
    value = random_key()
    given = [f"--{name}={value}"] if joined else [f"--{name}", value]
    status, out, err = invoke(*args, *given)
    assert status == 1
    assert value not in out.lower() and value not in err.lower()
    assert err.startswith("error[secret_on_command_line]: ")
    if family == "token":
        assert out == ""
        message = err
    else:
        error = json.loads(out)["error"]
        assert error["code"] == "secret_on_command_line"
        message = error["message"]
    assert f"--{name} is refused: {REASON}" in message
    assert f"--{name}-file FILE, --{name}-file - (standard input) or --{name}-env NAME" in message
    assert not Path("m.json").exists()


@pytest.mark.parametrize(("family", "args", "name"), OLD_OPTIONS)
def test_a_key_on_the_command_line_is_refused_before_anything_else(family: str, args: list[str], name: str) -> None:
    """Even with a key file as well, and other options missing: the refusal is the answer, not a usage error."""
    value = random_key()
    key_file("k.hex", VK if name == "vending-key" else METER_KEY)
    first = [args[0], args[1], *(["clear_tamper"] if args[1] == "management" else [])]
    first += ["m.json"] if args[0] == "meter" else []
    given = [f"--{name}", value, f"--{name}-file", "k.hex"]
    if family == "token":
        assert REASON in token_error([*first, *given], "secret_on_command_line")
    else:
        assert REASON in meter_error([*first, *given], "secret_on_command_line")


@pytest.mark.parametrize(
    ("args", "names"),
    [(["token", "derive-key"], ["vending-key"]), (["token", "credit"], ["key"]), (["token", "management"], ["key"]),
     (["token", "key-change"], ["key", "new-key"]), (["token", "decode"], ["key"]),
     (["meter", "new"], ["decoder-key"])],
    ids=lambda a: "-".join(a),
)  # fmt: skip
def test_help_lists_the_sources_not_the_old_options(args: list[str], names: list[str]) -> None:
    status, out, _ = invoke(*args, "--help", env={"COLUMNS": "200"})
    assert status == 0
    words = set(out.replace("│", " ").split())
    assert not words & {"--key", "--vending-key", "--new-key", "--decoder-key"}
    assert words >= {f"--{name}-{kind}" for name in names for kind in ("file", "env")}


# ---------------------------------------------------------------- (c) file, stdin and env say the same


def three_ways(args: list[str], option: str, key: str) -> list[tuple[int, str, str]]:
    """The command with its key from a file, from standard input and from an environment variable."""
    name = option.removesuffix("-file")
    return [
        invoke(*args, option, key_file("k.hex", f"  {key}\n")),
        invoke(*args, option, "-", stdin=f"{key}\n"),
        invoke(*args, f"{name}-env", "MITA_TEST_KEY", env={"MITA_TEST_KEY": key}),
    ]


@pytest.mark.parametrize(
    ("args", "option", "key"),
    [
        (DERIVE, "--vending-key-file", VK),
        ([*DERIVE, "--dkga", "4", "--ea", "11"], "--vending-key-file", "ab" * 20),
        (["token", "credit", "--ea", "7", "--amount", "256", *AT], "--key-file", METER_KEY),
        (["token", "credit", "--ea", "11", "--amount", "256", *AT], "--key-file", METER_KEY * 2),
        (["token", "management", "set_power_limit", "--ea", "7", "--value", "5000", *AT], "--key-file", METER_KEY),
        (["token", "key-change", "--ea", "7", "--krn", "2", "--new-key-file", "new.hex"], "--key-file", METER_KEY),
        (["token", "key-change", "--ea", "7", "--krn", "2", "--key-file", "old.hex"], "--new-key-file", NEW_KEY),
        (["token", "decode", "23716100501183194197", "--ea", "7"], "--key-file", METER_KEY),
    ],
    ids=["derive-key", "derive-key-dkga04", "credit", "credit-ea11", "management", "key-change-old",
         "key-change-new", "decode"],
)  # fmt: skip
def test_file_stdin_and_env_give_the_same_output(
    monkeypatch: pytest.MonkeyPatch, args: list[str], option: str, key: str
) -> None:
    monkeypatch.setattr(token_ops, "_rnd", lambda req: 5)  # the random nibble of credit and management tokens
    key_file("new.hex", NEW_KEY)
    key_file("old.hex", METER_KEY)
    outputs = three_ways(args, option, key)
    for status, out, err in outputs:
        assert status == 0, err
        assert out.strip()
        assert key not in out + err
    assert outputs[0] == outputs[1] == outputs[2]


def test_derive_key_prints_what_the_batch_interface_answers() -> None:
    status, out, _ = invoke(*DERIVE, "--vending-key-file", key_file("vk.hex", VK))
    answer = token_ops.handle({"op": "derive_key", "dkga": 2, "vending_key": VK, "drn": DRN, "kt": 2, "sgc": SGC,
                               "ti": 1, "krn": 1})  # fmt: skip
    assert status == 0 and out.strip() == answer["decoder_key"] == DECODER


def test_a_credit_token_decodes_under_the_key_read() -> None:
    status, out, _ = invoke("token", "credit", "--ea", "7", "--amount", "256", *AT, "--key-file", "-",
                            stdin=METER_KEY.upper() + "\r\n")  # fmt: skip
    assert status == 0
    assert sts.decode(out.strip(), sts.EA.STA, int(METER_KEY, 16)).fields()["amount"] == 256


def test_decode_needs_no_key_for_class_1() -> None:
    test_token = invoke("token", "test")[1].strip()
    status, out, _ = invoke("token", "decode", test_token)
    assert status == 0 and "control" in out


def test_meter_new_from_file_stdin_and_env_makes_the_same_meter() -> None:
    statuses = []
    for i, source in enumerate(("file", "stdin", "env")):
        args = ["meter", "new", f"m{i}.json", "--drn", DRN, "--ea", "07", "--sgc", SGC, "--profile", "legacy-ea07"]
        if source == "file":
            status, out, err = invoke(*args, "--decoder-key-file", key_file("dk.hex", DECODER + "\n"))
        elif source == "stdin":
            status, out, err = invoke(*args, "--decoder-key-file", "-", stdin=DECODER + "\n")
        else:
            status, out, err = invoke(*args, "--decoder-key-env", "DK", env={"DK": DECODER})
        assert status == 0, out + err
        assert DECODER not in out + err
        statuses.append(json.loads(out))
    token = invoke("token", "credit", "--ea", "7", "--amount", "100", *AT, "--key-file", "dk.hex")[1].strip()
    for i in range(3):  # each meter holds the key that was read
        entered = json.loads(invoke("meter", "enter", f"m{i}.json", token, "--at", "2026-11-25T14:01")[1])
        assert entered["result"] == "accept"
    assert statuses[0] == statuses[1] == statuses[2]


# ---------------------------------------------------------------- (d) errors


TOKEN_CREDIT = ["token", "credit", "--ea", "7", "--amount", "1", *AT]
METER_NEW = ["meter", "new", "m.json", "--drn", DRN, "--ea", "07", "--sgc", SGC]


@pytest.mark.parametrize("family", ["token", "meter"])
@pytest.mark.parametrize(
    ("content", "code", "says"),
    [
        (None, "secret_unreadable", "cannot read it (No such file or directory)"),
        ("", "secret_empty", "is empty"),
        (" \n\n", "secret_empty", "is empty"),
        ("ghijklmnopqrstuv\n", "invalid_key", "hexadecimal digits only"),
        ("0x" + METER_KEY, "invalid_key", "hexadecimal digits only"),
        (METER_KEY[:-1], "invalid_key", "must be 16 hex digits (got 15)"),
        (METER_KEY * 2, "invalid_key", "must be 16 hex digits (got 32)"),
        (f"{METER_KEY}\n{NEW_KEY}\n", "invalid_key", "one key, hex, on one line"),
        (f"{METER_KEY} {NEW_KEY}", "invalid_key", "one key, hex, on one line"),
    ],
    ids=["missing", "empty", "blank", "not-hex", "0x", "short", "long", "two-lines", "two-words"],
)
def test_a_bad_key_file_is_a_clear_error_without_the_key(
    family: str, content: str | None, code: str, says: str
) -> None:
    if content is not None:
        key_file("k.hex", content)
    if family == "token":
        message = token_error([*TOKEN_CREDIT, "--key-file", "k.hex"], code)
        option = "--key-file"
    else:
        message = meter_error([*METER_NEW, "--decoder-key-file", "k.hex"], code)
        option = "--decoder-key-file"
    assert message.startswith(f"error[{code}]: {option} 'k.hex'" if family == "token" else f"{option} 'k.hex'")
    assert says in message
    for word in (content or "").split():
        assert word.lower() not in message.lower().replace("'k.hex'", "")
    assert not Path("m.json").exists()


@pytest.mark.parametrize(
    ("args", "stdin", "env", "code", "says"),
    [
        ([], None, None, "secret_missing", "give the meter's decoder key with --key-file FILE"),
        (["--key-env", "MITA_NO_SUCH_VARIABLE"], None, None, "secret_missing", "no such environment variable"),
        (["--key-env", "K"], None, {"K": "  "}, "secret_empty", "is empty"),
        (["--key-env", "K"], None, {"K": "xyz"}, "invalid_key", "hexadecimal digits only"),
        (["--key-file", "-"], "", None, "secret_empty", "standard input) is empty"),
        (["--key-file", "-"], "\n", None, "secret_empty", "standard input) is empty"),
        (["--key-file", "-"], "nothex\n", None, "invalid_key", "hexadecimal digits only"),
        (["--key-file", "-", "--key-env", "K"], METER_KEY, {"K": METER_KEY}, "secret_conflict",
         "--key-file or --key-env, not both"),
        (["--key-file", "."], None, None, "secret_unreadable", "cannot read it (Is a directory)"),
    ],
    ids=["no-source", "env-unset", "env-blank", "env-not-hex", "stdin-empty", "stdin-blank", "stdin-not-hex",
         "two-sources", "directory"],
)  # fmt: skip
def test_source_errors(args: list[str], stdin: str | None, env: dict[str, str] | None, code: str, says: str) -> None:
    message = token_error([*TOKEN_CREDIT, *args], code, stdin=stdin, env=env)  # type: ignore[arg-type]
    assert says in message
    assert METER_KEY not in message


def test_two_keys_from_standard_input_are_refused() -> None:
    args = ["token", "key-change", "--ea", "7", "--krn", "2", "--key-file", "-", "--new-key-file", "-"]
    message = token_error(args, "secret_conflict", stdin=f"{METER_KEY}\n{NEW_KEY}\n")
    assert "--key-file and --new-key-file both read standard input" in message
    assert METER_KEY not in message and NEW_KEY not in message


def test_one_key_from_standard_input_and_the_other_from_a_file_is_fine() -> None:
    key_file("new.hex", NEW_KEY)
    status, out, err = invoke("token", "key-change", "--ea", "7", "--krn", "2", "--key-file", "-",
                              "--new-key-file", "new.hex", stdin=METER_KEY + "\n")  # fmt: skip
    assert status == 0, err
    assert len(out.split()) == 2


def test_a_key_given_where_a_file_name_goes_is_not_echoed() -> None:
    """``--key-file <the key>`` by mistake: the path is not shown in the error, since it is a key."""
    value = random_key()
    message = token_error([*TOKEN_CREDIT, "--key-file", value], "secret_unreadable")
    assert value not in message.lower() and "looks like a key" in message
    message = meter_error([*METER_NEW, "--decoder-key-env", value.upper()], "secret_missing")
    assert value not in message.lower() and "looks like a key" in message


def test_vending_key_length_follows_the_dkga() -> None:
    key_file("vk.hex", VK)
    message = token_error([*DERIVE, "--dkga", "4", "--vending-key-file", "vk.hex"], "invalid_key")
    assert "the vending key must be 40 hex digits (got 16)" in message


def test_an_unknown_management_kind_is_a_usage_error_listing_the_kinds() -> None:
    status, out, err = invoke("token", "management", "nope", "--ea", "7")
    assert status == 2 and out == ""
    assert err.startswith("error[usage]: mita token management: argument KIND: invalid choice: 'nope'")
    assert "set_power_limit, clear_credit, set_tariff_rate, clear_tamper" in err


def test_batch_still_takes_its_keys_in_the_json_lines() -> None:
    line = json.dumps({"op": "derive_key", "dkga": 2, "vending_key": VK, "drn": DRN, "kt": 2, "sgc": SGC, "ti": 1,
                       "krn": 1})  # fmt: skip
    status, out, _ = invoke("token", "batch", stdin=line + "\n")
    assert status == 0 and json.loads(out) == {"decoder_key": DECODER}


# ---------------------------------------------------------------- the module itself


def test_read_key_api() -> None:
    source = secrets.KeySource("key", env="K")
    assert secrets.read_key(source, what="k", environ={"K": f" {METER_KEY.upper()}\t\n"}) == METER_KEY
    assert secrets.read_key(secrets.KeySource("key"), what="k", required=False) is None
    stdin = io.StringIO(f"{METER_KEY}\nsomething else\n")
    assert secrets.read_key(secrets.KeySource("key", file="-"), what="k", digits=(16,), stdin=stdin) == METER_KEY
    assert stdin.read() == "something else\n"  # one line only
    with pytest.raises(secrets.SecretError) as exc:
        secrets.read_key(secrets.KeySource("key", file="-"), what="k", stdin=io.StringIO("f" * 5000))
    assert exc.value.code == "invalid_key" and "f" * 16 not in exc.value.message
    assert isinstance(exc.value, sts.StsError) and exc.value.as_dict()["code"] == "invalid_key"
    assert secrets.decoder_key_digits(11) == (32,) and secrets.decoder_key_digits("nope") == (16, 32)


def test_a_key_file_too_big_is_refused(workdir: Path) -> None:
    key_file("big.hex", "ab" * 4000)
    with pytest.raises(secrets.SecretError) as exc:
        secrets.read_key(secrets.KeySource("key", file="big.hex"), what="k")
    assert exc.value.code == "invalid_key" and "too big" in exc.value.message
