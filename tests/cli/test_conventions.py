"""One convention for every ``mita`` command: the exit-code table, the error line, ``--help``, choices, ``--json``.

The exit codes come from ``mita.cli.exits`` (one table); every error is one line ``error[<code>]: <message>`` on
standard error; every command's ``--help`` works and lists its choices; the old spellings of options still work,
with a note; ``--json`` answers are what ``mita token batch`` answers.
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli_run import Result, run
from mita import sts
from mita.cli import exits, token_ops
from mita.cli.main import COMMANDS, build
from mita.meter.model import ACCEPTED
from mita.meter.model import Result as MeterResult

KEY = "e653341f9d5bf36f"  # the compliance suites' test meter 600727 00000000000 (DKGA02 of the STS 531 key)
OTHER_KEY = "0abc12def3456789"
METER = ["--drn", "00000000000", "--iin", "600727", "--sgc", "123456", "--ea", "07", "--decoder-key-file", "k.hex"]
ERROR_LINE = re.compile(r"error\[[a-z_]+\]: \S[^\n]*\n")


@pytest.fixture(autouse=True)
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("MITA_MASTER_KEY", "22" * 32)
    monkeypatch.delenv("MITA_DATABASE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "k.hex").write_text(KEY + "\n")
    yield tmp_path


def credit(tid: int, amount: int = 1, key: str = KEY) -> str:
    return sts.encode(sts.TransferCredit(tid, amount, rnd=3), sts.EA.STA, int(key, 16))


def enter(state: str, token: str, at: str = "2026-11-25T14:00") -> Result:
    result = run(["meter", "enter", state, token, "--at", at])
    assert result.stderr == "", result.stderr  # a rejection is an answer, not an error
    return result


def new_meter(name: str, *options: str) -> None:
    assert run(["meter", "new", name, *METER, *options]).exit_code == 0


# ---------------------------------------------------------------------- the exit-code table


def test_every_meter_result_has_its_exit_code() -> None:
    assert set(exits.METER_RESULTS) == {r.value for r in MeterResult}
    for result in MeterResult:
        code = exits.for_meter_result(result.value)
        assert (code == exits.OK) == (result in ACCEPTED), result
        assert code in {row[0] for row in exits.TABLE}
    assert len({row[0] for row in exits.TABLE}) == len(exits.TABLE)  # one meaning per code


def test_meter_enter_exits_with_the_class_of_rejection() -> None:
    new_meter("legacy.json", "--profile", "legacy-ea07")  # no keypad lockout; 20 TIDs; registers up to 999,999
    answers = {}
    for tid in range(100, 120):
        answers.setdefault("accept", enter("legacy.json", credit(tid)))
    answers["used"] = enter("legacy.json", credit(100))
    answers["old"] = enter("legacy.json", credit(50))
    answers["crc_error"] = enter("legacy.json", credit(200, key=OTHER_KEY))
    answers["format_error"] = enter("legacy.json", "12345")
    answers["overflow"] = enter("legacy.json", credit(300, 1_000_000))
    new_meter("expiring.json", "--profile", "legacy-ea07", "--ken", "0")
    answers["key_expired"] = enter("expiring.json", credit(1 << 16))
    new_meter("locking.json", "--profile", "edition2-ea11")  # locks after 3 rejects in a row
    for _ in range(3):
        enter("locking.json", "12345")
    answers["locked_out"] = enter("locking.json", credit(10))
    expected = {"accept": 0, "used": 12, "old": 11, "crc_error": 10, "format_error": 10, "overflow": 14,
                "key_expired": 13, "locked_out": 15}  # fmt: skip
    for result, answer in answers.items():
        assert json.loads(answer.stdout)["result"] == result, answer.stdout  # the JSON answer either way
        assert answer.exit_code == expected[result], result


def test_the_exit_codes_are_documented_in_one_place() -> None:
    table = run(["help", "exit-codes"])
    assert table.exit_code == 0 and table.stdout.strip() == exits.describe().strip()
    for code, name, _ in exits.TABLE:
        assert re.search(rf"^\s+{code}\s+{name}\b", table.stdout, re.M)
    assert exits.describe() in run(["--help"]).stdout


# ---------------------------------------------------------------------- one error line, every group


def one_error_line(result: Result, code: str, exit_code: int) -> str:
    assert result.exit_code == exit_code, result
    assert ERROR_LINE.fullmatch(result.stderr), result.stderr
    assert result.stderr.startswith(f"error[{code}]: "), result.stderr
    assert "Traceback" not in result.output
    return result.stderr


@pytest.mark.parametrize(
    ("argv", "code", "exit_code"),
    [
        (["token", "credit", "--ea", "07", "--amount", "1"], "secret_missing", 1),
        (["token", "decode", "1234x"], "format_error", 1),
        (["token", "tid", "--at", "yesterday"], "format_error", 1),
        (["keys", "list", "--database-url", "sqlite:///missing.db"], "database_missing", 3),
        (["keys", "campaign", "status", "1", "--database-url", "sqlite:///missing.db"], "database_missing", 3),
        (["db", "check", "--database-url", "sqlite:///missing.db"], "database_missing", 3),
        (["admin", "create-key", "--role", "admin", "--database-url", "sqlite:///missing.db"], "database_missing", 3),
        (["worker", "--status", "--database-url", "sqlite:///missing.db"], "database_missing", 3),
        (["serve", "--database-url", "postgresql://u:pw@127.0.0.1/x"], "secret_on_command_line", 1),
        (["demo", "--no-serve", "--database-url", "postgresql://u:pw@127.0.0.1/x"], "secret_on_command_line", 1),
        (["token", "credit", "--ea", "8"], "usage", 2),
        (["keys", "generate", "--sgc", "123456"], "usage", 2),
        (["help", "nothing"], "usage", 2),
        (["no-such-command"], "usage", 2),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else str(v),
)
def test_every_group_reports_an_error_in_one_line(argv: list[str], code: str, exit_code: int) -> None:
    result = run(argv)
    one_error_line(result, code, exit_code)
    if result.stdout:  # a command whose answer is JSON answers its error in JSON too
        assert json.loads(result.stdout)["error"]["code"] == code and code != "usage"
    assert not Path("missing.db").exists()  # only mita db upgrade and mita demo make a database


def test_meter_errors_are_json_on_stdout_and_one_line_on_stderr() -> None:
    result = run(["meter", "show", "nowhere.json"])
    message = one_error_line(result, "no_state", 1).split(": ", 1)[1].strip()
    assert json.loads(result.stdout) == {"error": {"code": "no_state", "message": message}}


def test_json_commands_answer_an_error_in_json_too() -> None:
    result = run(["token", "decode", "1234x", "--json"])
    one_error_line(result, "format_error", 1)
    assert json.loads(result.stdout)["error"]["code"] == "format_error"


def test_a_missing_database_names_the_url() -> None:
    result = run(["keys", "list", "--database-url", "sqlite:///forgotten.db"])
    assert "forgotten.db" in one_error_line(result, "database_missing", 3)


# ---------------------------------------------------------------------- --help, choices, old spellings


def commands() -> list[list[str]]:
    """Every command and group, as argv prefixes, from the parser itself (so a new command is covered)."""
    out: list[list[str]] = [[]]

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    out.append([*prefix, name])
                    walk(sub, [*prefix, name])

    walk(build([], everything=True), [])
    return out


def test_every_command_is_defined() -> None:
    names = {tuple(c) for c in commands()}
    assert {(name,) for name in COMMANDS} <= names
    for leaf in [("token", "credit"), ("meter", "enter"), ("keys", "campaign", "mark"), ("db", "check")]:
        assert leaf in names


@pytest.mark.parametrize("argv", commands(), ids=lambda argv: " ".join(argv) or "mita")
def test_help_of_every_command(argv: list[str]) -> None:
    result = run([*argv, "--help"], env={"COLUMNS": "120"})
    assert result.exit_code == 0 and result.stderr == ""
    assert result.stdout.startswith(f"usage: {' '.join(['mita', *argv])}")


@pytest.mark.parametrize(
    ("argv", "listed"),
    [
        (["token", "credit"], ["{07,09,11}", "{1993,2014,2035}"]),
        (["token", "management"], ["set_power_limit, clear_credit, set_tariff_rate, clear_tamper"]),
        (["token", "derive-key"], ["{07,09,11}", "{2,4}"]),
        (["meter", "new"], ["{07,09,11}", "legacy-ea07", "edition2-ea11"]),
        (["meter", "tamper"], ["{cover,magnetic,bypass}"]),
        (["keys", "generate"], ["{software,pkcs11}", "{2,4}"]),
        (["keys", "activate"], ["{07,09,11}"]),
        (["keys", "campaign", "plan"], ["{attach,csv,sms}", "{07,09,11}"]),
        (["keys", "campaign", "mark"], ["{delivered,confirmed}"]),
        (["admin", "create-key"], ["{admin,operator,vendor}"]),
        (["serve"], ["{text,json}"]),
    ],
)
def test_choices_are_listed_in_help(argv: list[str], listed: list[str]) -> None:
    out = run([*argv, "--help"], env={"COLUMNS": "200"}).stdout
    flat = " ".join(out.split())
    for choice in listed:
        assert choice in flat, (choice, out)
    assert "max-power" not in out and "clear-tamper" not in out  # the old spellings are not offered


def test_choices_complete_in_the_shell() -> None:
    parser = build(["token", "credit"])
    credit_parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["token"]
    sub = next(a for a in credit_parser._actions if isinstance(a, argparse._SubParsersAction)).choices["credit"]
    ea = next(a for a in sub._actions if "--ea" in a.option_strings)
    assert ea.completer() == ["07", "09", "11"]  # type: ignore[attr-defined]
    base = next(a for a in sub._actions if "--base-date" in a.option_strings)
    assert list(base.choices or ()) == [1993, 2014, 2035]


@pytest.mark.parametrize("ea", ["07", "7"])
def test_ea_takes_both_spellings(ea: str) -> None:
    result = run(["token", "credit", "--ea", ea, "--amount", "5", "--tid", "9", "--key-file", "k.hex"])
    assert result.exit_code == 0, result.stderr
    assert sts.decode(result.stdout.strip(), sts.EA.STA, int(KEY, 16)).fields()["amount"] == 5


@pytest.mark.parametrize(
    ("old", "new"),
    [("max-power", "set_power_limit"), ("clear-tamper", "clear_tamper"), ("clear-credit", "clear_credit"),
     ("tariff-rate", "set_tariff_rate"), ("phase-unbalance", "set_phase_unbalance_limit"),
     ("water-factor", "set_water_meter_factor")],
)  # fmt: skip
def test_old_management_kinds_still_work_with_a_note(monkeypatch: pytest.MonkeyPatch, old: str, new: str) -> None:
    monkeypatch.setattr(token_ops, "_rnd", lambda req: 5)
    common = ["--ea", "07", "--key-file", "k.hex", "--tid", "1000", "--value", "7"]
    then = run(["token", "management", old, *common])
    now = run(["token", "management", new, *common])
    assert then.exit_code == now.exit_code == 0 and then.stdout == now.stdout
    assert then.stderr == f"note: {old!r} is deprecated; use {new!r}\n" and now.stderr == ""


def test_the_management_kinds_are_the_apis() -> None:
    from mita.api.models import EngineeringKind
    from mita.cli.token import MANAGEMENT

    api = set(EngineeringKind.__args__) - {"test"}  # type: ignore[attr-defined]
    assert api <= set(MANAGEMENT)


# ---------------------------------------------------------------------- --json


def test_token_commands_answer_json_as_the_batch_does(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(token_ops, "_rnd", lambda req: 5)
    credit_json = run(
        ["token", "credit", "--ea", "07", "--amount", "9", "--tid", "77", "--key-file", "k.hex", "--json"]
    )
    batch = token_ops.handle({"op": "encode", "ea": 7, "decoder_key": KEY, "class": 0, "subclass": 0, "tid": 77,
                              "amount": 9})  # fmt: skip
    assert json.loads(credit_json.stdout) == batch
    token = batch["token"]
    decoded = run(["token", "decode", token, "--key-file", "k.hex", "--json"])
    assert json.loads(decoded.stdout) == token_ops.handle({"op": "decode", "ea": 7, "decoder_key": KEY, "token": token})
    tid = run(["token", "tid", "--at", "2026-11-25T14:00", "--json"])
    assert json.loads(tid.stdout) == {"tid": sts.tid_from_datetime(sts.tid.parse_issue_time("2026-11-25T14:00"), 2014)}
    Path("new.hex").write_text("0123456789abcdef")
    change = run(["token", "key-change", "--ea", "07", "--krn", "2", "--key-file", "k.hex", "--new-key-file",
                  "new.hex", "--json"])  # fmt: skip
    assert [len(t) for t in json.loads(change.stdout)["tokens"]] == [20, 20]
    assert set(json.loads(run(["token", "test", "--json"]).stdout)) == {"token"}
    vk = Path("vk.hex")
    vk.write_text("abababababababab")
    derived = run(["token", "derive-key", "--drn", "47500150231", "--sgc", "123456", "--vending-key-file", str(vk),
                   "--json"])  # fmt: skip
    assert json.loads(derived.stdout) == {"decoder_key": "141003ec71fa1465"}


def test_meter_consumption_carries_its_unit() -> None:
    new_meter("kitchen.json", "--profile", "legacy-ea07")
    enter("kitchen.json", credit(10, 100))
    ran = json.loads(run(["meter", "run", "kitchen.json", "--seconds", "3600", "--load-w", "2000"]).stdout)
    assert ran["consumed"] == 20 and ran["consumed_wh"] == 2000 and ran["consumed_kwh"] == 2  # 20 x 0.1 kWh
    shown = json.loads(run(["meter", "show", "kitchen.json", "--json"]).stdout)
    assert shown["consumed"] == 2000 * 3600 and shown["consumed_kwh"] == 2  # W·s, as before; and kWh
    new_meter("garden.json", "--profile", "water-valve")
    enter("garden.json", sts.encode(sts.TransferCredit(10, 100, rnd=1, kind=sts.CreditKind.WATER), sts.EA.STA,
                                    int(KEY, 16)))  # fmt: skip
    ran = json.loads(run(["meter", "run", "garden.json", "--seconds", "3600", "--load-w", "1000"]).stdout)
    assert ran["consumed"] == 10 and ran["consumed_l"] == 1000 and ran["consumed_m3"] == 1  # 10 x 0.1 m³
    assert "consumed_kwh" not in ran and "consumed_m3" in json.loads(run(["meter", "show", "garden.json"]).stdout)


def test_a_token_with_a_letter_says_which_character() -> None:
    new_meter("m.json", "--profile", "legacy-ea07")
    answer = json.loads(enter("m.json", "237161x0501183194197").stdout)
    assert answer["result"] == "format_error" and "character 7 is 'x'" in answer["detail"]
    result = run(["token", "decode", "237161x0501183194197"])
    assert "a token is 20 digits; character 7 is 'x'" in one_error_line(result, "format_error", 1)


@pytest.mark.parametrize(
    ("line", "offered"),
    [
        ("mita token credit --ea ", ["07", "09", "11"]),
        ("mita to", ["token "]),
        ("mita keys generate --keystore ", ["software", "pkcs11"]),
        ("mita serve --log-format ", ["text", "json"]),
    ],
)
def test_the_shell_completes_commands_and_choices(tmp_path: Path, line: str, offered: list[str]) -> None:
    """What bash gets through argcomplete (``eval "$(register-python-argcomplete mita)"``)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "completions"
    env = {**os.environ, "_ARGCOMPLETE": "1", "COMP_LINE": line, "COMP_POINT": str(len(line)),
           "_ARGCOMPLETE_STDOUT_FILENAME": str(out)}  # fmt: skip
    subprocess.run([sys.executable, "-m", "mita.cli.main"], env=env, check=True, timeout=60, capture_output=True)
    assert out.read_text().split("\v") == offered
