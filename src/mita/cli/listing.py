"""What the staff's reading commands share (``mita vends``, ``mita report``, ``mita admin list-keys``): time
options, page sizes, and aligned plain-text tables.

Defining the options imports nothing beyond the standard library's :mod:`argparse` (start-up time): times are
parsed with :mod:`datetime` when the option is read. A table is plain text, one row a line, its columns aligned:
cheap to print and to read in a terminal, and ``--json`` is there for scripts.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Sequence

from .command import say

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    import datetime as dt
    from typing import Any

#: The service's largest page (``mita.vend.listings.MAX_PAGE``): --limit is refused above it, not cut short.
MAX_LIMIT = 500
#: How a time is written on the command line; without an offset it is the utility's wall clock.
TIME_FORMAT = "YYYY-MM-DD[THH:MM[:SS]][+HH:MM]"


def when(text: str) -> dt.datetime:
    """An option's time: ISO 8601, a date alone meaning its midnight; without an offset, the utility's wall clock
    (the API asks for an offset: a person at the utility's terminal types its local time)."""
    import datetime

    try:
        return datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (write {TIME_FORMAT})") from None


def day(text: str) -> dt.date:
    import datetime

    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (write YYYY-MM-DD)") from None


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def page_size(text: str) -> int:
    value = positive(text)
    if value > MAX_LIMIT:
        raise argparse.ArgumentTypeError(f"at most {MAX_LIMIT} (got {value})")
    return value


def add_period(parser: argparse.ArgumentParser, what: str) -> None:
    """``--since`` (included) and ``--until`` (excluded)."""
    parser.add_argument(
        "--since",
        type=when,
        metavar="TIME",
        help=f"{what} from this time on, included: {TIME_FORMAT}; no offset: the utility's clock.",
    )
    parser.add_argument("--until", type=when, metavar="TIME", help=f"{what} before this time (excluded).")  # fmt: skip


def every_page(fetch: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """Every item of a paged answer (``{"items", "next"}``), as one answer of the same shape (``next``: None)."""
    items: list[Any] = []
    after = None
    while True:
        page = fetch(after)
        items += page["items"]
        after = page["next"]
        if after is None:
            return {"items": items, "next": None}


def show_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], right: Iterable[str] = ()) -> None:
    """Rows under a header, each column as wide as its widest cell (``None`` shows as ``-``); the columns named
    in ``right`` (numbers) are aligned right."""
    cells = [list(columns)] + [["-" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    numeric = {columns.index(name) for name in right}
    for row in cells:
        line = "  ".join(cell.rjust(widths[i]) if i in numeric else cell.ljust(widths[i]) for i, cell in enumerate(row))
        say(line.rstrip())
