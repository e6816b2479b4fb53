"""Options more than one command takes, spelled once: ``--ea``, ``--base-date``, ``--json``, ``--database-url``,
the key sources, and choices with their deprecated spellings.

Choices are listed in ``--help`` and completed by the shell (argcomplete reads ``choices`` and the ``completer``
set here). Defining them imports nothing: the engine and the services are imported by the handlers.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence

from .command import note

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (mita --help does not load it)
if TYPE_CHECKING:
    from typing import Any

#: The encryption algorithms, as the standard writes them; 7, 9 and 11 are accepted too (the API takes numbers).
EA_CHOICES = ("07", "09", "11")
BASE_DATES = (1993, 2014, 2035)


def completes(action: argparse.Action, values: Sequence[str]) -> argparse.Action:
    """Let the shell complete ``action``'s value from ``values`` (argcomplete's ``completer`` attribute)."""

    def completer(**_kwargs: Any) -> list[str]:
        return list(values)

    setattr(action, "completer", completer)  # noqa: B010 (argparse.Action declares no such attribute)
    return action


def ea_value(text: str) -> int:
    """``07``, ``09`` or ``11`` (or ``7``, ``9``, ``11``) as the number."""
    try:
        number = int(text)
    except ValueError:
        number = -1
    if number not in (7, 9, 11):
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(EA_CHOICES)})")
    return number


def add_ea(parser: argparse.ArgumentParser, *, help: str, required: bool = False, default: int | None = None) -> None:
    completes(
        parser.add_argument("--ea", type=ea_value, metavar="{07,09,11}", required=required, default=default, help=help),
        EA_CHOICES,
    )


def add_base_date(parser: argparse.ArgumentParser, help: str) -> None:
    parser.add_argument("--base-date", type=int, choices=BASE_DATES, help=help)


def choice(values: Sequence[str], deprecated: Mapping[str, str] | None = None) -> Callable[[str], str]:
    """An option type: one of ``values``; an old spelling in ``deprecated`` is taken, with a note on stderr."""
    old = dict(deprecated or {})

    def parse(text: str) -> str:
        if text in values:
            return text
        if text in old:
            note(f"note: {text!r} is deprecated; use {old[text]!r}")
            return old[text]
        raise argparse.ArgumentTypeError(f"invalid choice: {text!r} (choose from {', '.join(values)})")

    return parse


def add_choice(
    parser: argparse.ArgumentParser,
    *names: str,
    values: Sequence[str],
    deprecated: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> None:
    """An option or argument taking one of ``values`` (listed in ``--help``), old spellings accepted with a note."""
    if names[0].startswith("-"):
        metavar = "{" + ",".join(values) + "}"
    else:  # an argument is named by its metavar in errors: its name, with the choices in its help
        metavar = names[0].upper()
        kwargs["help"] = f"{kwargs.get('help', '')} One of: {', '.join(values)}.".strip()
    action = parser.add_argument(*names, type=choice(values, deprecated), metavar=metavar, **kwargs)
    completes(action, values)


def add_json(parser: argparse.ArgumentParser, always: bool = False) -> None:
    """``--json``: the answer as JSON for scripts. ``always``: JSON is the command's only output anyway (the flag
    is accepted so that every scriptable command takes it), and errors are JSON on stdout too."""
    if always:
        parser.add_argument("--json", action="store_true", help="JSON (the default: it is this command's output).")
        parser.set_defaults(json_always=True)
    else:
        parser.add_argument("--json", action="store_true", help="Print the answer as JSON, for scripts.")


def add_database_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        metavar="URL",
        help="SQLAlchemy URL; default MITA_DATABASE_URL, else sqlite:///mita.db. Never with a password in it "
        "(ps shows it to everyone): put the password in MITA_DATABASE_URL or ~/.pgpass.",
    )


# ---------------------------------------------------------------------- keys: never on the command line


class _RefusedKey(argparse.Action):
    """``--NAME VALUE``: refused at once, before any other option is checked, without looking at the value."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        from .secrets import on_command_line

        raise on_command_line(self.option_strings[0].removeprefix("--"))


def add_key_source(parser: argparse.ArgumentParser, name: str, what: str) -> None:
    """``--NAME-file FILE`` and ``--NAME-env VAR`` for a key (see :mod:`mita.cli.secrets`), and the old
    ``--NAME``, hidden, refused with the reason."""
    parser.add_argument(f"--{name}-file", metavar="FILE", help=f"File holding {what}; - reads it from standard input.")
    parser.add_argument(f"--{name}-env", metavar="NAME", help=f"Environment variable holding {what}.")
    parser.add_argument(f"--{name}", action=_RefusedKey, help=argparse.SUPPRESS)
