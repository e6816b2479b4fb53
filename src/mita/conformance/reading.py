"""How the vector files say things: algorithm names, keys, expected token fields, sources.

The files were written for people and several implementations ("EA07 (STA)", fields named
``amount_base_units``, sources as Java test paths). This module is the one place that reads those spellings, so
the runners speak the engine's terms.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

from mita.sts import EA, REGISTRY, CreditKind, CurrencyCredit, Token, TransferCredit

#: The report's names of the engine's algorithms.
EA_NAMES = {EA.STA: "EA07", EA.DEA: "EA09", EA.MISTY1: "EA11"}


def hexint(text: str) -> int:
    return int(text, 16)


def vector_ea(v: dict[str, Any]) -> EA | None:
    """The EA a token vector names ("EA07 (STA)", "EA11 (MISTY1)"); None for class 1 (sent in clear)."""
    name = str(v["encryption_algorithm"])
    for prefix, ea in (("EA07", EA.STA), ("EA11", EA.MISTY1), ("EA09", EA.DEA)):
        if name.startswith(prefix):
            return ea
    if name.startswith("none"):
        return None
    raise ValueError(f"unknown encryption_algorithm {name!r}")


def ea_name(ea: EA | None) -> str | None:
    return None if ea is None else EA_NAMES[ea]


def vector_key(v: dict[str, Any]) -> int | None:
    key = v.get("decoder_key_hex")
    return None if key is None else hexint(key)


def is_sample_tables(v: dict[str, Any]) -> bool:
    """The standard's worked example uses the sample STA tables it prints, not the real ones."""
    return "SAMPLE" in str(v["encryption_algorithm"])


def expected_fields(v: dict[str, Any]) -> dict[str, Any]:
    """The ``Token.fields()`` a compliance or key change vector must decode to, from its ``fields``."""
    c, s, f = v["token_class"], v["subclass"], v["fields"]
    out: dict[str, Any] = {"class": c, "subclass": s}
    if c == 0:
        out |= {"rnd": f["rnd"], "tid": f["tid"], "amount": f["amount_base_units"]}
    elif c == 1 and s == 0:
        out |= {"control": hexint(f["control_36bit_hex"]), "mfr_code": f["mfr_code_8bit"]}
    elif c == 1 and s == 1:
        out |= {"control": hexint(f["control_28bit_hex"]), "mfr_code": f["mfr_code_16bit"]}
    elif s in (0, 6):
        out |= {"rnd": f["rnd"], "tid": f["tid"], ("mpl" if s == 0 else "mppul"): f["value_decoded"]}
    elif s == 1:
        out |= {"rnd": f["rnd"], "tid": f["tid"], "register": hexint(f["register_hex"])}
    elif s == 5:
        out |= {"rnd": f["rnd"], "tid": f["tid"], "pad": hexint(f["pad_hex"])}
    elif s == 3:
        out |= {k: f[k] for k in ("kenho", "krn", "ro", "kt")}
        out |= {"res": f["res_bit50"], "nkho": hexint(f["nkho_hex"])}
    elif s == 4:
        out |= {"kenlo": f["kenlo"], "ti": f["ti"], "nklo": hexint(f["nklo_hex"])}
    elif s == 8:
        out |= {"sgclo": f["sgclo_12bit"], "nkmo2": hexint(f["nkmo2_hex"])}
    elif s == 9:
        out |= {"sgcho": f["sgcho_12bit"], "nkmo1": hexint(f["nkmo1_hex"])}
    else:
        raise ValueError(f"no field mapping for class {c} subclass {s}")
    return out


def make_token(fields: dict[str, Any]) -> Token:
    """The token value a ``fields()`` dict describes (the inverse of ``Token.fields``)."""
    c, s = fields["class"], fields["subclass"]
    kind = REGISTRY[(c, s)]
    values = {k: v for k, v in fields.items() if k not in ("class", "subclass")}
    if kind in (TransferCredit, CurrencyCredit):
        values["kind"] = CreditKind(s)
    return kind(**values)


def token_kind(token_class: int, subclass: int) -> str:
    """The report's kind of a token (a key of clauses.KINDS)."""
    if token_class == 0:
        return "currency_credit" if subclass >= 4 else "credit"
    if token_class == 1:
        return "meter_test"
    return "key_change" if subclass in (3, 4, 8, 9) else "management"


#: A run of 16 or more hex digits in a vector's free text: possibly a key (the standard's worked example quotes
#: its decoder key in the source note), so never copied into a report.
_HEX_RUN = re.compile(r"(0x)?[0-9A-Fa-f]{16,}")
SOURCE_LENGTH = 160


def source_label(source: Any) -> str:
    """A short readable label for a vector's ``source`` (compliance suite and step, or who asserts it), without
    anything that could be a key."""
    label = _HEX_RUN.sub("[hex]", _label(source))
    return label if len(label) <= SOURCE_LENGTH else label[: SOURCE_LENGTH - 3] + "..."


def _label(source: Any) -> str:
    if isinstance(source, str):
        return source
    if not isinstance(source, dict):
        return ""
    path = str(source.get("path") or "")
    test = str(source.get("test") or "")
    if not test and source.get("tests"):
        test = str(source["tests"][0])
    if "#" in test:
        path, test = test.split("#", 1)
    stem = PurePosixPath(path).stem.replace("STSComplianceTests_STS_531_1_", "STS531-1-")
    stem = stem.replace("STSComplianceTests_", "")
    label = ".".join(part for part in (stem.replace("_", "-"), test) if part)
    if label:
        return label
    return str(source.get("primary") or source.get("repo") or "")
