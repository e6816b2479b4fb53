"""What the database commands share at run time: the database URL, the runtime on an existing database, and
turning database failures into typed errors.

Imported by the handlers only (it loads SQLAlchemy and the settings): defining the commands' options does not.
A failure is raised as a typed error that :mod:`mita.cli.main` prints as one line, ``error[<code>]: <message>``
(exit 3 for the database codes, see :mod:`mita.cli.exits`); never a traceback, and never a database driver's text
(it holds the statement's parameters).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, SQLAlchemyError

from mita import compose
from mita.settings import Settings
from mita.vend import database
from mita.vend.errors import VendError, database_failure


def url(option: str | None, default: str = database.DEFAULT_URL) -> str:
    """The database URL: ``--database-url`` (never with a password in it), ``MITA_DATABASE_URL``, or ``default``."""
    if option and _has_password(option):
        raise VendError(
            "secret_on_command_line",
            "--database-url holds a password, which every local user sees in ps and shell history: set "
            "MITA_DATABASE_URL instead, or keep the password in ~/.pgpass or PGPASSFILE (PostgreSQL reads them)",
        )
    if option:
        return option
    settings = Settings()
    return settings.database_url if "database_url" in settings.model_fields_set else default


def _has_password(text: str) -> bool:
    try:
        return make_url(database.normalise_url(text)).password is not None
    except ArgumentError:
        return False  # not a URL at all: the database layer says so, with its own error


def shown(text: str) -> str:
    """The URL for a message: the password hidden."""
    try:
        return make_url(database.normalise_url(text)).render_as_string(hide_password=True)
    except ArgumentError:
        return "(not a database URL)"


@contextmanager
def refusals(tried: str | None = None) -> Iterator[None]:
    """Database failures as typed errors, naming the database ``tried`` (password hidden); the other errors pass
    through: they are typed already."""
    where = f" (database {shown(tried)})" if tried else ""
    try:
        yield
    except DBAPIError as exc:
        failure = database_failure(exc)
        raise VendError(failure.code, failure.message + where) from None
    except ArgumentError:  # not shown: a malformed URL may still hold a password
        raise VendError(
            "database_error", "cannot use the database: --database-url (else MITA_DATABASE_URL) is not a database URL"
        ) from None
    except SQLAlchemyError as exc:  # a missing driver
        raise VendError("database_error", f"cannot use the database ({type(exc).__name__}){where}") from None


def runtime(option: str | None, pool_size: int = 2) -> compose.Runtime:
    """The command's runtime (the composition root's), on a database that exists and is migrated: a forgotten
    ``--database-url`` is an error naming the URL tried, not a new, empty ``./mita.db``."""
    tried = url(option)
    with refusals(tried):
        built = compose.build(database_url=tried, pool_size=pool_size)
        database.check_existing(built.engine)
    return built
