"""One table maps every error code to its HTTP status and title (mita.api.codes); every code the services and
the engine raise is in it, so none answers by accident as a plain 422."""

from __future__ import annotations

import re
from pathlib import Path

from mita.api.codes import CODES, answer

SRC = Path(__file__).resolve().parents[2] / "src" / "mita"
RAISED = re.compile(r'(?:VendError|RecipeError|KeyStoreError|BatchError)\(\s*"([a-z_]+)"|^\s+code = "([a-z_]+)"', re.M)


def raised_codes() -> set[str]:
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        if path.parts[-2] == "cli":  # the command line's own codes (secret files, arguments) never reach HTTP
            continue
        for m in RAISED.finditer(path.read_text(encoding="utf-8")):
            found.add(m.group(1) or m.group(2))
    return found


def test_every_raised_code_has_a_status_and_a_title() -> None:
    codes = raised_codes()
    assert len(codes) > 40  # the scan found them (a broken pattern would pass vacuously)
    assert sorted(codes - CODES.keys()) == []


def test_the_table_is_well_formed() -> None:
    for code, (status, title) in CODES.items():
        assert re.fullmatch(r"[a-z][a-z0-9_]*", code) and 400 <= status <= 599 and title, code
    assert answer("retry").status == 503 and answer("database_refused").status == 500
    assert answer("something_new").status == 422  # unlisted: a refused request
