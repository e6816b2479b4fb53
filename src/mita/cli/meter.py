"""``mita meter``: drive a virtual meter saved in a state file.

Every command but ``keypad`` prints one JSON object on standard output (a public contract for scripts; ``--json``
is accepted and changes nothing). A rejected token is an answer, not an error: ``mita meter enter`` prints
``"result": "used"`` and exits with that rejection's code (:mod:`mita.cli.exits`: 0 when the meter accepted,
10-15 by class of rejection). Set-up errors print ``{"error": {"code", "message"}}`` on standard output and
``error[<code>]: <message>`` on standard error, exit status 1. The wall clock is read here, in the shell, and
only when ``--at`` is not given.

Consumption: ``mita meter show`` has the meter's ``consumed`` register in its internal units (W·s; for water and
gas, L·s/h) and ``mita meter run`` its ``consumed`` in base units (0.1 kWh, 0.1 m³), as they always had; both
add the figure with its unit in the name: ``consumed_wh`` and ``consumed_kwh`` for electricity, ``consumed_l``
and ``consumed_m3`` for water and gas.

The decoder key of ``new`` comes from ``--decoder-key-file FILE`` (``-``: standard input) or
``--decoder-key-env VAR``, never from the command line, where anyone on the machine could read it in ``ps``
(see :mod:`mita.cli.secrets`); ``--decoder-key`` is refused with that reason.
"""

from __future__ import annotations

import argparse

from . import exits
from .command import command, emit, group
from .options import add_choice, add_ea, add_json, add_key_source

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    import datetime as dt
    from typing import Any

    from mita.meter import Meter
    from mita.meter.model import EntryResult
    from mita.meter.storage import FileLock

TAMPER_KINDS = ("cover", "magnetic", "bypass")
AT_HELP = "Time of the event, YYYY-MM-DDTHH:MM[:SS]; default now."
#: Internal consumption units per Wh (electricity: W·s) or per litre (water, gas: L·s/h).
_PER_WH_OR_LITRE = 3600


def add_commands(parser: argparse.ArgumentParser) -> None:
    commands = group(parser)
    command(commands, "new", new, "Make a new meter and save it.", _new_options)
    command(commands, "enter", enter, "Type a token on the meter; the exit code says how it answered.", _enter_options)
    command(commands, "show", show, "Everything the meter shows a technician (never its key).", _state)
    command(commands, "run", run, "Let time pass with a load; credit runs down, the switch opens at zero.",
            _run_options)  # fmt: skip
    command(commands, "tamper", tamper, "Simulate a tamper event.", _tamper_options)
    command(commands, "keypad", keypad, "An interactive meter: type tokens, watch the display (q quits).",
            _keypad_options)  # fmt: skip
    parser.set_defaults(json_always=True)


def _new_options(p: argparse.ArgumentParser) -> None:
    from mita.meter.profiles import PROFILES

    _state(p)
    p.add_argument("--drn", required=True, help="Meter number with its check digit.")
    add_ea(p, required=True, help="Encryption algorithm: 07, 09 or 11.")
    p.add_argument("--sgc", required=True, help="Supply group code, 6 digits.")
    add_key_source(p, "decoder-key", "the meter's decoder key, hex (16 digits; 32 for EA11)")
    p.add_argument("--ti", type=int, default=1, help="Tariff index (default 1).")
    p.add_argument("--krn", type=int, default=1, help="Key revision number (default 1).")
    p.add_argument("--kt", type=int, default=2, help="Key type (default 2).")
    p.add_argument("--ken", type=int, default=255, help="Key expiry number (255: none).")
    p.add_argument("--iin", choices=("600727", "0000"), help="Taken from the DRN length if left out.")
    p.add_argument("--profile", choices=tuple(PROFILES), default="edition2-ea11", help="Default edition2-ea11.")
    p.add_argument("--mfr-code", type=int, help="Manufacturer code (from the DRN if left out).")
    p.add_argument("--force", action=argparse.BooleanOptionalAction, default=False, help="Replace a state file.")


def _keypad_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("state_file", help="The meter's state file (JSON).")


def _enter_options(p: argparse.ArgumentParser) -> None:
    _state(p)
    p.add_argument("token", help="20 digits (spaces and dashes are ignored).")
    p.add_argument("--at", help=AT_HELP)


def _run_options(p: argparse.ArgumentParser) -> None:
    _state(p)
    p.add_argument("--seconds", type=int, required=True, help="How long.")
    p.add_argument("--load-w", type=int, required=True, help="Load in W (or flow in L/h for water and gas).")
    p.add_argument("--at", help="Start time, YYYY-MM-DDTHH:MM[:SS]; default the meter's clock.")


def _tamper_options(p: argparse.ArgumentParser) -> None:
    _state(p)
    add_choice(p, "--kind", values=TAMPER_KINDS, required=True, help="What was tampered with.")
    p.add_argument("--at", help="Time of the event, YYYY-MM-DDTHH:MM[:SS]; default the meter's clock.")


def _state(p: argparse.ArgumentParser) -> None:
    p.add_argument("state_file", help="The meter's state file (JSON).")
    add_json(p, always=True)


# ---------------------------------------------------------------------- plumbing


def _time(at: str | None, fallback: dt.datetime | None = None) -> dt.datetime:
    if at is None:
        import datetime

        return fallback or datetime.datetime.now().replace(microsecond=0)
    from mita.sts.tid import parse_issue_time

    return parse_issue_time(at)


def _load(path: str) -> Meter:
    from mita.meter import storage

    return storage.load(path)


