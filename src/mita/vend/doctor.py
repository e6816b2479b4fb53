"""The token doctor over the database: why one of the utility's meters would take or refuse a token.

The reasoning is :mod:`mita.meter.doctor` (pure); this job gives it what only the database knows:

- the meter as it left the workshop: the configuration before its first installed key change (or its current one),
  with that configuration's decoder key from the keyring;
- what the meter is assumed to have entered since, in order: every token the meter was issued (but those of
  reversed vends, never handed over) and the sets of the key changes it installed (``key_changes`` rows confirmed),
  each at the time it was made; a virtual meter entering them is the meter's state, so ``used`` and ``old`` are
  the meter model's answers, not a second copy of its rules;
- the keys a token may have been made under instead: the meter's previous configurations, and its pending one;
- the tokens issued to the meter, by their digits: the vend that issued one (a typed or a corrected token), and
  the fixes of a mistyped token that are real tokens.

Without a meter number the doctor takes a decoder key and its algorithm, and answers for a fresh meter holding it.
Admins and operators only (it shows what was sold to whom); it changes nothing, so nothing is audited.
No key leaves this module: answers hold configurations (SGC, KRN, base date...), never a key.
"""

from __future__ import annotations

import copy
import datetime as dt
import re
from typing import Any

from sqlalchemy import Connection, select

from mita import sts
from mita.meter import Meter, doctor
from mita.sts.recipes import KeyConfig

from .callers import Caller
from .desk import Desk
from .errors import VendError
from .lifecycles import KEY_CHANGE
from .provision import default_profile
from .schema import key_changes, tokens, vendors, vends
from .walltime import with_offset

_HEX = re.compile(r"[0-9a-fA-F]+")


def parse_decoder_key(text: str, ea: int) -> int:
    """A decoder key given as hex, for algorithm ``ea``; the error never holds the key or a part of it."""
    algorithm = sts.EA.parse(ea)
    digits = algorithm.key_bits // 4
    key = "".join(str(text).split())
    if len(key) != digits or not _HEX.fullmatch(key):
        raise VendError("invalid_decoder_key", f"an EA{int(algorithm):02d} decoder key is {digits} hex digits")
    return int(key, 16)


def by_key(token: str, decoder_key: str, ea: int, at: dt.datetime, base_date: int | None = None) -> dict[str, Any]:
    """The doctor's answer for a fresh meter holding ``decoder_key`` (hex) under ``ea``: no database, no history
    (``mita token doctor --decoder-key-file`` answers with it on its own)."""
    key = parse_decoder_key(decoder_key, ea)
    bd = None if base_date is None else int(sts.BaseDate.parse(base_date))
    out = doctor.diagnose(token, doctor.key_meter(ea, key, token), at, base_date=bd)
    return {"meter": None, "meter_key": None, **out.to_dict(with_offset)}


def _config(doc: Any) -> KeyConfig | None:
    """The configuration a key change row holds (None: a row without one, as a planned row)."""
    try:
        return KeyConfig.from_mapping(doc)
    except (KeyError, TypeError):
        return None


def _label(role: doctor.KeyRole, cfg: KeyConfig) -> str:
    return f"the {role.value} key (SGC {cfg.sgc} KRN {cfg.krn}, base date {cfg.base_date})"


