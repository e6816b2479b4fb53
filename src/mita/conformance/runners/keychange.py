"""key_change.json: every key change section, and the sets they form.

A section decodes under the OLD key to its listed fields and re-encodes to the same token. Sections of one
compliance step (same suite, step and old key) form a set; a complete set (2 sections for EA07, 4 for EA11)
assembles, in any order, to a new key that a DKGA vector derives, and re-encodes section by section. The EA11
steps whose 3rd and 4th sections the vectors leave out are checked for what they hold: the key's two ends.
"""

from __future__ import annotations

import functools
import random
import re
from collections import defaultdict
from collections.abc import Iterator
from typing import Any, cast

from mita import sts
from mita.conformance.case import Checks, Excluded, Meta, run_case, show_hex, show_key
from mita.conformance.reading import ea_name, expected_fields, hexint, make_token, source_label, vector_ea
from mita.conformance.vectors import reproduced
from mita.sts import EA
from mita.sts.keychange import KeySection
from mita.sts.tokens import to_block

from .source import Result, Source

FILE = "key_change.json"
M32 = 0xFFFFFFFF


def run(source: Source) -> Iterator[Result]:
    sections = source.load(FILE)["vectors"]
    for i, v in enumerate(sections):
        if not reproduced(v):
            yield Excluded(f"{FILE}#vectors/{i}", FILE, "vectors", "not reproduced by every implementation")
            continue
        ea = vector_ea(v)
        meta = Meta(
            f"{FILE}#vectors/{i}",
            FILE,
            "vectors",
            "key_change",
            ea_name(ea),
            source.key_derivation(hexint(v["decoder_key_hex"])),
            source_label(v["source"]),
        )
        yield run_case(meta, _section, v)
    for label, group in _groups(sections):
        first = next(iter(group.values()))
        old = hexint(first["decoder_key_hex"])
        meta = Meta(
            f"{FILE}#sets/{label}",
            FILE,
            "sets",
            "key_change_set",
            ea_name(vector_ea(first)),
            source.key_derivation(old),
            label,
            note="" if _complete(group) else "the vectors hold only the 1st and 2nd sections of this set",
        )
        yield run_case(meta, _set, source, group)


def _section(ch: Checks, v: dict[str, Any]) -> None:
    ea, old = vector_ea(v), hexint(v["decoder_key_hex"])
    assert ea is not None
    want = expected_fields(v)
    ch.equal("encode under the old key", lambda: sts.encode(make_token(want), ea, old), v["token"])
    ch.equal("decode under the old key", lambda: sts.decode(v["token"], ea, old).fields(), want)
    ch.equal("data block", lambda: to_block(make_token(want)), hexint(v["data_block_hex"]), show_hex(16))
    ch.equal("re-encode the decoded section", lambda: sts.encode(sts.decode(v["token"], ea, old), ea, old), v["token"])
    ch.holds(
        "a key change section",
        lambda: v["token_class"] == 2 and v["subclass"] in (3, 4, 8, 9),
        "class 2, subclass 3, 4, 8 or 9",
    )


def _groups(sections: list[dict[str, Any]]) -> list[tuple[str, dict[int, dict[str, Any]]]]:
    """Sections of one key change: same compliance file, same step, same old key; one per subclass. Labelled by
    suite and step (a second set of the same step, under another old key, gets a counter, never the key)."""
    groups: dict[tuple[str, str, str], dict[int, dict[str, Any]]] = defaultdict(dict)
    for v in sections:
        if not reproduced(v):
            continue
        found = re.match(r"step\d+", v["source"]["test"])
        step = found.group(0) if found else "?"
        suite = source_label({"path": v["source"]["path"]})
        groups[(suite, step, v["decoder_key_hex"])][v["subclass"]] = v
    out: list[tuple[str, dict[int, dict[str, Any]]]] = []
    seen: dict[str, int] = defaultdict(int)
    for (suite, step, _old), group in groups.items():
        label = f"{suite}.{step}-{ea_name(vector_ea(next(iter(group.values()))))}"
        seen[label] += 1
        out.append((label if seen[label] == 1 else f"{label}-{seen[label]}", group))
    return out


def _complete(group: dict[int, dict[str, Any]]) -> bool:
    ea = vector_ea(next(iter(group.values())))
    return set(group) == ({3, 4} if ea is EA.STA else {3, 4, 8, 9})


def _set(ch: Checks, source: Source, group: dict[int, dict[str, Any]]) -> None:
    first = next(iter(group.values()))
    ea, old = vector_ea(first), hexint(first["decoder_key_hex"])
    assert ea is not None
    f: dict[str, Any] = {}
    for v in group.values():
        f |= {k: x for k, x in expected_fields(v).items() if k not in ("class", "subclass")}
    derived = source.derived_keys
    bits = 128 if ea is EA.MISTY1 else 64
    ends = {(k >> (bits - 32), k & M32) for k, (_, b) in derived.items() if b == bits}
    ch.holds(
        "the key's ends are those of a derived key",
        lambda: (f["nkho"], f["nklo"]) in ends,
        f"NKHO and NKLO are the ends of a {bits}-bit key a DKGA vector derives",
    )
    if not _complete(group):
        return
    expected = _expected_config(group, f)
    decoded = [cast(KeySection, sts.decode(v["token"], ea, old)) for v in group.values()]
    shuffled = random.Random(len(decoded)).sample(decoded, len(decoded))
    for name, order in (("in order", decoded), ("reversed", decoded[::-1]), ("shuffled", shuffled)):
        ch.equal(f"assemble ({name})", functools.partial(sts.assemble, order), expected, _show_config)
    ch.equal(
        "new key is a derived key of the same size",
        lambda: derived.get(expected.key, ("", 0))[1],
        expected.key_bits,
    )

    def encoded() -> list[str]:
        sections = sts.key_change_set(
            expected.key,
            key_bits=expected.key_bits,
            ken=expected.ken,
            krn=expected.krn,
            kt=expected.kt,
            ti=expected.ti,
            ro=expected.ro,
            sgc=expected.sgc,
        )
        return [sts.encode(s, ea, old) for s in sections]

    ch.equal("re-encode the set", encoded, [group[s]["token"] for s in sorted(group)])


def _expected_config(group: dict[int, dict[str, Any]], f: dict[str, Any]) -> sts.NewKeyConfig:
    common = {"ken": f["kenho"] << 4 | f["kenlo"], "krn": f["krn"], "kt": f["kt"], "ti": f["ti"], "ro": f["ro"]}
    if 8 in group:
        key = f["nkho"] << 96 | f["nkmo2"] << 64 | f["nkmo1"] << 32 | f["nklo"]
        return sts.NewKeyConfig(key, 128, sgc=f"{f['sgcho'] << 12 | f['sgclo']:06d}", **common)
    return sts.NewKeyConfig(f["nkho"] << 32 | f["nklo"], 64, **common)


def _show_config(value: Any) -> str:
    """A NewKeyConfig without its key (the key by fingerprint)."""
    if not isinstance(value, sts.NewKeyConfig):
        return str(value)
    key = show_key(value.key_bits)(value.key)
    v = value
    return f"{key}, {v.key_bits} bits, KEN {v.ken}, KRN {v.krn}, KT {v.kt}, TI {v.ti}, RO {v.ro}, SGC {v.sgc}"
