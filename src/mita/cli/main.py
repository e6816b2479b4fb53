# PYTHON_ARGCOMPLETE_OK
"""The ``mita`` command: STS prepayment metering from the terminal.

Start-up time is a feature (a person typing tokens waits for every command), so this module imports nothing
heavy: :data:`COMMANDS` names each command's module, and only the module of the command on the command line is
imported to define its options; its handler imports the engine or the database layer when it runs. Shell
completion (``argcomplete``, with ``eval "$(register-python-argcomplete mita)"``) is loaded only when the shell
asks for completions, and then every command is defined.

Errors and exit codes: see :mod:`mita.cli.exits` (``mita help exit-codes``).
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
from collections.abc import Sequence

from . import command, exits
from .command import CliError, Handler, Parser, note, report, say

#: Every command: name -> (module, function adding its options and sub-commands to a parser, one-line help).
COMMANDS: dict[str, tuple[str, str, str]] = {
    "token": ("mita.cli.token", "add_commands", "Issue and decode STS tokens."),
    "meter": ("mita.cli.meter", "add_commands", "Run a virtual STS meter."),
    "keys": ("mita.cli.keys", "add_commands", "Vending keys: import, generate, rotate, retire; key changes."),
    "db": ("mita.cli.server", "add_db", "Database schema: upgrade, check."),
    "vends": ("mita.cli.vends", "add_commands", "Vends: list them, filtered; a meter's history."),
    "import": ("mita.cli.imports", "add_commands", "Import customers or meters from CSV: every row or none."),
    "report": ("mita.cli.report", "add_commands", "Reports: sales per vendor and tariff."),
    "admin": ("mita.cli.server", "add_admin", "Administration: API keys (create, list, revoke)."),
    "serve": ("mita.cli.server", "add_serve", "Run the vending service's HTTP API (migrating the schema first)."),
    "demo": ("mita.cli.server", "add_demo", "Set up a demo utility on its own SQLite file and serve it."),
    "worker": (
        "mita.cli.ingest",
        "add_worker",
        "Send what the outbox holds; run its jobs; `worker ingest`: MQTT telemetry in.",
    ),
    "conformance": ("mita.cli.conformance", "add_commands", "Run the shipped STS vectors; check another system."),
    "sim": ("mita.cli.sim", "add_commands", "Simulated smart meters: serve a meter file over DLMS/COSEM."),
    "headend": ("mita.cli.headend", "add_commands", "Connected meters: their endpoint, commands sent to them."),
    "alarms": ("mita.cli.alarms", "add_commands", "Alarms: list, show, acknowledge, close; a meter's timeline."),
    "channels": (
        "mita.cli.channels",
        "add_commands",
        "Payment channels: payments, reconciliation with M-Pesa, a fake Daraja for tests and demos.",
    ),
    "sms": ("mita.cli.sms", "add_commands", "SMS through Kannel: its configuration, the delivery sweep."),
    "console": ("mita.cli.console", "add_commands", "The operator console's users: add, list, new password."),
    "help": ("mita.cli.main", "add_help", "Reference: the exit codes."),
}

#: Groups whose every command answers in JSON: their errors are JSON on standard output too.
JSON_GROUPS = frozenset({"meter"})
FULL = frozenset({errno.ENOSPC, errno.EDQUOT})  # a write refused for want of space: a typed disk_full

HELP_TOPICS = {"exit-codes": exits.describe}


def build(words: Sequence[str], everything: bool = False) -> Parser:
    """The parser, with the options of the command named in ``words`` (of every command if ``everything``)."""
    from mita import __version__

    command.select(None if everything else words)
    parser = Parser(
        prog="mita",
        description="Mita: STS prepayment metering.",
        epilog=f"exit codes:\n{exits.describe()}\n\nerrors: one line on standard error, error[<code>]: <message>",
    )
    parser.add_argument("--version", action="version", version=f"mita {__version__}")
    parser.set_defaults(handler=_help_of(parser))
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)
    wanted = next((w for w in words if not w.startswith("-")), None)
    # A parser costs ~0.5 ms (argparse looks its texts up in gettext): a known command builds only its own;
    # no command, or an unknown one, lists them all.
    only = not everything and wanted in COMMANDS
    for name, (module, function, summary) in COMMANDS.items():
        if only and name != wanted:
            continue
        sub = commands.add_parser(name, help=summary, description=summary)
        if everything or name == wanted:
            getattr(importlib.import_module(module), function)(sub)
    return parser


def _help_of(parser: argparse.ArgumentParser) -> Handler:
    def show(_args: argparse.Namespace) -> int:
        parser.print_help()
        return exits.USAGE

    return show


def add_help(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topic", choices=sorted(HELP_TOPICS), help="What to explain.")
    parser.set_defaults(handler=lambda args: say(HELP_TOPICS[args.topic]()))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit code (see :mod:`mita.cli.exits`)."""
    words = list(sys.argv[1:] if argv is None else argv)
    args: argparse.Namespace | None = None
    try:
        completing = "_ARGCOMPLETE" in os.environ
        parser = build(words, everything=completing)
        if completing:
            import argcomplete

            argcomplete.autocomplete(parser)
        args = _parse(parser, words)
        return int(args.handler(args) or 0)
    except SystemExit as exc:  # --help and --version, or a handler that exits
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except KeyboardInterrupt:
        note("interrupted")
        return exits.INTERRUPTED
    except BrokenPipeError:  # `mita ... | head`: the reader left; nothing to say
        sys.stderr.close()
        return exits.OK
    except Exception as exc:
        code, message = _typed(exc)
        json_mode = bool(getattr(args, "json", False) or getattr(args, "json_always", False))
        if args is None:  # an error while parsing (a key on the command line): decide from the words
            json_mode = "--json" in words or next((w for w in words if not w.startswith("-")), "") in JSON_GROUPS
        report(code, message, json_mode and code != "usage")
        return exits.for_error(code)


def _parse(parser: Parser, words: list[str]) -> argparse.Namespace:
    """The options; a list argument (``nargs="*"``, named by the command's ``extra_into``) also takes the words
    that follow options, as in ``mark 7 --status delivered DRN DRN``: argparse alone stops at the first option."""
    args, extra = parser.parse_known_args(words)
    target = getattr(args, "extra_into", None)
    if extra and target is not None and not any(word.startswith("-") for word in extra):
        getattr(args, target).extend(extra)
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _typed(exc: Exception) -> tuple[str, str]:
    """(code, message) of an error: the CLI's, the engine's and the services' are typed; anything else is a bug,
    reported by its type only (a message could hold a driver's text, and so a secret)."""
    if isinstance(exc, CliError):
        return exc.code, exc.message
    if isinstance(exc, OSError) and exc.errno in FULL:  # a full disk is the operator's to fix, not a bug
        what = f" writing {exc.filename}" if exc.filename else ""
        return "disk_full", f"no space left on the device{what}: the output is incomplete"
    errors = sys.modules.get("mita.sts.errors")  # not imported: the error cannot be one of them
    if errors is not None and isinstance(exc, errors.StsError):
        return str(exc.code), str(exc.message)
    if os.environ.get("MITA_TRACEBACK"):
        raise exc
    return "internal_error", f"unexpected {type(exc).__name__} (set MITA_TRACEBACK=1 to see where)"


if __name__ == "__main__":
    sys.exit(main())
