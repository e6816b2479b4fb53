"""``mita token``: issue and decode STS tokens from the terminal or a script.

The commands print for people, or JSON with ``--json`` (the same answer ``mita token batch`` gives for the same
request); ``mita token batch`` is the machine interface (JSON Lines in, one JSON line out per line, in order, never
stopping on a bad line). Both go through :mod:`mita.cli.token_ops`, so what a person sees and what a script gets
cannot disagree.

Keys never come as option values (anyone on the machine could read them in ``ps``): each key has a
``--NAME-file FILE`` option (``-``: standard input) and a ``--NAME-env VAR`` one, see :mod:`mita.cli.secrets`.
The old ``--key``, ``--vending-key`` and ``--new-key`` are refused with that reason. ``mita token batch`` takes
its keys inside the JSON lines on standard input, as before.
"""

from __future__ import annotations

import argparse

from .command import command, emit, group, say, show_fields
from .options import add_base_date, add_choice, add_ea, add_json, add_key_source

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    import datetime as dt
    from collections.abc import Callable, Collection
    from typing import Any

#: Management tokens (class 2): kind -> (subclass, the request field its value goes in). The kinds are the API's
#: engineering kinds where it has them (``set_power_limit``, ``clear_credit``, ...).
MANAGEMENT = {
    "set_power_limit": (0, "mpl"),
    "clear_credit": (1, "register"),
    "set_tariff_rate": (2, "rate"),
    "clear_tamper": (5, "pad"),
    "set_phase_unbalance_limit": (6, "mppul"),
    "set_water_meter_factor": (7, "wm_factor"),
}
#: The CLI's old spellings of the kinds: still taken, with a note on stderr.
DEPRECATED_KINDS = {
    "max-power": "set_power_limit",
    "clear-credit": "clear_credit",
    "tariff-rate": "set_tariff_rate",
    "clear-tamper": "clear_tamper",
    "phase-unbalance": "set_phase_unbalance_limit",
    "water-factor": "set_water_meter_factor",
}

BASE_HELP = "Base date; default: the one in use at the issue time (2014 from 2024-11-24 on)."
EA_HELP = "Encryption algorithm: 07 (STA), 09 (DES) or 11 (MISTY1)."
SUBCLASSES = {0: "electricity", 1: "water", 2: "gas", 3: "time", 4: "electricity currency", 5: "water currency",
              6: "gas currency", 7: "time currency"}  # fmt: skip


# ---------------------------------------------------------------------- the commands' options


def add_commands(parser: argparse.ArgumentParser) -> None:
    commands = group(parser)
    command(commands, "derive-key", derive_key, "Derive a meter's decoder key from its supply group's vending key.",
            _derive_key_options)  # fmt: skip
    command(commands, "credit", credit, "Issue a credit token (class 0).", _credit_options)
    command(commands, "management", management, "Issue a management token (class 2).", _management_options)
    command(commands, "test", test, "Issue an initiate-meter-test/display token (class 1, not encrypted).",
            _test_options)  # fmt: skip
    command(commands, "key-change", key_change, "Issue a key change token set, in entry order.", _key_change_options)
    command(commands, "decode", decode, "Decode a token and print its fields, or why it does not decode.",
            _decode_options)  # fmt: skip
    command(commands, "tid", tid, "The TID (token identifier) of an issue time.", _tid_command_options)
    command(commands, "batch", batch, "JSON Lines on stdin to JSON Lines on stdout, one answer per line, in order.")
    command(commands, "tour", tour, "A short tour: derive a key, issue tokens, decode them back.")
    from . import doctor  # its options only: the handler imports the service when it runs

    command(commands, "doctor", doctor.run, doctor.DOC, doctor.add_options)


def _derive_key_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--drn", required=True, help="Meter number with its check digit (11 or 13 digits).")
    p.add_argument("--sgc", required=True, help="Supply group code, 6 digits.")
    add_key_source(p, "vending-key", "the vending key, hex (16 digits DKGA02, 40 DKGA04)")
    p.add_argument("--dkga", type=int, choices=(2, 4), default=2, help="Key derivation: DKGA02 or DKGA04 (default 2).")
    p.add_argument("--kt", type=int, choices=range(4), default=2, help="Key type (default 2).")
    p.add_argument("--ti", type=int, default=1, help="Tariff index 0..99 (default 1).")
    p.add_argument("--krn", type=int, choices=range(1, 10), default=1, help="Key revision number (default 1).")
    add_base_date(p, "Base date (DKGA04); default: the one in use today.")
    add_ea(p, default=7, help=EA_HELP + " Default 07.")
    p.add_argument("--iin", choices=("600727", "0000"), help="Taken from the DRN length if left out.")
    add_json(p)


