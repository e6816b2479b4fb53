"""``mita meter``: drive a virtual meter saved in a state file.

Every command but ``keypad`` prints one JSON object on standard output (a
public contract for scripts). A rejected token is a result, not an error: the
command succeeds and says ``"result": "used"``. Set-up errors print
``{"error": {"code", "message"}}`` and exit with status 1. The wall clock is
read here, in the shell, and only when ``--at`` is not given.

The decoder key of ``new`` comes from ``--decoder-key-file FILE`` (``-``: standard input) or
``--decoder-key-env VAR``, never from the command line, where anyone on the machine could read it in ``ps``
(see :mod:`mita.cli.secrets`); ``--decoder-key`` is refused with that reason.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from mita import sts
from mita.meter import PROFILES, Meter, storage
from mita.meter.model import EntryResult
from mita.sts.tid import parse_issue_time

from . import secrets

meter_app = typer.Typer(no_args_is_help=True, help="Run a virtual STS meter.")

StateArg = Annotated[str, typer.Argument(help="The meter's state file (JSON).")]
AtOpt = Annotated[str | None, typer.Option("--at", help="Time of the event, YYYY-MM-DDTHH:MM[:SS]; default now.")]


def _emit(data: dict[str, Any]) -> None:
    typer.echo(json.dumps(data, indent=2))


def _fail(exc: sts.StsError) -> NoReturn:
    _emit({"error": exc.as_dict()})
    raise typer.Exit(1)


def _time(at: str | None, fallback: dt.datetime | None = None) -> dt.datetime:
    if at is None:
        return fallback or dt.datetime.now().replace(microsecond=0)
    try:
        return parse_issue_time(at)
    except sts.StsError as exc:
        _fail(exc)


def _load(path: str) -> Meter:
    try:
        return storage.load(path)
    except sts.StsError as exc:
        _fail(exc)


def _entry(meter: Meter, result: EntryResult, now: dt.datetime) -> dict[str, Any]:
    return {
        "result": result.result.value,
        "display": result.display,
        "detail": result.detail,
        "token": result.token,
        **({"lines": list(result.lines)} if result.lines else {}),
        "registers": meter.registers(),
        "switch": "closed" if meter.switch_closed(now) else "open",
    }


@meter_app.command()
def new(
    state_file: StateArg,
    drn: Annotated[str, typer.Option(help="Meter number with its check digit.")],
    ea: Annotated[str, typer.Option(help="07, 09 or 11.")],
    sgc: Annotated[str, typer.Option(help="Supply group code, 6 digits.")],
    decoder_key_file: Annotated[
        str | None, secrets.file_option("decoder-key", "the meter's decoder key, hex (16 digits; 32 for EA11)")
    ] = None,
    decoder_key_env: Annotated[str | None, secrets.env_option("decoder-key", "the decoder key")] = None,
    ti: Annotated[int, typer.Option(help="Tariff index.")] = 1,
    krn: Annotated[int, typer.Option(help="Key revision number.")] = 1,
    kt: Annotated[int, typer.Option(help="Key type.")] = 2,
    ken: Annotated[int, typer.Option(help="Key expiry number (255: none).")] = 255,
    iin: Annotated[str | None, typer.Option(help="600727 or 0000 (from the DRN length if left out).")] = None,
    profile: Annotated[str, typer.Option(help=", ".join(PROFILES))] = "edition2-ea11",
    mfr_code: Annotated[int | None, typer.Option(help="Manufacturer code (from the DRN if left out).")] = None,
    force: Annotated[bool, typer.Option(help="Replace an existing state file.")] = False,
    decoder_key: Annotated[
        str | None,
        secrets.refused_option("decoder-key", _fail),
    ] = None,
) -> None:
    """Make a new meter and save it."""
    from pathlib import Path

    if Path(state_file).exists() and not force:
        _fail(sts.FormatError(f"{state_file} exists; use --force to replace it"))
    source = secrets.KeySource("decoder-key", decoder_key_file, decoder_key_env)
    try:
        key_hex = secrets.read_key(source, what="the meter's decoder key", digits=secrets.decoder_key_digits(ea))
    except secrets.SecretError as exc:
        _fail(exc)
    assert key_hex is not None  # required
    try:
        meter = Meter.create(
            drn=drn, ea=int(ea), decoder_key=int(key_hex, 16), sgc=sgc, ti=ti, krn=krn, kt=kt, ken=ken,
            iin=iin, profile=profile, mfr_code=mfr_code,
        )  # fmt: skip
    except ValueError:
        _fail(sts.FormatError("--ea must be a number: 07, 09 or 11"))
    except sts.StsError as exc:
        _fail(exc)
    storage.save(meter, state_file)
    _emit(meter.status())


@meter_app.command()
def enter(state_file: StateArg, token: Annotated[str, typer.Argument(help="20 digits.")], at: AtOpt = None) -> None:
    """Type a token on the meter."""
    meter = _load(state_file)
    now = _time(at)
    result = meter.enter(token, now)
    storage.save(meter, state_file)
    _emit(_entry(meter, result, now))


@meter_app.command()
def show(state_file: StateArg) -> None:
    """Everything the meter shows a technician (never its key)."""
    _emit(_load(state_file).status())


@meter_app.command()
def run(
    state_file: StateArg,
    seconds: Annotated[int, typer.Option(help="How long.")],
    load_w: Annotated[int, typer.Option(help="Load in W (or flow in L/h for water and gas).")],
    at: AtOpt = None,
) -> None:
    """Let time pass with a load; credit runs down, the switch opens at zero."""
    meter = _load(state_file)
    start = _time(at, meter.state.clock)
    try:
        result = meter.run(seconds, load_w, start)
    except sts.StsError as exc:
        _fail(exc)
    storage.save(meter, state_file)
    end = start + dt.timedelta(seconds=seconds)
    _emit(
        {
            "seconds": result.seconds,
            "consumed": round(result.consumed / 360_000, 6),
            "events": list(result.events),
            "registers": meter.registers(),
            "switch": "closed" if meter.switch_closed(end) else "open",
            "clock": end.isoformat(timespec="seconds"),
        }
    )


@meter_app.command()
def tamper(
    state_file: StateArg,
    kind: Annotated[str, typer.Option(help="cover, magnetic or bypass.")],
    at: AtOpt = None,
) -> None:
    """Simulate a tamper event."""
    meter = _load(state_file)
    now = _time(at, meter.state.clock)
    try:
        display = meter.tamper(kind, now)
    except sts.StsError as exc:
        _fail(exc)
    storage.save(meter, state_file)
    switch = "closed" if meter.switch_closed(now) else "open"
    _emit({"display": display, "tamper": meter.state.tamper, "switch": switch})


_UNITS = {"electricity": (10, "kWh"), "water": (10, "m³"), "gas": (10, "m³"), "time": (10, "min")}


def _human(register: str, base_units: float) -> str:
    scale, unit = _UNITS.get(register, (100_000, "currency"))
    return f"{base_units / scale:,.2f} {unit}"


@meter_app.command()
def keypad(state_file: StateArg) -> None:
    """An interactive meter: type tokens, watch the display. `q` quits, `s` shows the registers."""
    console = Console()
    meter = _load(state_file)

    def lcd(text: str, sub: str = "") -> None:
        body = Text(f"{text:^32}", style="bold black on green")
        now = dt.datetime.now()
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
        result = meter.enter(line, dt.datetime.now().replace(microsecond=0))
        storage.save(meter, state_file)
        lcd(result.display, " · ".join([result.result.value, result.detail, *result.lines]))