class TokenDoctor(Desk):
    def doctor(
        self,
        caller: Caller,
        token: str,
        drn: str | None = None,
        decoder_key: str | None = None,
        ea: int | None = None,
        base_date: int | None = None,
    ) -> dict[str, Any]:
        """Why meter ``drn`` (or a meter holding ``decoder_key`` under ``ea``) would take or refuse ``token``.

        ``base_date`` (key mode only): the base date the meter's TIDs count from, to show a TID as a date
        (default: the one in use now); a meter of the database has its own.
        """
        caller.require("admin", "operator")
        at = self.clock()
        if drn is not None:
            if decoder_key is not None or ea is not None or base_date is not None:
                raise VendError("invalid_request", "give a meter number, or a decoder key and its algorithm: not both")
            return self._of_meter(str(token), drn, at)
        if decoder_key is None or ea is None:
            raise VendError("invalid_request", "give a meter number, or a decoder key and its algorithm (ea)")
        return by_key(str(token), decoder_key, ea, at, base_date)

    # ------------------------------------------------------------------ a meter of the database

    def _of_meter(self, token: str, drn: str, at: dt.datetime) -> dict[str, Any]:
        with self.engine.connect() as conn:
            meter = self._meter(conn, drn)
            current = self.current_config(meter, self._group(conn, meter.supply_group_id))
            changes = conn.execute(
                select(key_changes).where(key_changes.c.meter_id == meter.id).order_by(key_changes.c.id)
            ).all()
            installed = [c for c in changes if c.status == "confirmed" and c.tokens and _config(c.from_key)]
            pending = [_config(c.to_key) for c in changes if c.status in KEY_CHANGE.open and c.status != "planned"]
            if meter.pending_key:
                pending.insert(0, KeyConfig.from_mapping(meter.pending_key))
            previous = [_config(c.from_key) for c in reversed(installed)]
            keys = self._keys(conn, meter, [current, *previous, *pending])
            sold = conn.execute(
                select(
                    tokens.c.digits, tokens.c.kind, tokens.c.units, tokens.c.created_at, tokens.c.id,
                    vends.c.id.label("vend"), vends.c.kind.label("vend_kind"), vends.c.amount, vends.c.status,
                    vendors.c.name.label("vendor"),
                )
                .select_from(tokens.join(vends, vends.c.id == tokens.c.vend_id).outerjoin(
                    vendors, vendors.c.id == vends.c.vendor_id))
                .where(tokens.c.meter_id == meter.id)
                .order_by(tokens.c.created_at, tokens.c.id)
            ).all()  # fmt: skip
        if keys.get(current) is None:
            raise VendError("no_vending_key", f"the vending key of meter {meter.drn}'s configuration cannot be opened")
        issued = {
            t.digits: doctor.Issued(
                t.created_at, t.kind, int(t.units), t.vend, t.vend_kind, int(t.amount), t.vendor, t.status == "reversed"
            )
            for t in sold
        }
        for c in changes:  # a campaign's sets are in key_changes only
            for digits in c.tokens or ():
                issued.setdefault(
                    digits, doctor.Issued(c.issued_at or c.created_at, "key_change", campaign=c.campaign_id)
                )
        # what the meter entered: tokens handed over (not reversed), and the sets of the changes it installed
        entered = [(t.created_at, 1, t.id, t.digits) for t in sold if t.kind != "key_change" and t.status != "reversed"]
        entered += [(c.issued_at or c.created_at, 0, c.id, d) for c in installed for d in c.tokens]
        entries = [(digits, when) for when, _, _, digits in sorted(entered)]
        first = _config(installed[0].from_key) if installed else current
        start = self._start(meter, current, first, keys, entries)
        if start is None:  # the history does not lead to the current key: the meter as it is, tokens only
            start = Meter.create(**_create_args(meter, current, keys[current], current))
            entries = [(t.digits, t.created_at) for t in sold if t.kind != "key_change" and t.status != "reversed"]
        others = [
            doctor.KeyOption(role, cfg.ea, key, cfg.base_date, _label(role, cfg))
            for role, configs in ((doctor.KeyRole.PREVIOUS, previous), (doctor.KeyRole.PENDING, pending))
            for cfg in dict.fromkeys(configs)
            if cfg is not None and cfg != current and (key := keys.get(cfg)) is not None
        ]
        out = doctor.diagnose(
            token, start, at, entries=entries, base_date=current.base_date, others=others, issued=issued
        )
        return {"meter": meter.drn, "meter_key": current.as_dict(), **out.to_dict(with_offset)}

    def _keys(self, conn: Connection, meter: Any, configs: list[KeyConfig | None]) -> dict[KeyConfig, int | None]:
        """The decoder key of each configuration, None where its vending key cannot be opened (destroyed, say)."""
        out: dict[KeyConfig, int | None] = {}
        for cfg in configs:
            if cfg is None or cfg in out:
                continue
            try:
                out[cfg] = self._decoder_key(conn, meter, cfg)
            except sts.StsError:
                out[cfg] = None
        return out

    @staticmethod
    def _start(
        meter: Any,
        current: KeyConfig,
        first: KeyConfig | None,
        keys: dict[KeyConfig, int | None],
        entries: list[tuple[str, dt.datetime]],
    ) -> Meter | None:
        """The meter before its first installed key change, if entering the history brings it to its current key
        (None if not: a vending key gone, or a change confirmed that the history does not hold)."""
        key = None if first is None else keys.get(first)
        if first is None or key is None:
            return None
        start = Meter.create(**_create_args(meter, first, key, current))
        probe = doctor.replay(Meter(copy.deepcopy(start.state)), entries)
        return start if probe.state.decoder_key == keys[current] else None


def _create_args(meter: Any, cfg: KeyConfig, key: int | None, current: KeyConfig) -> dict[str, Any]:
    """A virtual meter on ``cfg``, with the profile such a meter gets (an EA11 one if it is or was ever on EA11)."""
    assert key is not None
    ea = int(sts.EA.MISTY1) if int(sts.EA.MISTY1) in (cfg.ea, current.ea) else cfg.ea
    return {
        "drn": meter.drn, "iin": meter.iin, "ea": cfg.ea, "decoder_key": key, "sgc": cfg.sgc, "ti": cfg.ti,
        "krn": cfg.krn, "kt": cfg.kt, "ken": cfg.ken, "profile": default_profile(ea, meter.utility),
    }  # fmt: skip
