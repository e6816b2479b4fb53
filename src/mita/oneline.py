"""Python's warnings as log records of one line each, in every process Mita runs (``mita serve``, the workers).

Python writes a warning (psycopg's on a connection left open, a library's deprecation) raw on standard error, on
two lines: the message, then the warning's source line. A log collector takes the second line for a record of its
own, in no format at all. :func:`log_warnings` makes each warning a record of the ``py.warnings`` logger, written
``<Category>: <message> (<file>:<line>)`` by whichever handler the process set up, in its format (JSON lines under
``mita serve --log-format json``).

It is a top-level module of the standard library only because both shells need it: :mod:`mita.api.logs` for the
server, and :mod:`mita.cli`'s workers, which must not import :mod:`mita.api` for it (that loads FastAPI: a
second more at each worker's start).
"""

from __future__ import annotations

import logging
import warnings


def one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """:func:`warnings.formatwarning` on one line, ``<Category>: <message> (<file>:<line>)``: Python's own adds
    the warning's source line below it, a second line in the log."""
    return f"{category.__name__}: {message} ({filename}:{lineno})"


def log_warnings() -> None:
    """From now on, Python's warnings go to the ``py.warnings`` logger, one line each (calling it again changes
    nothing). The warnings filters still decide which warnings are shown, as ``-W`` or ``PYTHONWARNINGS`` say."""
    warnings.formatwarning = one_line_warning
    logging.captureWarnings(True)
