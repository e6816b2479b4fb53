"""``check``: another system's answers to ``mita token batch`` requests, compared with Mita's, case by case.

Each line is a batch request (the same JSON object ``mita token batch`` reads) plus the other system's answer
under the name Mita's answer has (``ANSWERS``): ``"token"`` for ``encode``, ``"tokens"`` for ``key_change``,
``"decoder_key"`` for ``derive_key``, ``"tid"`` for ``tid`` and ``"fields"`` (an object) for ``decode``. A line
may carry an ``"id"`` (echoed back) and, instead of the answer, ``"error"``: the other system refused.

Each line gets a :class:`CheckResult`: ``agree``, ``disagree`` with the fields that differ (the other token
decoded with the same key: class, subclass, TID, amount, rnd, CRC, or "does not decrypt to a valid token with
this key"), or ``error`` with a stable code when the line cannot be checked (not JSON, no answer, a request
Mita's interface does not accept). Nothing raises; keys are never echoed (decoder keys by fingerprint only).

Mita's side is the batch interface itself, passed in as ``handle`` (``mita.cli.token_ops.handle``): it lives in
the CLI, above this package, so the report compares against exactly what ``mita token batch`` answers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from mita import sts
from mita.conformance.case import fingerprint
from mita.conformance.differences import Difference, explain, has_rnd, section_of, their_rnd

Request = dict[str, Any]
Handler = Callable[[Request], dict[str, Any]]

#: op -> the name of its answer, in Mita's answers and in the other system's lines.
ANSWERS = {"encode": "token", "key_change": "tokens", "derive_key": "decoder_key", "tid": "tid", "decode": "fields"}
#: Codes of a request the batch interface cannot read (the line is at fault, not either system).
REQUEST_CODES = frozenset({"invalid_request", "unknown_op", "missing_field", "invalid_field"})
_HEX = frozenset("0123456789abcdefABCDEF")


@dataclass(frozen=True, slots=True)
class CheckResult:
    line: int  # 1-based line number in the input
    id: Any  # the line's "id", if it has one
    op: str | None
    verdict: str  # "agree" | "disagree" | "error"
    differences: tuple[Difference, ...] = ()
    error: dict[str, str] | None = None  # {"code", "message"} when verdict is "error"
    note: str = ""

    @property
    def agreed(self) -> bool:
        return self.verdict == "agree"


class LineError(Exception):
    """A line that cannot be checked; ``code`` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


@dataclass
class _Line:
    number: int
    data: dict[str, Any]
    op: str
    request: Request
    theirs: Any  # the other system's answer; None when it refused
    refusal: Any = None  # the other system's "error", when it refused
    notes: list[str] = field(default_factory=list)


def check(lines: Iterable[str], handle: Handler) -> Iterator[CheckResult]:
    """A result for every non-blank line of ``lines`` (JSON Lines), in order."""
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        data: Any = None
        try:
            data = _parse(text)
            yield _check_line(_split(number, data), handle)
        except LineError as exc:
            ident = data.get("id") if isinstance(data, dict) else None
            op = data.get("op") if isinstance(data, dict) and isinstance(data.get("op"), str) else None
            yield CheckResult(number, ident, op, "error", error={"code": exc.code, "message": exc.message})
        except Exception as exc:  # a bug here must cost one line, never the run: typed, and said
            error = {"code": "internal_error", "message": f"{type(exc).__name__} while checking this line"}
            yield CheckResult(number, None, None, "error", error=error)


