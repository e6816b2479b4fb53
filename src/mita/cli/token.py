"""``mita token``: issue and decode STS tokens from the terminal or a script.

The human commands print with Rich; ``mita token batch`` is the machine
interface (JSON Lines in, one JSON line out per line, in order, never stopping
on a bad line). Both go through :mod:`mita.cli.token_ops`, so what a person
sees and what a script gets cannot disagree.

Keys never come as option values (anyone on the machine could read them in ``ps``): each key has a
``--NAME-file FILE`` option (``-``: standard input) and a ``--NAME-env VAR`` one, see :mod:`mita.cli.secrets`.
The old ``--key``, ``--vending-key`` and ``--new-key`` are refused with that reason. ``mita token batch`` takes
its keys inside the JSON lines on standard input, as before.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Collection
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from mita import sts
from mita.sts.tid import parse_issue_time

from . import secrets, token_ops

token_app = typer.Typer(no_args_is_help=True, help="Issue and decode STS tokens.")
console = Console()
err_console = Console(stderr=True, soft_wrap=True)


def _fail(exc: sts.StsError) -> NoReturn:
    """``error [code] message`` on standard error, exit status 2."""
    err_console.print(f"[bold red]error[/] {escape(f'[{exc.code}]')} {escape(exc.message)}", highlight=False)
    raise typer.Exit(2)


def _hidden_key_option(name: str) -> Any:
    return secrets.refused_option(name, _fail)


def _key(source: secrets.KeySource, what: str, digits: Collection[int], required: bool = True) -> str | None:
    try:
        return secrets.read_key(source, what=what, digits=digits, required=required)
    except secrets.SecretError as exc:
        _fail(exc)


EaOpt = Annotated[int, typer.Option("--ea", help="Encryption algorithm: 7 (STA), 9 (DES) or 11 (MISTY1).")]
KeyFileOpt = Annotated[str | None, secrets.file_option("key", "the meter's current decoder key, hex (16 or 32 digits)")]
KeyEnvOpt = Annotated[str | None, secrets.env_option("key", "the decoder key")]
OldKeyOpt = Annotated[str | None, _hidden_key_option("key")]
TidOpt = Annotated[int | None, typer.Option("--tid", help="Token identifier; or give --at.")]
AtOpt = Annotated[str | None, typer.Option("--at", help="Issue time YYYY-MM-DDTHH:MM; the TID is computed.")]
BaseOpt = Annotated[
    int | None,
    typer.Option("--base-date", help="1993, 2014 or 2035; default: the one in use at the issue time (2014 today)."),
]


def _run(req: dict[str, Any]) -> dict[str, Any]:
    """Answer a request or exit with its error printed."""
    answer = token_ops.handle(req)
    if "error" in answer:
        err = answer["error"]
        _fail(token_ops.RequestError(str(err["code"]), str(err["message"])))
    return answer


def _decoder_key(ea: int, key_file: str | None, key_env: str | None, required: bool = True) -> str | None:
    source = secrets.KeySource("key", key_file, key_env)
    return _key(source, "the meter's decoder key", secrets.decoder_key_digits(ea), required)


def _base(base_date: int | None, at: str | None = None) -> int:
    """The base date asked for, or the one in use at ``at`` (now, when there is no issue time)."""
    if base_date is not None:
        return base_date
    try:
        issued = parse_issue_time(at) if at else dt.datetime.now()
    except sts.StsError as exc:
        _fail(exc)
    return int(sts.tid.base_date_in_use(issued))


def _tid(tid: int | None, at: str | None, base_date: int | None) -> int:
    if tid is not None:
        return tid
    if at is None:
        _fail(token_ops.RequestError("missing_field", "give --tid or --at"))
    return int(_run({"op": "tid", "issued": at, "base_date": _base(base_date, at)})["tid"])


def _show(title: str, fields: dict[str, Any]) -> None:
    table = Table(title=title, show_header=False)
    for name, value in fields.items():
        table.add_row(name, str(value))
    console.print(table)


@token_app.command("derive-key")
def derive_key(
    drn: Annotated[str, typer.Option(help="Meter number with its check digit (11 or 13 digits).")],
    sgc: Annotated[str, typer.Option(help="Supply group code, 6 digits.")],
    vending_key_file: Annotated[
        str | None, secrets.file_option("vending-key", "the vending key, hex (16 digits DKGA02, 40 DKGA04)")
    ] = None,
    vending_key_env: Annotated[str | None, secrets.env_option("vending-key", "the vending key")] = None,
    dkga: Annotated[int, typer.Option(help="2 or 4.")] = 2,
    kt: Annotated[int, typer.Option(help="Key type 0..3.")] = 2,
    ti: Annotated[int, typer.Option(help="Tariff index 0..99.")] = 1,
    krn: Annotated[int, typer.Option(help="Key revision number 1..9.")] = 1,
    base_date: BaseOpt = None,
    ea: EaOpt = 7,
    iin: Annotated[str | None, typer.Option(help="600727 or 0000; taken from the DRN length if left out.")] = None,
    vending_key: Annotated[str | None, _hidden_key_option("vending-key")] = None,
) -> None:
    """Derive a meter's decoder key from its supply group's vending key."""
    source = secrets.KeySource("vending-key", vending_key_file, vending_key_env)
    vk = _key(source, "the vending key", {2: (16,), 4: (40,)}.get(dkga, ()))
    req = {"op": "derive_key", "dkga": dkga, "vending_key": vk, "drn": drn, "kt": kt, "sgc": sgc}
    req |= {"ti": ti, "krn": krn, "base_date": _base(base_date), "ea": ea}
    if iin:
        req["iin"] = iin
    console.print(_run(req)["decoder_key"])


@token_app.command()
def credit(
    ea: EaOpt,
    amount: Annotated[int, typer.Option(help="Base units: 0.1 kWh, 0.1 m3, 0.1 min, or 1e-5 currency.")],
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = None,
    subclass: Annotated[int, typer.Option(help="0 electricity, 1 water, 2 gas, 3 time, 4..7 currency.")] = 0,
    tid: TidOpt = None,
    at: AtOpt = None,
    base_date: BaseOpt = None,
    key: OldKeyOpt = None,
) -> None:
    """Issue a credit token (class 0)."""
    decoder_key = _decoder_key(ea, key_file, key_env)
    req = {"op": "encode", "ea": ea, "decoder_key": decoder_key, "class": 0, "subclass": subclass}
    req |= {"tid": _tid(tid, at, base_date), "amount": amount}
    console.print(_run(req)["token"])


MANAGEMENT = {
    "max-power": (0, "mpl"),
    "clear-credit": (1, "register"),
    "tariff-rate": (2, "rate"),
    "clear-tamper": (5, "pad"),
    "phase-unbalance": (6, "mppul"),
    "water-factor": (7, "wm_factor"),
}


@token_app.command()
def management(
    kind: Annotated[str, typer.Argument(help=", ".join(MANAGEMENT))],
    ea: EaOpt,
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = None,
    value: Annotated[int, typer.Option(help="Watts for limits; register (65535 = all); raw 16-bit otherwise.")] = 0,
    tid: TidOpt = None,
    at: AtOpt = None,
    base_date: BaseOpt = None,
    key: OldKeyOpt = None,
) -> None:
    """Issue a management token (class 2)."""
    if kind not in MANAGEMENT:
        _fail(sts.FormatError(f"kind must be one of {', '.join(MANAGEMENT)}"))
    subclass, name = MANAGEMENT[kind]
    decoder_key = _decoder_key(ea, key_file, key_env)
    req = {"op": "encode", "ea": ea, "decoder_key": decoder_key, "class": 2, "subclass": subclass, name: value}
    req["tid"] = _tid(tid, at, base_date)
    console.print(_run(req)["token"])


@token_app.command()
def test(
    control: Annotated[int, typer.Option(help="Control bits: which test or display to run.")] = 1,
    mfr_code: Annotated[int, typer.Option(help="Manufacturer code (0 = any meter).")] = 0,
    wide: Annotated[bool, typer.Option(help="28-bit control with 4-digit manufacturer code.")] = False,
) -> None:
    """Issue an initiate-meter-test/display token (class 1, not encrypted)."""
    req = {"op": "encode", "ea": 7, "class": 1, "subclass": int(wide), "control": control, "mfr_code": mfr_code}
    console.print(_run(req)["token"])


@token_app.command("key-change")
def key_change(
    ea: EaOpt,
    krn: Annotated[int, typer.Option(help="New key revision number.")],
    key_file: KeyFileOpt = None,
    key_env: KeyEnvOpt = None,
    new_key_file: Annotated[
        str | None, secrets.file_option("new-key", "the new decoder key, hex (16 digits: 2 tokens; 32: 4 tokens)")
    ] = None,
    new_key_env: Annotated[str | None, secrets.env_option("new-key", "the new decoder key")] = None,
    kt: Annotated[int, typer.Option(help="New key type.")] = 2,
    ti: Annotated[int, typer.Option(help="New tariff index.")] = 1,
    ken: Annotated[int, typer.Option(help="New key expiry number (255 = no expiry).")] = 255,
    ro: Annotated[int, typer.Option(help="1 to clear the meter's TID store (base date change).")] = 0,
    sgc: Annotated[str | None, typer.Option(help="Supply group code (4-token sets).")] = None,
    key: OldKeyOpt = None,
    new_key: Annotated[str | None, _hidden_key_option("new-key")] = None,
) -> None:
    """Issue a key change token set, in entry order."""
    old_source = secrets.KeySource("key", key_file, key_env)
    new_source = secrets.KeySource("new-key", new_key_file, new_key_env)
    try:
        secrets.one_stdin(old_source, new_source)
    except secrets.SecretError as exc:
        _fail(exc)
    old = _key(old_source, "the meter's current decoder key", secrets.decoder_key_digits(ea))
    new = _key(new_source, "the new decoder key", (16, 32))
    req: dict[str, Any] = {"op": "key_change", "ea": ea, "decoder_key": old, "new_key": new}
    req |= {"ken": ken, "krn": krn, "kt": kt, "ti": ti, "ro": ro}
    if sgc:
        req["sgc"] = sgc
    for t in _run(req)["tokens"]:
        console.print(t)


@token_app.command()
def decode(
    token: Annotated[str, typer.Argument(help="The 20-digit token.")],
    ea: EaOpt = 7,
    key_file: Annotated[str | None, secrets.file_option("key", "the decoder key, hex (not needed for class 1)")] = None,
    key_env: KeyEnvOpt = None,
    key: OldKeyOpt = None,
) -> None:
    """Decode a token and print its fields, or why it does not decode."""
    req: dict[str, Any] = {"op": "decode", "ea": ea, "token": token}
    decoder_key = _decoder_key(ea, key_file, key_env, required=False)
    if decoder_key is not None:
        req["decoder_key"] = decoder_key
    _show(f"token {token}", _run(req))


@token_app.command()
def tid(at: Annotated[str, typer.Option(help="YYYY-MM-DDTHH:MM")], base_date: BaseOpt = None) -> None:
    """The TID of an issue time."""
    console.print(_run({"op": "tid", "issued": at, "base_date": _base(base_date, at)})["tid"])


@token_app.command()
def batch() -> None:
    """JSON Lines on stdin to JSON Lines on stdout, one answer per line, in order."""
    out = sys.stdout
    for raw in sys.stdin.buffer:  # bytes: one undecodable line must not take the others with it
        if not raw.strip():
            continue
        try:
            req = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            answer: dict[str, Any] = {"error": {"code": "invalid_json", "message": f"not a JSON line: {exc}"}}
        else:
            answer = token_ops.handle(req)
        out.write(json.dumps(answer, separators=(",", ":")) + "\n")
        out.flush()
