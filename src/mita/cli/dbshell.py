"""What the database commands share: the ``--database-url`` option, and one way to report a refusal.

A refusal is one line on standard error, ``error [code] message``, and exit status 1; never a traceback, and never
a database driver's text (it holds the statement's parameters).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from mita import sts
from mita.settings import Settings
from mita.vend import database
from mita.vend.errors import VendError, database_failure

UrlOpt = Annotated[
    str | None, typer.Option("--database-url", help="SQLAlchemy URL; default MITA_DATABASE_URL or sqlite:///mita.db.")
]


def _url(url: str | None, default: str = database.DEFAULT_URL) -> str:
    """The database URL: ``--database-url`` (never with a password in it), ``MITA_DATABASE_URL``, or ``default``."""
    if url and _has_password(url):
        _fail(
            VendError(
                "secret_on_command_line",
                "--database-url holds a password, which every local user sees in ps and shell history: set "
                "MITA_DATABASE_URL instead, or keep the password in ~/.pgpass or PGPASSFILE (PostgreSQL reads them)",
            )
        )
    if url:
        return url
    settings = Settings()
    return settings.database_url if "database_url" in settings.model_fields_set else default


def _has_password(url: str) -> bool:
    try:
        return make_url(database.normalise_url(url)).password is not None
    except ArgumentError:
        return False  # not a URL at all: the database layer says so, with its own error


def _fail(exc: sts.StsError) -> NoReturn:
    """A typed error as one line on standard error, exit status 1."""
    Console(stderr=True, soft_wrap=True).print(
        f"[bold red]error[/] {escape(f'[{exc.code}]')} {escape(exc.message)}", highlight=False
    )
    raise typer.Exit(1)


@contextmanager
def refusals() -> Iterator[None]:
    """Typed errors and database failures, reported by :func:`_fail`."""
    try:
        yield
    except sts.StsError as exc:
        _fail(exc)
    except DBAPIError as exc:
        _fail(database_failure(exc))
    except SQLAlchemyError as exc:  # a malformed --database-url, a missing driver
        _fail(VendError("database_error", f"cannot use the database ({type(exc).__name__})"))
