"""``mita console``: the console's operators. ``user add NAME --role admin|operator`` makes one (the password
from standard input, never from the command line: it would sit in the shell's history and in ``ps``); ``user
list`` shows them; ``user password NAME`` sets a new one (their sessions end). The console itself is served by
``mita serve`` under ``/console``."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from .command import command, emit, fail, group, note, say
from .options import add_database_url, add_json

if TYPE_CHECKING:
    from mita.vend.operators import Operators


def add_commands(parser: argparse.ArgumentParser) -> None:
    # the handler given here is replaced by the group's help: ``mita console user`` alone prints it
    users = group(command(group(parser), "user", list_users, "The console's operators: add, list, new password."))
    p = command(users, "add", add_user, "A new operator, with a role and a password (read from standard input).")
    p.add_argument("name", help="The name the operator signs in with.")
    p.add_argument("--role", required=True, choices=("admin", "operator"), help="What they may do.")
    p.add_argument("--password-stdin", action="store_true", help="Read the password from standard input.")
    add_database_url(p)
    add_json(p)
    p = command(users, "list", list_users, "The operators, their roles and last sign-in.")
    add_database_url(p)
    add_json(p)
    p = command(users, "password", set_password, "A new password for an operator (read from standard input).")
    p.add_argument("name")
    p.add_argument("--password-stdin", action="store_true", help="Read the password from standard input.")
    add_database_url(p)


def _password(args: argparse.Namespace) -> str:
    if not args.password_stdin:
        fail("usage", "give the password on standard input, with --password-stdin")
    if sys.stdin.isatty():
        import getpass

        return getpass.getpass("password: ")
    return sys.stdin.readline().rstrip("\r\n")


def _operators(args: argparse.Namespace) -> Operators:
    from mita.vend.operators import Operators

    from .headend import runtime_of

    runtime = runtime_of(args)
    return Operators(runtime.engine, runtime.clock)


def add_user(args: argparse.Namespace) -> None:
    from mita.vend.registry import SYSTEM

    from .dbshell import refusals

    password = _password(args)
    with refusals():
        made = _operators(args).create(SYSTEM, args.name, args.role, password)
    if args.json:
        emit({"id": made["id"], "name": made["name"], "role": made["role"]}, indent=None)
    else:
        say(f"operator {made['name']} ({made['role']}) added: sign in at /console of `mita serve`")


def list_users(args: argparse.Namespace) -> None:
    from .dbshell import refusals
    from .headend import shown

    with refusals():
        rows = _operators(args).list()
    if args.json:
        emit([{k: shown(v) for k, v in row.items()} for row in rows], indent=None)
        return
    for row in rows:
        state = "revoked" if row["revoked_at"] else "active"
        say(f"{row['name']}\t{row['role']}\t{state}\tlast sign-in {shown(row['last_login_at']) or 'never'}")


def set_password(args: argparse.Namespace) -> None:
    from mita.vend.registry import SYSTEM

    from .dbshell import refusals

    password = _password(args)
    with refusals():
        _operators(args).set_password(SYSTEM, args.name, password)
    note(f"{args.name}: new password set; their sessions ended")
