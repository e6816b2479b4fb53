"""Vending keys over their life: import or generate, rotate (KRN), expire, limit, and their history.

The database holds what is known about each key (keystore, handle, sealed
blob for the software keystore, KCV, KEN, issued-until date, credit limit and
what was issued under it, status); the key itself is the keystore's. A key is
``pending`` once imported, ``active`` while its supply group vends under it,
``retired`` once a newer KRN took over (it still encrypts the key change
tokens that move meters off it, but issues no credit) and ``destroyed`` when
its material is gone.

Expiry is two things (SPEC.md §6.6): the KEN, which the meters enforce on
every TID (a token whose ``TID >> 16`` exceeds it is refused), and the
issued-until date, which this system enforces. Both warn ``WARN_DAYS`` ahead
and stop hard after.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import threading
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from mita import sts
from mita.keys.software import SoftwareKeyStore
from mita.keys.store import Derivation, KeyStore, StoredKey, VendingKey
from mita.sealing import KeyStoreError
from mita.settings import HsmSettings, Settings

from .audit import write_audit
from .errors import VendError
from .lifecycles import VENDING_KEY, KeyStatus
from .schema import audit, supply_groups, vending_keys

IMPORT_FORMAT = "mita.vending-key.v1"
WARN_DAYS = Settings.model_fields["key_warn_days"].default  # MITA_KEY_WARN_DAYS, given by the composition root

_stores: dict[str, KeyStore] = {}
_stores_lock = threading.Lock()


def keystore(name: str) -> KeyStore:
    """The process's keystore of that name: ``software`` always, ``pkcs11`` when MITA_HSM_TOKEN is set."""
    with _stores_lock:
        found = _stores.get(name)
        if found is None:
            if name == "software":
                found = SoftwareKeyStore()
            elif name == "pkcs11":
                hsm = HsmSettings()
                if not hsm.hsm_token:
                    raise KeyStoreError("hsm_not_configured", "set MITA_HSM_TOKEN (and MITA_HSM_PIN) to use an HSM")
                from mita.keys.pkcs11 import Pkcs11KeyStore  # loads the PKCS#11 module only when asked

                found = Pkcs11KeyStore.from_settings(hsm)
            else:
                raise KeyStoreError("unknown_keystore", "keystore is software or pkcs11")
            _stores[name] = found
        return found


def stored_key(row: Any, sgc: str) -> StoredKey:
    return StoredKey(row.keystore, sgc, row.krn, row.dkga, row.kcv, row.handle, row.sealed)


@dataclass(frozen=True)
class KeyInfo:
    """What a vend needs to know about the key it vends under."""

    id: int
    dkga: int
    status: str
    issued_until: dt.datetime | None
    credit_limit: int | None


class KeyRing:
    """Opened vending keys, per process: a key's material never changes once stored (unique per SGC and KRN)."""

    def __init__(self) -> None:
        self._open: dict[tuple[str, int], VendingKey] = {}
        self._lock = threading.Lock()

    def get(self, conn: Connection, sgc: str, krn: int) -> tuple[KeyInfo, VendingKey]:
        """The key, with its state read now (status and dates change; the material does not)."""
        row = conn.execute(
            select(vending_keys)
            .join(supply_groups, supply_groups.c.id == vending_keys.c.supply_group_id)
            .where(supply_groups.c.sgc == sgc, vending_keys.c.krn == krn)
        ).first()
        if row is None or row.status == "destroyed":
            raise VendError("no_vending_key", f"supply group {sgc} has no vending key with KRN {krn}")
        info = KeyInfo(row.id, row.dkga, row.status, row.issued_until, row.credit_limit)
        with self._lock:
            opened = self._open.get((sgc, krn))
        if opened is None:
            opened = keystore(row.keystore).open(stored_key(row, sgc))
            with self._lock:
                self._open[(sgc, krn)] = opened
        return info, opened

    def decoder_key(self, conn: Connection, cfg: Any, drn: str, iin: str, fresh: bool = True) -> int:
        """The meter's decoder key under ``cfg``.

        ``fresh=False`` is for the vend's hot path, which has read the key's state with the meter
        already: a key opened before is used without another query.
        """
        with self._lock:
            cached = None if fresh else self._open.get((cfg.sgc, cfg.krn))
        key = cached if cached is not None else self.get(conn, cfg.sgc, cfg.krn)[1]
        return key.decoder_key(sts.MeterNumber(iin, drn), derivation(cfg))


