"""``mita conformance``: the STS vectors shipped with Mita, run through its engine, as a report anyone can read;
``mita conformance check FILE.jsonl``: another system's tokens compared with Mita's, line by line.

The work is :mod:`mita.conformance` (pure, below the shells); this module reads options, writes files and picks
the exit code: 0 when every case passes (every line agrees), 4 (``check_failed``) when a case fails or a line
disagrees, 1 when lines could not be checked (and none disagreed) or a file cannot be read or written.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from . import exits
from .command import Parser, fail, note, report, say
from .options import add_json

if TYPE_CHECKING:
    from mita.conformance import Report

REPORT_HELP = """Run every STS vector shipped with Mita through its engine and report.

Cases by kind (credit, management, key change, key derivation, cipher, CRC, TID, amount...), by encryption
algorithm (EA07, EA09, EA11) and by key derivation (DKGA02, DKGA04), each with the IEC 62055-41 clauses it
exercises; a failing case shows what was expected and what Mita computed. Keys appear only by fingerprint.

Exit 0 when every case passes, 4 (check_failed) when one fails."""

CHECK_HELP = """Compare another system's answers with Mita's, line by line.

Each line of FILE (JSON Lines; - for standard input) is a `mita token batch` request plus the other system's
answer under the name of Mita's answer: "token" (encode), "tokens" (key_change), "decoder_key" (derive_key),
"tid" (tid) or "fields" (decode), or "error" if it refused. An "id" is echoed back. For a token that differs,
the other token is decoded with the same key and the differing fields are named (class, subclass, tid, amount,
rnd, crc), or it "does not decrypt to a valid token with this key". A request without "rnd" takes the other
token's random nibble.

Exit 0 when every line agrees, 4 (check_failed) when one disagrees, 1 when lines could not be checked."""


def add_commands(parser: argparse.ArgumentParser) -> None:
    parser.description = REPORT_HELP
    parser.set_defaults(handler=report_command)
    add_json(parser)
    parser.add_argument("--html", metavar="FILE", type=Path, help="Also write the report as one HTML page to FILE.")
    parser.add_argument(
        "--out",
        metavar="DIR",
        type=Path,
        help="Write conformance.json and conformance.html into DIR (made if need be).",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)
    check = commands.add_parser("check", help=CHECK_HELP.split("\n", 1)[0], description=CHECK_HELP)
    check.set_defaults(handler=check_command)
    check.add_argument("file", metavar="FILE.jsonl", help="JSON Lines: requests with the other system's answers.")
    add_json(check)


def _write(path: Path, text: str) -> None:
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        fail("file_unwritable", f"cannot write {path}: {exc.strerror or type(exc).__name__}")


def _summary_text(report: Report) -> list[str]:
    s = report.summary
    lines = [f"{s.total} cases: {s.passed} pass, {s.failed} fail ({len(report.excluded)} shipped entries excluded)"]
    for title, tallies in (
        ("kind", report.by_kind()),
        ("algorithm", report.by_algorithm()),
        ("key derivation", report.by_key_derivation()),
    ):
        lines.append(f"by {title}:")
        for name, t in tallies.items():
            lines.append(f"  {name:<16} {t.passed:>5} / {t.total}" + (f"  {t.failed} FAIL" if t.failed else ""))
    for case in report.failures:
        lines.append(f"FAIL {case.id} ({case.kind}; {', '.join(case.clauses)})")
        lines += [f"  {f.check}: expected {f.expected}, got {f.got}" for f in case.failures]
    return lines


def report_command(args: argparse.Namespace) -> int:
    from mita.conformance import render_html, render_json, run_report
    from mita.conformance.vectors import VectorsMissingError

    try:
        result = run_report()
    except VectorsMissingError as exc:  # a broken install: the package's data files are gone
        fail("vectors_missing", str(exc))
    if args.out is not None:
        try:
            args.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            fail("file_unwritable", f"cannot make {args.out}: {exc.strerror or type(exc).__name__}")
        _write(args.out / "conformance.json", render_json(result))
        _write(args.out / "conformance.html", render_html(result))
        note(f"wrote {args.out / 'conformance.json'} and {args.out / 'conformance.html'}")
    if args.html is not None:
        _write(args.html, render_html(result))
        note(f"wrote {args.html}")
    if args.json:
        sys.stdout.write(render_json(result))
    else:
        for line in _summary_text(result):
            say(line)
    if result.passed:
        return exits.OK
    s = result.summary
    report("conformance_failed", f"{s.failed} of {s.total} conformance cases fail", json_mode=False)
    return exits.CHECK_FAILED


def check_command(args: argparse.Namespace) -> int:
    from mita.conformance import check, check_summary, render_check_json, render_check_text

    from .token_ops import handle

    try:
        text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        fail("file_unreadable", f"cannot read {args.file}: {reason}")
    results = list(check(text.splitlines(), handle))
    sys.stdout.write(render_check_json(results) if args.json else render_check_text(results))
    counts = check_summary(results)
    if counts["disagree"]:
        report("disagreement", f"{counts['disagree']} of {counts['total']} lines disagree", json_mode=False)
        return exits.CHECK_FAILED
    if counts["error"]:
        report(
            "unreadable_lines", f"{counts['error']} of {counts['total']} lines could not be checked", json_mode=False
        )
        return exits.REFUSED
    return exits.OK
