"""Keys for the command line, read from a file, standard input or an environment variable: never from argv.

Anything on a command line is visible to every local user (``ps``, ``/proc/<pid>/cmdline``) while the command
runs, and stays in shell history after. So no command takes key material as an option value. Each key a
command needs has two options, named after it (``NAME`` is ``key``, ``vending-key``, ``decoder-key``,
``new-key``):

``--NAME-file PATH``
    the file holds the key, hex, on one line (surrounding whitespace is ignored). ``-`` is standard input
    (one line, or a prompt that does not echo on a terminal); a FIFO or ``<(...)`` works too.
``--NAME-env VAR``
    the environment variable ``VAR`` holds it.

One source per key. Two keys of one command cannot both come from standard input. The old ``--NAME``
options are kept, hidden, only to be refused with the reason (:func:`on_command_line`); the options themselves
are defined in :func:`mita.cli.options.add_key_source`.

Every failure is a :class:`SecretError` with a stable code; its message names the option and the file or
variable, never the key (and not a path or variable name that looks like a key pasted in by mistake):

=========================  ========================================================================
``secret_missing``         no source given for a key the command needs; or the variable is not set
``secret_unreadable``      the file cannot be read (missing, a folder, no permission, not text)
``secret_empty``           the file, standard input or variable holds nothing
``invalid_key``            not hexadecimal, not one word, or the wrong number of digits
``secret_conflict``        two sources for one key, or two keys from standard input
``secret_on_command_line`` a key given on the command line (``--key`` and the like): refused
=========================  ========================================================================
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Collection, Mapping

from mita import sts
from mita.sts.values import Value  # a frozen dataclass without importing dataclasses (start-up time)

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import TextIO

STDIN = "-"
#: More than any key in hex with room for whitespace; a bigger file is not a key file.
MAX_BYTES = 4096

_HEX = re.compile(r"[0-9a-fA-F]+")
_LOOKS_LIKE_KEY = re.compile(r"(0[xX])?[0-9a-fA-F]{16,}")


class SecretError(sts.StsError):
    """A key that could not be had from its source, or was given where it must not be."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class KeySource(Value):
    """Where one key of a command comes from: ``--{name}-file`` (a path, or ``-``) or ``--{name}-env``."""

    name: str
    file: str | None = None
    env: str | None = None

    @property
    def file_option(self) -> str:
        return f"--{self.name}-file"

    @property
    def env_option(self) -> str:
        return f"--{self.name}-env"

    @property
    def given(self) -> bool:
        return self.file is not None or self.env is not None

    @property
    def stdin(self) -> bool:
        return self.file == STDIN


def usage(name: str) -> str:
    """How to give the key ``name``: the options, for messages."""
    return f"--{name}-file FILE, --{name}-file - (standard input) or --{name}-env NAME"


def on_command_line(name: str) -> SecretError:
    """The refusal of a key given on the command line as ``--{name}`` (the value is not looked at)."""
    return SecretError(
        "secret_on_command_line",
        f"--{name} is refused: keys on the command line are visible to every local user in ps and in shell "
        f"history; use {usage(name)}",
    )


def _shown(text: str) -> str:
    """A path or variable name for a message, unless it looks like a key pasted in its place."""
    if _LOOKS_LIKE_KEY.fullmatch(text):
        return "<not shown: it looks like a key; the option names a file or a variable, never the key itself>"
    return repr(text)


def one_stdin(*sources: KeySource) -> None:
    """Refuse two keys of one command from standard input: one line cannot be both."""
    on_stdin = [s.file_option for s in sources if s.stdin]
    if len(on_stdin) > 1:
        raise SecretError(
            "secret_conflict",
            f"{' and '.join(on_stdin)} both read standard input; give all but one of them a file or "
            "an environment variable",
        )


def _read_file(source: KeySource, path: str) -> str:
    try:
        with open(path, "rb") as f:  # a FIFO, /dev/fd/N or <(...) works too
            data = f.read(MAX_BYTES + 1)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise SecretError(
            "secret_unreadable", f"{source.file_option} {_shown(path)}: cannot read it ({reason})"
        ) from None
    if len(data) > MAX_BYTES:
        raise SecretError("invalid_key", f"{source.file_option} {_shown(path)}: too big to be a key file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise SecretError("secret_unreadable", f"{source.file_option} {_shown(path)}: not a text file") from None


def _read_stdin(source: KeySource, stdin: TextIO | None) -> str:
    stream = stdin if stdin is not None else sys.stdin
    try:
        if stream.isatty():
            import getpass  # here: only a prompt needs it

            return getpass.getpass(f"{source.name.replace('-', ' ')} (hex, not shown): ")
        line = stream.readline(MAX_BYTES + 1)
    except (OSError, UnicodeDecodeError, ValueError) as exc:  # ValueError: a closed stream
        raise SecretError(
            "secret_unreadable", f"{source.file_option} - (standard input): cannot read it ({type(exc).__name__})"
        ) from None
    except EOFError:  # getpass on a terminal closed with Ctrl-D
        return ""
    if len(line) > MAX_BYTES:
        raise SecretError("invalid_key", f"{source.file_option} - (standard input): the line is too long to be a key")
    return line


def _raw(source: KeySource, environ: Mapping[str, str], stdin: TextIO | None) -> tuple[str, str]:
    """The text holding the key, and where it came from (for messages)."""
    if source.file is not None and source.env is not None:
        raise SecretError("secret_conflict", f"give {source.file_option} or {source.env_option}, not both")
    if source.env is not None:
        where = f"{source.env_option} {_shown(source.env)}"
        if source.env not in environ:
            raise SecretError("secret_missing", f"{where}: no such environment variable is set")
        return environ[source.env], where
    assert source.file is not None
    if source.stdin:
        return _read_stdin(source, stdin), f"{source.file_option} - (standard input)"
    return _read_file(source, source.file), f"{source.file_option} {_shown(source.file)}"


def read_key(
    source: KeySource,
    *,
    what: str,
    digits: Collection[int] = (),
    required: bool = True,
    environ: Mapping[str, str] | None = None,
    stdin: TextIO | None = None,
) -> str | None:
    """The key from its source, as hex (lower case, no whitespace); None if not given and not ``required``.

    ``what`` says what the key is ("the meter's decoder key"); ``digits`` the hex lengths allowed (any if
    empty). Raises :class:`SecretError`; no message holds the key or any part of it.
    """
    if not source.given:
        if not required:
            return None
        raise SecretError("secret_missing", f"give {what} with {usage(source.name)}")
    text, where = _raw(source, os.environ if environ is None else environ, stdin)
    words = text.split()
    if not words:
        raise SecretError("secret_empty", f"{where} is empty: it must hold {what}, hex")
    if len(words) > 1:
        raise SecretError("invalid_key", f"{where} must hold one key, hex, on one line")
    key = words[0]
    if not _HEX.fullmatch(key):
        raise SecretError("invalid_key", f"{where}: {what} must be hexadecimal digits only")
    if digits and len(key) not in digits:
        want = " or ".join(str(d) for d in sorted(digits))
        raise SecretError("invalid_key", f"{where}: {what} must be {want} hex digits (got {len(key)})")
    return key.lower()


def decoder_key_digits(ea: object) -> tuple[int, ...]:
    """Hex digits of a decoder key under the encryption algorithm ``ea``; both sizes if ``ea`` is not one."""
    try:
        return (sts.EA.parse(ea).key_bits // 4,)
    except sts.StsError:
        return (16, 32)