def derivation(cfg: Any) -> Derivation:
    return _derivation(cfg.kt, cfg.sgc, cfg.ti, cfg.krn, cfg.base_date, cfg.ea)


@functools.lru_cache(maxsize=256)
def _derivation(kt: int, sgc: str, ti: int, krn: int, base_date: int, ea: int) -> Derivation:
    """One per key configuration (a supply group's few): every vend derives its meter's key under one."""
    return Derivation(kt, sgc, ti, krn, sts.BaseDate(base_date), sts.EA(ea))


def ken_expiry(ken: int, base_date: int) -> dt.datetime | None:
    """The first minute whose TID a meter with this KEN refuses (None: KEN 255 never expires)."""
    if ken >= 255:
        return None
    return sts.datetime_from_tid((ken + 1) << 16, base_date)


@functools.lru_cache(maxsize=256)
def _key_ends(ken: int, base_date: int, kt: int) -> tuple[dt.datetime | None, dt.datetime]:
    """When a meter's KEN (None: never, or a key type without one) and its base date stop its tokens: fixed by
    the three numbers, and asked by every vend."""
    ends = ken_expiry(ken, base_date) if kt != 0 else None
    return ends, sts.BaseDate(base_date).start + dt.timedelta(minutes=sts.tid.TID_MAX + 1)


def expiry_warnings(
    at: dt.datetime, issued_until: dt.datetime | None, ken: int, base_date: int, kt: int, warn_days: int = WARN_DAYS
) -> list[dict[str, str]]:
    """Warnings for a key that stops within ``warn_days`` of ``at``."""
    out = []
    soon = at + dt.timedelta(days=warn_days)
    if issued_until is not None and issued_until <= soon:
        out.append(
            {"code": "key_expiring", "detail": f"the vending key issues no credit after {issued_until.isoformat()}"}
        )
    ends, base_end = _key_ends(ken, base_date, kt)
    if ends is not None and ends <= soon:
        out.append({"code": "ken_expiring", "detail": f"meters refuse tokens issued from {ends.isoformat()} (KEN)"})
    if base_end <= soon:
        out.append({"code": "tid_rollover", "detail": f"base date {base_date} runs out at {base_end.isoformat()}"})
    return out


def check_issuable(info: KeyInfo, at: dt.datetime, sgc: str, krn: int) -> None:
    """Credit may be issued under this key now: the hard stop after its issued-until date."""
    if info.status != "active":
        raise VendError("key_change_required", f"vending key {sgc}/{krn} is {info.status}: change the meter's key")
    if info.issued_until is not None and at > info.issued_until:
        raise VendError(
            "key_expired",
            f"vending key {sgc}/{krn} expired at {info.issued_until.isoformat()}: activate a new KRN and change keys",
        )


# ---------------------------------------------------------------------- lifecycle (admin)


