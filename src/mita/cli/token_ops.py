"""The JSON operations of ``mita token batch``: one request dict in, one answer dict out.

This is a public contract (scripts depend on the names and shapes), so it
lives apart from the terminal code and is tested on its own. Every failure is
an answer ``{"error": {"code": ..., "message": ...}}``; nothing raises.

Requests carry hex in natural big-endian order, integers as JSON numbers and
digit strings as strings. Where a request leaves out ``rnd``, a random nibble
is drawn here: the engine itself takes randomness only as an argument.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from mita import sts
from mita.sts.tid import parse_issue_time
from mita.sts.tokens import REGISTRY, CurrencyCredit, Token, TransferCredit

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from typing import Any

    Request = dict[str, Any]
    Answer = dict[str, Any]

_HEX = frozenset("0123456789abcdefABCDEF")


class RequestError(sts.StsError):
    """A request that is not shaped like the interface says."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _get(req: Request, name: str, kind: type | tuple[type, ...] = int, default: Any = ...) -> Any:
    if name not in req:
        if default is ...:
            raise RequestError("missing_field", f"field {name!r} is required")
        return default
    value = req[name]
    if isinstance(value, bool) and kind is int:  # JSON true is not a number here
        raise RequestError("invalid_field", f"field {name!r} must be a number")
    if not isinstance(value, kind):
        want = "a string" if kind is str else "a number" if kind is int else "the right type"
        raise RequestError("invalid_field", f"field {name!r} must be {want}")
    return value


def _hex(req: Request, name: str, bits: int | tuple[int, ...]) -> int:
    text = _get(req, name, str)
    sizes = (bits,) if isinstance(bits, int) else bits
    if len(text) * 4 not in sizes:
        want = " or ".join(f"{b // 4}" for b in sizes)
        raise RequestError("invalid_field", f"field {name!r} must be {want} hex digits")
    if not all(c in _HEX for c in text):
        raise RequestError("invalid_field", f"field {name!r} must be hexadecimal")
    return int(text, 16)


def _ea(req: Request) -> sts.EA:
    return sts.EA.parse(_get(req, "ea", (int, str)))


def _digits(req: Request, name: str) -> str:
    value = _get(req, name, (str, int))
    return str(value)


def derive_key(req: Request) -> Answer:
    dkga = _get(req, "dkga")
    if dkga in (1, 3):
        raise sts.UnsupportedError(f"DKGA0{dkga} is not implemented: its cipher step is not public")
    if dkga not in (2, 4):
        raise RequestError("invalid_field", f"dkga must be 2 or 4 (got {dkga})")
    ea = sts.EA.parse(req.get("ea", 7))
    meter = sts.MeterNumber.parse(_digits(req, "drn"), req.get("iin"))
    vk_bits = (64,) if dkga == 2 else (160,)
    vk = _hex(req, "vending_key", vk_bits).to_bytes(vk_bits[0] // 8, "big")
    key = sts.derive_decoder_key(
        dkga,
        vk,
        meter,
        kt=_get(req, "kt"),
        sgc=_digits(req, "sgc"),
        ti=_get(req, "ti"),
        krn=_get(req, "krn"),
        base=sts.BaseDate.parse(req.get("base_date", 1993)),
        ea=ea,
    )
    bits = ea.key_bits if dkga == 4 else 64
    return {"decoder_key": f"{key:0{bits // 4}x}"}


def build_token(req: Request) -> Token:
    """A token value from the request's class, subclass and field names."""
    token_class, subclass = _get(req, "class"), _get(req, "subclass")
    kind = REGISTRY.get((token_class, subclass))
    if kind is None:
        raise sts.UnsupportedError(f"class {token_class} subclass {subclass} is reserved or not supported")
    if kind is TransferCredit:
        return TransferCredit(_get(req, "tid"), _get(req, "amount"), _rnd(req), sts.CreditKind(subclass))
    if kind is CurrencyCredit:
        negative = _get(req, "negative", bool, False)
        return CurrencyCredit(_get(req, "tid"), _get(req, "amount"), negative, sts.CreditKind(subclass))
    values = {}
    for name, *_ in kind.LAYOUT:
        if name == "rnd":
            values[name] = _rnd(req)
        elif name in ("res", "pad", "mfr_code") or (name == "register" and name not in req):
            values[name] = _get(req, name, int, 0xFFFF if name == "register" else 0)
        else:
            values[name] = _get(req, name)
    return kind(**values)


def _rnd(req: Request) -> int:
    # the system's CSPRNG, as secrets.randbelow(16) (one byte mod 16 is uniform), without importing secrets (start-up)
    return int(_get(req, "rnd", int, None) if "rnd" in req else os.urandom(1)[0] % 16)


def _decoder_key(req: Request, ea: sts.EA, required: bool = True) -> int | None:
    if not required and "decoder_key" not in req:
        return None
    return _hex(req, "decoder_key", ea.key_bits)


def encode(req: Request) -> Answer:
    ea = _ea(req)
    token = build_token(req)
    key = _decoder_key(req, ea, required=token.token_class != 1)
    return {"token": sts.encode(token, ea, key or 0)}


def decode(req: Request) -> Answer:
    ea = _ea(req)
    token = sts.decode(_digits(req, "token"), ea, _decoder_key(req, ea, required=False))
    return token.fields()


def key_change(req: Request) -> Answer:
    ea = _ea(req)
    old = _hex(req, "decoder_key", ea.key_bits)
    text = _get(req, "new_key", str)
    new_bits = len(text) * 4
    sections = sts.key_change_set(
        _hex(req, "new_key", (64, 128)),
        key_bits=new_bits,
        ken=_get(req, "ken"),
        krn=_get(req, "krn"),
        kt=_get(req, "kt"),
        ti=_get(req, "ti"),
        ro=_get(req, "ro", int, 0),
        sgc=str(req["sgc"]) if "sgc" in req else None,
    )
    from mita.sts import recipes

    order = recipes.entry_order(ea, new_bits)  # a 64-bit meter takes a 4-token set's 3rd and 4th sections first
    return {"tokens": [sts.encode(sections[i], ea, old) for i in order]}


def tid(req: Request) -> Answer:
    issued = parse_issue_time(_get(req, "issued", str))
    return {"tid": sts.tid_from_datetime(issued, sts.BaseDate.parse(_get(req, "base_date", (int, str))))}


OPS: dict[str, Callable[[Request], Answer]] = {
    "derive_key": derive_key,
    "encode": encode,
    "decode": decode,
    "key_change": key_change,
    "tid": tid,
}


def handle(req: object) -> Answer:
    """Answer one request; every failure becomes an error answer with a stable code."""
    try:
        if not isinstance(req, dict):
            raise RequestError("invalid_request", "each line must be a JSON object")
        op = req.get("op")
        handler = OPS.get(op) if isinstance(op, str) else None
        if handler is None:
            raise RequestError("unknown_op", f"op must be one of {', '.join(OPS)} (got {op!r})")
        return handler(req)
    except sts.StsError as exc:
        return {"error": exc.as_dict()}
    except (ValueError, TypeError, OverflowError) as exc:  # a value of the right type but absurd
        return {"error": {"code": "invalid_field", "message": str(exc)}}