def _credit_options(p: argparse.ArgumentParser) -> None:
    add_ea(p, required=True, help=EA_HELP)
    p.add_argument("--amount", type=int, required=True, help="Base units: 0.1 kWh, 0.1 m³, 0.1 min, or 1e-5 currency.")
    _key_options(p, "the meter's current decoder key, hex (16 digits; 32 for EA11)")
    sub = ", ".join(f"{k} {v}" for k, v in SUBCLASSES.items())
    p.add_argument("--subclass", type=int, choices=range(8), default=0, help=f"{sub} (default 0).")
    _tid_options(p)
    add_json(p)


def _management_options(p: argparse.ArgumentParser) -> None:
    add_choice(p, "kind", values=tuple(MANAGEMENT), deprecated=DEPRECATED_KINDS, help="What the token does.")
    add_ea(p, required=True, help=EA_HELP)
    _key_options(p, "the meter's current decoder key, hex (16 digits; 32 for EA11)")
    p.add_argument(
        "--value", type=int, default=0, help="Watts for limits; register (65535 = all); raw 16-bit otherwise."
    )
    _tid_options(p)
    add_json(p)


def _test_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--control", type=int, default=1, help="Control bits: which test or display to run (default 1).")
    p.add_argument("--mfr-code", type=int, default=0, help="Manufacturer code (0 = any meter).")
    p.add_argument(
        "--wide", action=argparse.BooleanOptionalAction, default=False, help="28-bit control, 4-digit maker code."
    )
    add_json(p)


def _key_change_options(p: argparse.ArgumentParser) -> None:
    add_ea(p, required=True, help=EA_HELP)
    p.add_argument("--krn", type=int, required=True, help="New key revision number.")
    _key_options(p, "the meter's current decoder key, hex (16 digits; 32 for EA11)")
    add_key_source(p, "new-key", "the new decoder key, hex (16 digits: 2 tokens; 32: 4 tokens)")
    p.add_argument("--kt", type=int, choices=range(4), default=2, help="New key type (default 2).")
    p.add_argument("--ti", type=int, default=1, help="New tariff index (default 1).")
    p.add_argument("--ken", type=int, default=255, help="New key expiry number (255 = no expiry).")
    p.add_argument("--ro", type=int, choices=(0, 1), default=0, help="1 to clear the meter's TID store.")
    p.add_argument("--sgc", help="Supply group code (4-token sets).")
    add_json(p)


def _decode_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("token", help="The 20-digit token.")
    add_ea(p, default=7, help=EA_HELP + " Default 07.")
    _key_options(p, "the decoder key, hex (not needed for class 1)")
    add_json(p)


def _tid_command_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--at", required=True, help="Issue time, YYYY-MM-DDTHH:MM.")
    add_base_date(p, BASE_HELP)
    add_json(p)


def _key_options(p: argparse.ArgumentParser, what: str) -> None:
    add_key_source(p, "key", what)


def _tid_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tid", type=int, help="Token identifier (minutes since the base date); or give --at.")
    p.add_argument("--at", help="Issue time YYYY-MM-DDTHH:MM, the TID computed from it; default now.")
    add_base_date(p, BASE_HELP)


# ---------------------------------------------------------------------- plumbing


def _run(req: dict[str, Any]) -> dict[str, Any]:
    """Answer a request, or raise its error (typed, with the code ``mita token batch`` would answer)."""
    from . import token_ops

    answer = token_ops.handle(req)
    if "error" in answer:
        raise token_ops.RequestError(str(answer["error"]["code"]), str(answer["error"]["message"]))
    return answer


def _key(
    name: str, file: str | None, env: str | None, what: str, digits: Collection[int], required: bool = True
) -> str | None:
    from . import secrets

    return secrets.read_key(secrets.KeySource(name, file, env), what=what, digits=digits, required=required)


def _decoder_key(args: argparse.Namespace, required: bool = True) -> str | None:
    from .secrets import decoder_key_digits

    digits = decoder_key_digits(args.ea)
    return _key("key", args.key_file, args.key_env, "the meter's decoder key", digits, required)


def _base(base_date: int | None, at: str | None = None) -> int:
    """The base date asked for, or the one in use at ``at`` (now, when there is no issue time)."""
    if base_date is not None:
        return base_date
    import datetime

    from mita.sts.tid import base_date_in_use, parse_issue_time

    issued: dt.datetime = parse_issue_time(at) if at else datetime.datetime.now()
    return int(base_date_in_use(issued))


def _tid(args: argparse.Namespace) -> int:
    if args.tid is not None:
        return int(args.tid)
    import datetime

    at = args.at or datetime.datetime.now().strftime("%Y-%m-%dT%H:%M")  # no issue time given: now
    return int(_run({"op": "tid", "issued": at, "base_date": _base(args.base_date, at)})["tid"])


def _answer(args: argparse.Namespace, answer: dict[str, Any], text: str) -> None:
    if args.json:
        emit(answer)
    else:
        say(text)


# ---------------------------------------------------------------------- the commands