def parse_import(text: str) -> dict[str, Any]:
    """A key file in the documented import format; the caller deletes the file once imported."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        raise VendError("invalid_key_file", "a key file is one JSON object") from None
    if not isinstance(doc, dict) or doc.get("format") != IMPORT_FORMAT:
        raise VendError("invalid_key_file", f'a key file has "format": "{IMPORT_FORMAT}"')
    missing = [k for k in ("sgc", "krn", "dkga", "key") if k not in doc]
    if missing:
        raise VendError("invalid_key_file", f"the key file lacks {', '.join(missing)}")
    return doc


def add_key(
    engine: Engine,
    caller: Any,
    *,
    sgc: str,
    krn: int,
    dkga: int,
    key_hex: str | None = None,
    kcv: str | None = None,
    keystore_name: str = "software",
    ken: int = 255,
    issued_until: dt.datetime | None = None,
    credit_limit: int | None = None,
    at: dt.datetime,
) -> dict[str, Any]:
    """Import (``key_hex``) or generate a key for a supply group; it waits as ``pending`` until activated."""
    caller.require("admin")
    if not 1 <= krn <= 9:
        raise sts.RangeError("KRN must be 1..9")
    if not 0 <= ken <= 255:
        raise sts.RangeError("KEN must be 0..255")
    if credit_limit is not None and credit_limit < 0:
        raise VendError("invalid_amount", "a credit limit cannot be negative")
    store = keystore(keystore_name)
    with engine.begin() as conn:
        group = _group(conn, sgc)
        if conn.execute(
            select(vending_keys.c.id).where(vending_keys.c.supply_group_id == group.id, vending_keys.c.krn == krn)
        ).first():
            raise VendError("conflict", f"supply group {sgc} already has a key with KRN {krn}")
        if key_hex is None:
            stored = store.generate(sgc, krn, dkga)
        else:
            try:
                key = bytes.fromhex(key_hex)
            except ValueError:
                raise sts.FormatError("the vending key must be hexadecimal") from None
            stored = store.put(sgc, krn, dkga, key)
            del key
        if kcv is not None and kcv.lower() != stored.kcv:
            store.remove(stored)
            raise VendError("kcv_mismatch", "the key does not match the key check value given with it")
        try:
            kid = _insert_key(conn, group.id, stored, ken, issued_until, credit_limit, "pending", at)
        except Exception:
            store.remove(stored)  # an HSM object without its database row would block a retry
            raise
        _audit(conn, caller, at, "add_vending_key", sgc, krn=krn, dkga=dkga, keystore=stored.keystore,
               kcv=stored.kcv, ken=ken, generated=key_hex is None)  # fmt: skip
    return {"id": kid, "sgc": sgc, "krn": krn, "dkga": stored.dkga, "kcv": stored.kcv, "keystore": stored.keystore}


def _insert_key(
    conn: Connection,
    group_id: int,
    stored: StoredKey,
    ken: int,
    issued_until: dt.datetime | None,
    credit_limit: int | None,
    status: str,
    at: dt.datetime,
) -> int:
    values = dict(
        supply_group_id=group_id, krn=stored.krn, dkga=stored.dkga, keystore=stored.keystore, handle=stored.handle,
        sealed=stored.sealed, kcv=stored.kcv, ken=ken, issued_until=issued_until, credit_limit=credit_limit,
        credit_issued=0, status=status, created_at=at,
    )  # fmt: skip
    return int(conn.execute(vending_keys.insert().values(**values).returning(vending_keys.c.id)).scalar_one())


def activate_key(
    engine: Engine,
    caller: Any,
    *,
    sgc: str,
    krn: int,
    at: dt.datetime,
    base_date: int | None = None,
    ea: int | None = None,
    kt: int | None = None,
) -> dict[str, Any]:
    """KRN rotation: the supply group vends under this key from now; its meters need a key change first."""
    caller.require("admin")
    with engine.begin() as conn:
        group, row = _key_row(conn, sgc, krn)
        if row.status != KeyStatus.ACTIVE:  # activating the active key again changes nothing
            VENDING_KEY.check(row.status, KeyStatus.ACTIVE, code="conflict")
        new_ea = group.ea if ea is None else int(sts.EA.parse(ea))
        new_base = group.base_date if base_date is None else int(sts.BaseDate.parse(base_date))
        new_kt = group.kt if kt is None else kt
        sts.identity.check_key_params(new_kt, sgc, 1, krn)
        if new_ea == sts.EA.MISTY1 and row.dkga != 4:
            raise VendError("invalid_dkga", "EA11 needs 128-bit keys: use a DKGA04 key")
        if new_ea == sts.EA.DEA and row.dkga == 4:
            raise VendError("invalid_dkga", "DKGA04 is defined for EA07 and EA11 only")
        old = group.krn
        if old != krn:  # a destroyed key stays destroyed (its material is gone)
            conn.execute(
                update(vending_keys)
                .where(
                    vending_keys.c.supply_group_id == group.id,
                    vending_keys.c.krn == old,
                    vending_keys.c.status != "destroyed",
                )
                .values(status="retired")
            )
        conn.execute(update(vending_keys).where(vending_keys.c.id == row.id).values(status="active"))
        conn.execute(
            update(supply_groups)
            .where(supply_groups.c.id == group.id)
            .values(
                krn=krn, ea=new_ea, base_date=new_base, kt=new_kt, dkga=row.dkga, ken=row.ken, vending_key_id=row.id
            )
        )
        _audit(conn, caller, at, "activate_vending_key", sgc, krn=krn, previous_krn=old, base_date=new_base, ea=new_ea,
               kt=new_kt)  # fmt: skip
    return key_entry(engine, at, sgc, krn)


def retire_key(engine: Engine, caller: Any, *, sgc: str, krn: int, at: dt.datetime, destroy: bool = False) -> None:
    """Stop a key issuing credit; ``destroy`` also removes its material (no meter can then be moved off it)."""
    caller.require("admin")
    with engine.begin() as conn:
        group, row = _key_row(conn, sgc, krn)
        if destroy or row.status != KeyStatus.RETIRED:  # retiring a retired key again changes nothing
            VENDING_KEY.check(row.status, KeyStatus.DESTROYED if destroy else KeyStatus.RETIRED, code="conflict")
        if krn == group.krn and not destroy:  # destroying it (a compromised key) stops the group's vends at once
            raise VendError("conflict", "the supply group vends under this key: activate another KRN first")
        conn.execute(
            update(vending_keys)
            .where(vending_keys.c.id == row.id)
            .values(status="destroyed" if destroy else "retired", **({"sealed": b""} if destroy else {}))
        )
        if destroy:
            keystore(row.keystore).remove(stored_key(row, sgc))
        _audit(conn, caller, at, "destroy_vending_key" if destroy else "retire_vending_key", sgc, krn=krn)


def key_status(
    engine: Engine, at: dt.datetime, sgc: str | None = None, warn_days: int = WARN_DAYS
) -> list[dict[str, Any]]:
    """Every key (of one supply group) with its expiry, credit used and warnings; never the key."""
    q = (
        select(
            vending_keys,
            supply_groups.c.sgc,
            supply_groups.c.base_date,
            supply_groups.c.kt,
            supply_groups.c.krn.label("group_krn"),
        )
        .join(supply_groups, supply_groups.c.id == vending_keys.c.supply_group_id)
        .order_by(supply_groups.c.sgc, vending_keys.c.krn.desc())
    )
    if sgc is not None:
        q = q.where(supply_groups.c.sgc == sgc)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    out = []
    for r in rows:
        active = r.status == "active"
        warnings = expiry_warnings(at, r.issued_until, r.ken, r.base_date, r.kt, warn_days) if active else []
        if r.issued_until is not None and at > r.issued_until and r.status == "active":
            warnings.insert(0, {"code": "key_expired", "detail": "no credit is issued under this key"})
        live = r.status in ("pending", "active")  # a retired key's dates counted from a base date since replaced
        ends = ken_expiry(r.ken, r.base_date) if live else None
        out.append(
            {
                "sgc": r.sgc, "krn": r.krn, "dkga": r.dkga, "kcv": r.kcv, "keystore": r.keystore, "status": r.status,
                "current": r.krn == r.group_krn, "ken": r.ken,
                "issued_until": r.issued_until.isoformat() if r.issued_until else None,
                "ken_expires": ends.isoformat() if ends else None,
                "credit_limit": r.credit_limit, "credit_issued": r.credit_issued, "warnings": warnings,
            }
        )  # fmt: skip
    return out


def key_entry(engine: Engine, at: dt.datetime, sgc: str, krn: int, warn_days: int = WARN_DAYS) -> dict[str, Any]:
    """One key's entry of :func:`key_status`."""
    for entry in key_status(engine, at, sgc, warn_days):
        if entry["krn"] == krn:
            return entry
    raise VendError("not_found", f"supply group {sgc} has no key with KRN {krn}")


