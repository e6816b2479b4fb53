"""What every ``mita`` command shares: the parser class, typed errors, and how output and errors are printed.

Built on :mod:`argparse` (the standard library) so that a command starts in a few tens of milliseconds: defining
options imports nothing beyond this module, and a command's handler imports what it runs when it runs.

Errors follow one convention (:mod:`mita.cli.exits` has the codes): one line ``error[<code>]: <message>`` on
standard error; a command whose output is JSON (``--json``, and every ``mita meter`` command) also prints
``{"error": {"code", "message"}}`` on standard output, so a script reading it sees the failure too.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from functools import cache

# Mita's command line speaks English, and Python ships no catalogue for argparse's own texts, yet argparse looks
# each of them up in gettext's catalogues (a search of the locale directories per text, and the locale module
# imported for it): about 2 ms of every command's start-up, for no translation. Its texts are taken as written.
argparse._ = str  # type: ignore[attr-defined]
argparse.ngettext = lambda singular, plural, n: singular if n == 1 else plural  # type: ignore[attr-defined]

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mita --help does not load it)

if TYPE_CHECKING:
    from typing import Any, NoReturn

#: A command's handler: takes the parsed options, returns an exit code (None: 0).
Handler = Callable[[argparse.Namespace], int | None]

#: The words of the command line being run: a command defines its options only if its name is one of them
#: (None: every command does, for shell completion and the tests). Set by :func:`mita.cli.main.build`.
_words: frozenset[str] | None = None


def select(words: Sequence[str] | None) -> None:
    """Define the options of the commands named in ``words`` only (None: of every command)."""
    global _words
    _words = None if words is None else frozenset(words)


class CliError(Exception):
    """A typed error of the command line itself (the engine's and the services' errors have their own classes,
    with the same ``code`` and ``message``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def fail(code: str, message: str) -> NoReturn:
    raise CliError(code, message)


@cache
def _width() -> int:
    """What :func:`shutil.get_terminal_size` says (``COLUMNS``, the terminal, else 80), without importing shutil:
    argparse makes a formatter for every option it adds."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 80
    return max(columns, 40) - 2


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written (paragraphs, tables); option help in a column wide enough for the long names."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog, max_help_position=32, width=_width())


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors follow the convention: ``error[usage]: ...``, exit 2.

    No abbreviated options (``--vend`` for ``--vending-key-file``): an option means what it spells.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        raise CliError("usage", f"{self.prog}: {message} (see {self.prog} --help)")


def group(parser: argparse.ArgumentParser, title: str = "commands") -> argparse._SubParsersAction[Parser]:
    """Sub-commands of ``parser``; called without one, the group prints its help (and exits 2)."""
    parser.set_defaults(handler=_group_help(parser))
    return parser.add_subparsers(title=title, metavar="COMMAND", parser_class=Parser)


def command(
    commands: argparse._SubParsersAction[Parser],
    name: str,
    handler: Handler,
    doc: str,
    options: Callable[[Parser], None] | None = None,
) -> Parser:
    """A sub-command: ``doc``'s first line is its one-line help, the whole of it its ``--help`` description;
    ``options`` adds its options, when the command is on the command line (see :func:`select`)."""
    parser = commands.add_parser(name, help=doc.split("\n", 1)[0], description=doc)
    parser.set_defaults(handler=handler)
    if options is not None and (_words is None or name in _words):
        options(parser)
    return parser


def _group_help(parser: argparse.ArgumentParser) -> Handler:
    def show(_args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    return show


# ---------------------------------------------------------------------- output


def emit(data: Any, indent: int | None = 2) -> None:
    """JSON on standard output: the public, scriptable answer of a command."""
    import json  # here: the commands that print no JSON do not load it

    if indent is None:
        sys.stdout.write(json.dumps(data, separators=(",", ":")) + "\n")
    else:
        sys.stdout.write(json.dumps(data, indent=indent) + "\n")


def say(text: str = "") -> None:
    """A line for a person on standard output (the command's answer when it has no --json)."""
    sys.stdout.write(text + "\n")


def note(text: str) -> None:
    """A message for a person on standard error (progress, hints, warnings): never in the way of a script."""
    sys.stderr.write(text + "\n")
    sys.stderr.flush()


def show_fields(title: str, fields: dict[str, Any]) -> None:
    """Named values, aligned, for a person."""
    say(title)
    width = max((len(name) for name in fields), default=0)
    for name, value in fields.items():
        say(f"  {name:<{width}}  {value}")


def report(code: str, message: str, json_mode: bool) -> None:
    """An error, as the convention says: one line on standard error (and the JSON error on stdout if asked)."""
    if json_mode:
        emit({"error": {"code": code, "message": message}})
    line = " ".join(message.split())  # one line, whatever the message held
    sys.stderr.write(f"error[{code}]: {line}\n")