def derive_key(args: argparse.Namespace) -> None:
    vk = _key("vending-key", args.vending_key_file, args.vending_key_env, "the vending key",
              {2: (16,), 4: (40,)}[args.dkga])  # fmt: skip
    req = {"op": "derive_key", "dkga": args.dkga, "vending_key": vk, "drn": args.drn, "kt": args.kt, "sgc": args.sgc}
    req |= {"ti": args.ti, "krn": args.krn, "base_date": _base(args.base_date), "ea": args.ea}
    if args.iin:
        req["iin"] = args.iin
    answer = _run(req)
    _answer(args, answer, answer["decoder_key"])


def credit(args: argparse.Namespace) -> None:
    req = {"op": "encode", "ea": args.ea, "decoder_key": _decoder_key(args), "class": 0, "subclass": args.subclass}
    req |= {"tid": _tid(args), "amount": args.amount}
    answer = _run(req)
    _answer(args, answer, answer["token"])


def management(args: argparse.Namespace) -> None:
    subclass, field = MANAGEMENT[args.kind]
    req = {"op": "encode", "ea": args.ea, "decoder_key": _decoder_key(args), "class": 2, "subclass": subclass}
    req |= {field: args.value, "tid": _tid(args)}
    answer = _run(req)
    _answer(args, answer, answer["token"])


def test(args: argparse.Namespace) -> None:
    req = {"op": "encode", "ea": 7, "class": 1, "subclass": int(args.wide), "control": args.control}
    req["mfr_code"] = args.mfr_code
    answer = _run(req)
    _answer(args, answer, answer["token"])


def key_change(args: argparse.Namespace) -> None:
    from . import secrets

    old_source = secrets.KeySource("key", args.key_file, args.key_env)
    new_source = secrets.KeySource("new-key", args.new_key_file, args.new_key_env)
    secrets.one_stdin(old_source, new_source)
    digits = secrets.decoder_key_digits(args.ea)
    old = secrets.read_key(old_source, what="the meter's current decoder key", digits=digits)
    new = secrets.read_key(new_source, what="the new decoder key", digits=(16, 32))
    req: dict[str, Any] = {"op": "key_change", "ea": args.ea, "decoder_key": old, "new_key": new}
    req |= {"ken": args.ken, "krn": args.krn, "kt": args.kt, "ti": args.ti, "ro": args.ro}
    if args.sgc:
        req["sgc"] = args.sgc
    answer = _run(req)
    _answer(args, answer, "\n".join(answer["tokens"]))


def decode(args: argparse.Namespace) -> None:
    req: dict[str, Any] = {"op": "decode", "ea": args.ea, "token": args.token}
    decoder_key = _decoder_key(args, required=False)
    if decoder_key is not None:
        req["decoder_key"] = decoder_key
    answer = _run(req)
    if args.json:
        emit(answer)
    else:
        show_fields(f"token {args.token}", answer)


def tid(args: argparse.Namespace) -> None:
    answer = _run({"op": "tid", "issued": args.at, "base_date": _base(args.base_date, args.at)})
    _answer(args, answer, str(answer["tid"]))


def tour(args: argparse.Namespace) -> None:
    from . import tour

    tour.tour(args)


def batch(_args: argparse.Namespace) -> None:
    import json
    import sys

    from . import token_ops

    write = _answers_to(sys.stdout)
    for raw in sys.stdin.buffer:  # bytes: one undecodable line must not take the others with it
        if not raw.strip():
            continue
        try:
            req = json.loads(raw.decode("utf-8"))
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
            answer: dict[str, Any] = {"error": {"code": "invalid_json", "message": f"not a JSON line: {exc}"}}
        else:
            answer = token_ops.handle(req)
        write(json.dumps(answer, separators=(",", ":")) + "\n")


def _answers_to(out: Any) -> Callable[[str], None]:
    """How each answer line goes out: to a pipe or a terminal as it always did; to a file, whole or not at all.

    A disk that fills up half-way through a line would leave half an answer at the file's end, which a reader who
    does not look at the exit code would parse: each line is written with one call, and a write refused part-way
    (ENOSPC) cuts the file back to the end of the previous line before the error goes up (``disk_full``).
    """
    import os
    import stat

    try:
        fd = out.fileno()
        st = os.fstat(fd)
        at = os.lseek(fd, 0, os.SEEK_CUR)
    except (OSError, ValueError):  # no file descriptor (io.UnsupportedOperation is both), or not seekable
        fd, at, st = -1, -1, None
    if st is None or not stat.S_ISREG(st.st_mode) or at != st.st_size:

        def to_stream(line: str) -> None:
            out.write(line)
            out.flush()

        return to_stream

    out.flush()
    end = at

    def to_file(line: str) -> None:
        nonlocal end
        data = memoryview(line.encode())
        done = 0
        try:
            while done < len(data):
                done += os.write(fd, data[done:])
        except OSError:
            os.ftruncate(fd, end)
            os.lseek(fd, end, os.SEEK_SET)
            raise
        end += done

    return to_file