def _locked(path: str) -> FileLock:
    """Held from load to save, so that a simulated meter serving the same file (``mita sim``) takes turns."""
    from mita.meter.storage import FileLock

    return FileLock(path)


def _save(meter: Meter, path: str) -> None:
    from mita.meter import storage

    storage.save(meter, path)


def consumption(utility: str, internal: float) -> dict[str, float]:
    """Consumption in internal units (W·s, L·s/h) as named figures with their unit: Wh and kWh, or L and m³."""
    small = round(internal / _PER_WH_OR_LITRE, 3)
    large = round(internal / _PER_WH_OR_LITRE / 1000, 6)
    if utility == "electricity":
        return {"consumed_wh": small, "consumed_kwh": large}
    return {"consumed_l": small, "consumed_m3": large}


def _switch(meter: Meter, now: dt.datetime) -> str:
    return "closed" if meter.switch_closed(now) else "open"


def _entry(meter: Meter, result: EntryResult, now: dt.datetime) -> dict[str, Any]:
    return {
        "result": result.result.value,
        "display": result.display,
        "detail": result.detail,
        "token": result.token,
        **({"lines": list(result.lines)} if result.lines else {}),
        "registers": meter.registers(),
        "switch": _switch(meter, now),
    }


# ---------------------------------------------------------------------- the commands


def new(args: argparse.Namespace) -> None:
    from pathlib import Path

    from mita import sts
    from mita.meter import Meter

    from . import secrets

    if Path(args.state_file).exists() and not args.force:
        raise sts.FormatError(f"{args.state_file} exists; use --force to replace it")
    source = secrets.KeySource("decoder-key", args.decoder_key_file, args.decoder_key_env)
    key_hex = secrets.read_key(source, what="the meter's decoder key", digits=secrets.decoder_key_digits(args.ea))
    assert key_hex is not None  # required
    meter = Meter.create(
        drn=args.drn, ea=args.ea, decoder_key=int(key_hex, 16), sgc=args.sgc, ti=args.ti, krn=args.krn, kt=args.kt,
        ken=args.ken, iin=args.iin, profile=args.profile, mfr_code=args.mfr_code,
    )  # fmt: skip
    _save(meter, args.state_file)
    emit(meter.status())


def enter(args: argparse.Namespace) -> int:
    with _locked(args.state_file):
        meter = _load(args.state_file)
        now = _time(args.at)
        result = meter.enter(args.token, now)
        _save(meter, args.state_file)
    emit(_entry(meter, result, now))
    return exits.for_meter_result(result.result.value)


def show(args: argparse.Namespace) -> None:
    meter = _load(args.state_file)
    status = meter.status()
    emit({**status, **consumption(meter.profile.utility, meter.state.consumed)})


def run(args: argparse.Namespace) -> None:
    import datetime

    from mita.meter.state import PER_BASE_UNIT

    with _locked(args.state_file):
        meter = _load(args.state_file)
        start = _time(args.at, meter.state.clock)
        result = meter.run(args.seconds, args.load_w, start)
        _save(meter, args.state_file)
    end = start + datetime.timedelta(seconds=args.seconds)
    emit(
        {
            "seconds": result.seconds,
            "consumed": round(result.consumed / PER_BASE_UNIT, 6),
            **consumption(meter.profile.utility, result.consumed),
            "events": list(result.events),
            "registers": meter.registers(),
            "switch": _switch(meter, end),
            "clock": end.isoformat(timespec="seconds"),
        }
    )


def tamper(args: argparse.Namespace) -> None:
    with _locked(args.state_file):
        meter = _load(args.state_file)
        now = _time(args.at, meter.state.clock)
        display = meter.tamper(args.kind, now)
        _save(meter, args.state_file)
    emit({"display": display, "tamper": meter.state.tamper, "switch": _switch(meter, now)})


_UNITS = {"electricity": (10, "kWh"), "water": (10, "m³"), "gas": (10, "m³"), "time": (10, "min")}


def _human(register: str, base_units: float) -> str:
    scale, unit = _UNITS.get(register, (100_000, "currency"))
    return f"{base_units / scale:,.2f} {unit}"


def keypad(args: argparse.Namespace) -> None:
    """Interactive, and long-running: the one meter command that draws with Rich (imported here)."""
    import datetime

    from rich.console import Console
    from rich.panel import Panel
    from rich.text import Text

    console = Console()
    meter = _load(args.state_file)

    def lcd(text: str, sub: str = "") -> None:
        body = Text(f"{text:^32}", style="bold black on green")
        now = datetime.datetime.now()
        credit = ", ".join(_human(k, v) for k, v in meter.registers().items()) or "no credit"
        switch = "ON" if meter.switch_closed(now) else "OFF"
        title = f"{meter.profile.name} · {meter.state.drn}"
        console.print(Panel(body, title=title, subtitle=f"{credit} · supply {switch}", expand=False))
        if sub:
            console.print(f"  [dim]{sub}[/]")

    lcd(meter.state.display or "Ready", "Type a 20-digit token and press Enter. q quits, s shows the meter.")
    while True:
        try:
            line = console.input("[bold]keypad> [/]").strip()
        except (EOFError, KeyboardInterrupt):
            break
        if line in ("q", "quit", "exit"):
            break
        if line == "s":
            console.print_json(data=meter.status())
            continue
        if not line:
            continue
        with _locked(args.state_file):  # the file as it is now: a simulated meter may serve it too
            meter = _load(args.state_file)
            result = meter.enter(line, datetime.datetime.now().replace(microsecond=0))
            _save(meter, args.state_file)
        lcd(result.display, " · ".join([result.result.value, result.detail, *result.lines]))