def _parse(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise LineError("invalid_json", f"not JSON: {exc.args[0] if exc.args else exc}") from None
    if not isinstance(data, dict):
        raise LineError("invalid_request", "each line must be a JSON object")
    return data


def _split(number: int, data: dict[str, Any]) -> _Line:
    op = data.get("op")
    if not isinstance(op, str) or op not in ANSWERS:
        raise LineError("unknown_op", f"op must be one of {', '.join(ANSWERS)} (got {op!r})")
    name = ANSWERS[op]
    if name not in data and "error" not in data:
        raise LineError("missing_answer", f"give the other system's answer as {name!r} (or its refusal as 'error')")
    request = {k: v for k, v in data.items() if k not in (name, "id", "error")}
    if op == "decode":  # the token to decode is the request's own field ("fields" is the answer)
        request["token"] = data.get("token")
    if name in data:
        return _Line(number, data, op, request, data[name])
    return _Line(number, data, op, request, None, refusal=data["error"])


def _result(line: _Line, differences: list[Difference]) -> CheckResult:
    verdict = "disagree" if differences else "agree"
    note = "; ".join(line.notes)
    return CheckResult(line.number, line.data.get("id"), line.op, verdict, tuple(differences), None, note)


def _check_line(line: _Line, handle: Handler) -> CheckResult:
    if line.op == "encode" and line.refusal is None:
        _borrow_rnd(line)
    ours = handle(line.request)
    error = ours.get("error")
    if isinstance(error, dict):
        code = str(error.get("code"))
        if code in REQUEST_CODES:
            raise LineError(code, f"Mita's batch interface cannot read the request: {error.get('message')}")
        if line.refusal is not None:
            line.notes.append(f"both refuse (Mita: {code}; the other system: {_refusal_code(line.refusal)})")
            return _result(line, [])
        return _result(line, [Difference("refusal", f"refused ({code}): {error.get('message')}", _theirs(line))])
    if line.refusal is not None:
        answer = ours.get(ANSWERS[line.op], ours)
        return _result(line, [Difference("refusal", _ours(line.op, answer), _theirs(line))])
    compare = {"encode": _encode, "key_change": _key_change, "derive_key": _derive_key, "tid": _tid, "decode": _decode}
    return _result(line, compare[line.op](line, ours))


def _refusal_code(refusal: Any) -> str:
    code = refusal.get("code") if isinstance(refusal, dict) else refusal
    return str(code)


def _theirs(line: _Line) -> Any:
    if line.refusal is not None:
        return f"refused ({_refusal_code(line.refusal)})"
    if line.op == "derive_key" and isinstance(line.theirs, str):
        return _key_text(line.theirs)
    return line.theirs


def _ours(op: str, value: Any) -> Any:
    return _key_text(value) if op == "derive_key" and isinstance(value, str) else value


def _key_text(hex_text: str) -> str:
    if not hex_text or not set(hex_text) <= _HEX:
        return "not a hex key"
    return fingerprint(int(hex_text, 16), len(hex_text) * 4)


def _ea_and_key(request: Request) -> tuple[sts.EA, int | None]:
    """The EA and decoder key of a request the batch interface has accepted (so both parse)."""
    ea = sts.EA.parse(request.get("ea"))
    key = request.get("decoder_key")
    return ea, int(key, 16) if isinstance(key, str) and key and set(key) <= _HEX else None


def _borrow_rnd(line: _Line) -> None:
    """A request without ``rnd`` leaves the random nibble to the vendor: take the other token's, so that the
    tokens can agree (the nibble is still compared whenever the request gives one)."""
    req = line.request
    if "rnd" in req or not has_rnd(req.get("class"), req.get("subclass")):
        return
    try:
        ea, key = _ea_and_key(req)
    except sts.StsError:
        return
    rnd = their_rnd(line.theirs, ea, key)
    if rnd is not None:
        req["rnd"] = rnd
        line.notes.append(f"the request gives no rnd: the other token's ({rnd}) was used")


def _token_text(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:020d}"
    if not isinstance(value, str):
        raise LineError("invalid_answer", "a token must be given as a string of 20 digits")
    return value.replace(" ", "").replace("-", "")


def _encode(line: _Line, ours: dict[str, Any]) -> list[Difference]:
    theirs = _token_text(line.theirs)
    if ours["token"] == theirs:
        return []
    ea, key = _ea_and_key(line.request)
    return explain(ours["token"], theirs, ea, key)


def _key_change(line: _Line, ours: dict[str, Any]) -> list[Difference]:
    if not isinstance(line.theirs, list):
        raise LineError("invalid_answer", "'tokens' must be a list of 20-digit tokens")
    theirs = [_token_text(t) for t in line.theirs]
    mine: list[str] = ours["tokens"]
    if theirs == mine:
        return []
    if sorted(theirs) == sorted(mine):
        line.notes.append("the same tokens in another order (a meter takes a set in any order)")
        return []
    ea, key = _ea_and_key(line.request)
    found: list[Difference] = []
    if len(theirs) != len(mine):
        found.append(Difference("tokens", f"{len(mine)} tokens", f"{len(theirs)} tokens"))
    by_section = {section_of(t, ea, key): t for t in theirs}
    unmatched = [t for t in theirs if t not in mine]
    for i, token in enumerate(mine):
        if token in theirs:
            continue
        other = by_section.get(section_of(token, ea, key))
        if other is None or other in mine:
            other = unmatched.pop(0) if unmatched else None
        elif other in unmatched:
            unmatched.remove(other)
        if other is None:
            found.append(Difference("tokens", token, "missing", i))
        else:
            found += explain(token, other, ea, key, i)
    return found


def _derive_key(line: _Line, ours: dict[str, Any]) -> list[Difference]:
    theirs = line.theirs
    if not isinstance(theirs, str):
        raise LineError("invalid_answer", "'decoder_key' must be a hex string")
    if theirs.lower() == ours["decoder_key"]:
        return []
    return [Difference("decoder_key", _key_text(ours["decoder_key"]), _key_text(theirs.lower()))]


def _tid(line: _Line, ours: dict[str, Any]) -> list[Difference]:
    theirs = line.theirs
    if not isinstance(theirs, int) or isinstance(theirs, bool):
        raise LineError("invalid_answer", "'tid' must be a number")
    return [] if theirs == ours["tid"] else [Difference("tid", ours["tid"], theirs)]


def _decode(line: _Line, ours: dict[str, Any]) -> list[Difference]:
    theirs = line.theirs
    if not isinstance(theirs, dict):
        raise LineError("invalid_answer", "'fields' must be an object, as mita token batch answers a decode")
    names = list(ours) + [k for k in theirs if k not in ours]
    return [Difference(n, ours.get(n), theirs.get(n)) for n in names if ours.get(n) != theirs.get(n)]