def key_history(engine: Engine, sgc: str) -> list[dict[str, Any]]:
    """The audit entries of a supply group's keys, oldest first."""
    with engine.connect() as conn:
        _group(conn, sgc)
        rows = conn.execute(
            select(audit).where(audit.c.entity == "vending_key", audit.c.entity_id == sgc).order_by(audit.c.id)
        ).all()
    return [{"at": r.at.isoformat(), "actor": r.actor, "action": r.action, **r.detail} for r in rows]


def _key_row(conn: Connection, sgc: str, krn: int) -> tuple[Any, Any]:
    group = _group(conn, sgc)
    row = conn.execute(
        select(vending_keys).where(vending_keys.c.supply_group_id == group.id, vending_keys.c.krn == krn)
    ).first()
    if row is None:
        raise VendError("not_found", f"supply group {sgc} has no key with KRN {krn}")
    return group, row


def _group(conn: Connection, sgc: str) -> Any:
    group = conn.execute(select(supply_groups).where(supply_groups.c.sgc == sgc)).first()
    if group is None:
        raise VendError("not_found", f"no supply group {sgc}")
    return group


def _audit(conn: Connection, caller: Any, at: dt.datetime, action: str, sgc: str, **detail: Any) -> None:
    write_audit(conn, caller, at, action, "vending_key", sgc, **detail)
