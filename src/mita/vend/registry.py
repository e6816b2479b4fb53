"""Setting up a utility: API keys, vendors, supply groups, tariffs, customers and meters.

Every change is validated here (so the API, the CLI and the demo refuse the
same things) and written with its audit entry in the same transaction.
Vending keys go in sealed and never come out: a supply group shows only the
key's check value.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import Connection, Engine, Table, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from mita import sts
from mita.keys.software import check_vending_key
from mita.sts.identity import check_key_params

from . import limits
from .answers import tariff_from_spec
from .audit import write_audit
from .callers import ROLES, Caller, local_now
from .errors import VendError
from .keyring import keystore
from .lifecycles import METER, MeterStatus
from .schema import (
    api_keys,
    customers,
    ledger,
    meters,
    supply_groups,
    tariff_versions,
    tariffs,
    vending_keys,
    vendors,
)

API_KEY_PREFIX = "mita_"


SYSTEM = Caller(api_key_id=None, name="system", role="admin")


def hash_key(plaintext: str) -> str:
    """API keys are long random strings: a plain SHA-256 is enough to keep them unusable if the table leaks."""
    return hashlib.sha256(plaintext.encode()).hexdigest()


def _text(value: str | None, field: str, longest: int, required: bool = True) -> None:
    """Names go into the database and onto receipts: printable, and as long as their column."""
    if value is None or value == "":
        if required:
            raise VendError("invalid_request", f"{field} is required")
        return
    if len(value) > longest or not value.isprintable():
        raise VendError("invalid_request", f"{field} must be printable text of at most {longest} characters")


def _row(row: Any, hide: tuple[str, ...] = ()) -> dict[str, Any]:
    out = {}
    for k, v in row._mapping.items():
        if k in hide:
            continue
        out[k] = v.isoformat() if isinstance(v, dt.datetime) else v
    return out


def _insert(conn: Connection, table: Table, what: str, **values: Any) -> int:
    try:
        with conn.begin_nested():
            return int(conn.execute(insert(table).values(**values).returning(table.c.id)).scalar_one())
    except IntegrityError:
        raise VendError("conflict", f"{what} already exists or refers to something missing") from None


def page(engine: Engine, table: Table, limit: int = 50, after: int | str | None = None) -> dict[str, Any]:
    """A page of rows in id order; ``next`` is the cursor for the following page."""
    limit = max(1, min(limit, 500))
    q = select(table).order_by(table.c.id).limit(limit + 1)
    if after is not None:
        q = q.where(table.c.id > after)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
    hide = ("key_hash", "sealed")
    items = [_row(r, hide) for r in rows[:limit]]
    return {"items": items, "next": items[-1]["id"] if len(rows) > limit else None}


# ---------------------------------------------------------------------- API keys and vendors


#: (engine, key hash) -> (valid until, caller). Every request is authenticated; a database round trip each


#: time would cost as much as the vend's own work. A revoked key therefore works for at most AUTH_TTL more.


AUTH_TTL = 30.0


_auth_cache: dict[tuple[str, str], tuple[float, Caller]] = {}


def cached_caller(engine: Engine, plaintext: str | None) -> Caller | None:
    """The key's owner if it was authenticated in the last AUTH_TTL seconds (no database work)."""
    if not plaintext:
        return None
    cached = _auth_cache.get((engine.url.render_as_string(hide_password=False), hash_key(plaintext)))
    if cached is not None and cached[0] > time.monotonic():
        return cached[1]
    return None


def authenticate(engine: Engine, plaintext: str | None) -> Caller:
    if not plaintext:
        raise VendError("unauthorized", "an API key is required (header Authorization: Bearer <key>, or X-API-Key)")
    digest = hash_key(plaintext)
    now = time.monotonic()
    where = engine.url.render_as_string(hide_password=False)
    cached = _auth_cache.get((where, digest))
    if cached is not None and cached[0] > now:
        return cached[1]
    with engine.connect() as conn:
        row = conn.execute(select(api_keys).where(api_keys.c.key_hash == digest)).first()
    if row is None or row.revoked_at is not None:
        raise VendError("unauthorized", "this API key is not valid")
    caller = Caller(row.id, row.name, row.role, row.vendor_id)
    if len(_auth_cache) > 10_000:
        _auth_cache.clear()
    _auth_cache[(where, digest)] = (now + AUTH_TTL, caller)
    return caller


def get_vendor(engine: Engine, vendor_id: int) -> dict[str, Any]:
    """A vendor and what it owes: kept on the row for vendors on credit, summed from the ledger for others."""
    out = get_by(engine, vendors, vendors.c.id, vendor_id, "vendor")
    if out["credit_limit"] is None:
        with engine.connect() as conn:
            total = conn.execute(
                select(func.coalesce(func.sum(ledger.c.debit - ledger.c.credit), 0)).where(
                    ledger.c.account == f"vendor:{vendor_id}"
                )
            ).scalar_one()
        out["balance"] = int(total)
    return out


# ---------------------------------------------------------------------- supply groups


def get_supply_group(engine: Engine, sgc: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(select(supply_groups).where(supply_groups.c.sgc == sgc)).first()
        if row is None:
            raise VendError("not_found", f"no supply group {sgc}")
        keys = conn.execute(
            select(
                vending_keys.c.krn,
                vending_keys.c.dkga,
                vending_keys.c.kcv,
                vending_keys.c.status,
                vending_keys.c.keystore,
                vending_keys.c.issued_until,
            )
            .where(vending_keys.c.supply_group_id == row.id)
            .order_by(vending_keys.c.krn)
        ).all()
    out = _row(row)
    current = [k for k in keys if k.krn == row.krn]
    out["key_expiry"] = current[0].issued_until.isoformat() if current and current[0].issued_until else None
    out["vending_keys"] = [
        {"krn": k.krn, "dkga": k.dkga, "kcv": k.kcv, "status": k.status, "keystore": k.keystore} for k in keys
    ]
    return out


# ---------------------------------------------------------------------- tariffs


def get_tariff(engine: Engine, name: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(select(tariffs).where(tariffs.c.name == name)).first()
        if row is None:
            raise VendError("not_found", f"no tariff {name}")
        versions = conn.execute(
            select(tariff_versions)
            .where(tariff_versions.c.tariff_id == row.id)
            .order_by(tariff_versions.c.effective_from)
        ).all()
    out = _row(row)
    out["versions"] = [{"effective_from": v.effective_from.isoformat(), "spec": v.spec} for v in versions]
    return out


# ---------------------------------------------------------------------- customers and meters


def _lookup(conn: Connection, table: Table, column: Any, value: str | None, what: str) -> int | None:
    if value is None:
        return None
    found = conn.execute(select(table.c.id).where(column == value)).scalar()
    if found is None:
        raise VendError("not_found", f"no {what} {value}")
    return int(found)


def get_by(engine: Engine, table: Table, column: Any, value: str | int, what: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(select(table).where(column == value)).first()
    if row is None:
        raise VendError("not_found", f"no {what} {value}")
    return _row(row, ("key_hash", "sealed"))


class Registry:
    """Setting a utility up, on the clock it is given (the composition root's; tests give a fixed one)."""

    def __init__(self, engine: Engine, clock: Callable[[], dt.datetime] = local_now) -> None:
        self.engine = engine
        self.clock = clock

    def _audit(
        self, conn: Connection, caller: Caller, action: str, entity: str, entity_id: object, **detail: Any
    ) -> None:
        write_audit(conn, caller, self.clock(), action, entity, entity_id, **detail)

    def create_api_key(self, name: str, role: str, vendor_id: int | None = None) -> tuple[int, str]:
        """A new key; its plaintext is returned once and stored only hashed."""
        if role not in ROLES:
            raise VendError("invalid_role", f"role must be one of {', '.join(ROLES)}")
        if role == "vendor" and vendor_id is None:
            raise VendError("invalid_role", "a vendor key belongs to a vendor")
        _text(name, "name", limits.NAME)
        plaintext = API_KEY_PREFIX + secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            key_id = _insert(
                conn,
                api_keys,
                "API key",
                name=name,
                role=role,
                key_hash=hash_key(plaintext),
                vendor_id=vendor_id,
                created_at=self.clock(),
            )
            self._audit(conn, SYSTEM, "create_api_key", "api_key", key_id, name=name, role=role, vendor_id=vendor_id)
        return key_id, plaintext

    def create_vendor(self, caller: Caller, name: str, credit_limit: int | None = None) -> dict[str, Any]:
        caller.require("admin")
        _text(name, "name", limits.NAME)
        if credit_limit is not None and credit_limit < 0:
            raise VendError("invalid_amount", "a credit limit cannot be negative")
        with self.engine.begin() as conn:
            vid = _insert(
                conn,
                vendors,
                f"vendor {name}",
                name=name,
                credit_limit=credit_limit,
                balance=0,
                created_at=self.clock(),
            )
            self._audit(conn, caller, "create_vendor", "vendor", vid, name=name, credit_limit=credit_limit)
            return _row(conn.execute(select(vendors).where(vendors.c.id == vid)).one())

    def create_supply_group(
        self,
        caller: Caller,
        *,
        sgc: str,
        name: str,
        vending_key: str,
        krn: int = 1,
        kt: int = 2,
        ea: int = 7,
        dkga: int = 2,
        base_date: int = 2014,
        ken: int = 255,
        key_expiry: dt.datetime | None = None,
        credit_limit: int | None = None,
        keystore_name: str = "software",
    ) -> dict[str, Any]:
        """A supply group with its first vending key, active at once (``key_expiry``: the key's issued-until)."""
        caller.require("admin")
        _text(name, "name", limits.NAME)
        check_key_params(kt, sgc, 1, krn)
        algorithm = sts.EA.parse(ea)
        sts.BaseDate.parse(base_date)
        if dkga not in (2, 4):
            raise VendError("invalid_dkga", "DKGA must be 2 or 4 (DKGA01 is not public)")
        if dkga == 2 and algorithm is sts.EA.MISTY1:
            raise VendError("invalid_dkga", "EA11 needs 128-bit keys: use DKGA04")
        if not 0 <= ken <= 255:
            raise sts.RangeError("KEN must be 0..255")
        try:
            key = bytes.fromhex(vending_key)
        except ValueError:
            raise sts.FormatError("the vending key must be hexadecimal") from None
        check_vending_key(dkga, key)
        store = keystore(keystore_name)
        with self.engine.begin() as conn:
            gid = _insert(
                conn,
                supply_groups,
                f"supply group {sgc}",
                sgc=sgc,
                name=name,
                krn=krn,
                kt=kt,
                ea=int(algorithm),
                dkga=dkga,
                base_date=base_date,
                ken=ken,
                created_at=self.clock(),
            )
            stored = store.put(sgc, krn, dkga, key)
            del key
            try:
                kid = _insert(
                    conn,
                    vending_keys,
                    "vending key",
                    supply_group_id=gid,
                    krn=krn,
                    dkga=dkga,
                    keystore=stored.keystore,
                    handle=stored.handle,
                    sealed=stored.sealed,
                    kcv=stored.kcv,
                    ken=ken,
                    issued_until=key_expiry,
                    credit_limit=credit_limit,
                    credit_issued=0,
                    status="active",
                    created_at=self.clock(),
                )
                conn.execute(update(supply_groups).where(supply_groups.c.id == gid).values(vending_key_id=kid))
                self._audit(
                    conn,
                    caller,
                    "create_supply_group",
                    "supply_group",
                    sgc,
                    krn=krn,
                    kt=kt,
                    ea=ea,
                    dkga=dkga,
                    kcv=stored.kcv,
                    keystore=stored.keystore,
                )
            except Exception:
                store.remove(stored)  # an HSM object without its database row would block a retry
                raise
        return get_supply_group(self.engine, sgc)

    def create_tariff(
        self,
        caller: Caller,
        *,
        name: str,
        currency: str,
        spec: dict[str, Any],
        effective_from: dt.datetime,
        carry_leftover: bool = True,
    ) -> dict[str, Any]:
        caller.require("admin")
        _text(name, "name", limits.NAME)
        tariff_from_spec(spec)  # validates
        if len(currency) != 3 or not currency.isalpha():
            raise VendError("invalid_currency", "currency is a 3-letter ISO 4217 code")
        with self.engine.begin() as conn:
            tid = _insert(
                conn,
                tariffs,
                f"tariff {name}",
                name=name,
                currency=currency.upper(),
                carry_leftover=carry_leftover,
                created_at=self.clock(),
            )
            _insert(
                conn,
                tariff_versions,
                "tariff version",
                tariff_id=tid,
                effective_from=effective_from,
                spec=spec,
                created_at=self.clock(),
            )
            self._audit(conn, caller, "create_tariff", "tariff", name, currency=currency, spec=spec)
        return get_tariff(self.engine, name)

    def add_tariff_version(
        self, caller: Caller, name: str, spec: dict[str, Any], effective_from: dt.datetime
    ) -> dict[str, Any]:
        caller.require("admin")
        tariff_from_spec(spec)
        with self.engine.begin() as conn:
            tid = conn.execute(select(tariffs.c.id).where(tariffs.c.name == name)).scalar()
            if tid is None:
                raise VendError("not_found", f"no tariff {name}")
            _insert(
                conn,
                tariff_versions,
                "a version with that date",
                tariff_id=tid,
                effective_from=effective_from,
                spec=spec,
                created_at=self.clock(),
            )
            self._audit(
                conn, caller, "add_tariff_version", "tariff", name, effective_from=effective_from.isoformat(), spec=spec
            )
        return get_tariff(self.engine, name)

    def create_customer(
        self,
        caller: Caller,
        *,
        account: str,
        name: str,
        phone: str | None = None,
        fbe_eligible: bool = False,
        debt: int = 0,
        debt_rate: str = "0",
    ) -> dict[str, Any]:
        caller.require("admin", "operator")
        _text(account, "account", limits.ACCOUNT)
        _text(name, "name", limits.PERSON)
        _text(phone, "phone", limits.PHONE, required=False)
        try:
            rate = Decimal(debt_rate)
        except InvalidOperation:
            raise VendError("invalid_debt_rate", "debt_rate is a decimal fraction such as 0.25") from None
        if not 0 <= rate <= 1 or debt < 0:
            raise VendError("invalid_debt_rate", "debt_rate must be between 0 and 1, and debt not negative")
        with self.engine.begin() as conn:
            cid = _insert(
                conn,
                customers,
                f"customer {account}",
                account=account,
                name=name,
                phone=phone,
                fbe_eligible=fbe_eligible,
                debt=debt,
                debt_rate=str(rate),
                carried=0,
                refund_balance=0,
                created_at=self.clock(),
            )
            self._audit(conn, caller, "create_customer", "customer", account, fbe_eligible=fbe_eligible, debt=debt)
            return _row(conn.execute(select(customers).where(customers.c.id == cid)).one())

    def create_meter(
        self,
        caller: Caller,
        *,
        drn: str,
        sgc: str,
        customer: str | None = None,
        tariff: str | None = None,
        utility: str = "electricity",
        manufacturer: str = "",
        area: str = "",
        ti: int = 1,
        krn: int | None = None,
        kt: int | None = None,
        ea: int | None = None,
        base_date: int | None = None,
        ken: int | None = None,
    ) -> dict[str, Any]:
        """A meter, by default on its supply group's current key configuration."""
        caller.require("admin", "operator")
        _text(manufacturer, "manufacturer", limits.LABEL, required=False)
        _text(area, "area", limits.LABEL, required=False)
        number = sts.MeterNumber.parse(drn)
        if utility not in ("electricity", "water", "gas"):
            raise VendError("invalid_utility", "utility is electricity, water or gas")
        with self.engine.begin() as conn:
            group = conn.execute(select(supply_groups).where(supply_groups.c.sgc == sgc)).first()
            if group is None:
                raise VendError("not_found", f"no supply group {sgc}")
            cust_id = _lookup(conn, customers, customers.c.account, customer, "customer")
            tariff_id = _lookup(conn, tariffs, tariffs.c.name, tariff, "tariff")
            values = dict(
                krn=group.krn if krn is None else krn,
                kt=group.kt if kt is None else kt,
                ea=group.ea if ea is None else int(sts.EA.parse(ea)),
                base_date=group.base_date if base_date is None else int(sts.BaseDate.parse(base_date)),
                ken=group.ken if ken is None else ken,
            )
            check_key_params(values["kt"], sgc, ti, values["krn"])
            if not 0 <= values["ken"] <= 255:
                raise sts.RangeError("KEN must be 0..255")
            if values["ea"] == sts.EA.MISTY1 and group.dkga != 4:
                raise VendError("invalid_dkga", "an EA11 meter needs a 128-bit key: its supply group must use DKGA04")
            mid = _insert(
                conn,
                meters,
                f"meter {number.drn}",
                drn=number.drn,
                iin=number.iin,
                manufacturer=manufacturer,
                area=area,
                supply_group_id=group.id,
                customer_id=cust_id,
                tariff_id=tariff_id,
                utility=utility,
                ti=ti,
                status="active",
                last_tid=-1,
                created_at=self.clock(),
                **values,
            )
            self._audit(
                conn, caller, "create_meter", "meter", number.drn, sgc=sgc, customer=customer, tariff=tariff, **values
            )
            return _row(conn.execute(select(meters).where(meters.c.id == mid)).one())

    def set_meter_status(self, caller: Caller, drn: str, status: str) -> dict[str, Any]:
        caller.require("admin", "operator")
        if status not in tuple(MeterStatus):
            raise VendError("invalid_status", f"status is {', '.join(MeterStatus)}")
        number = sts.MeterNumber.parse(drn)
        with self.engine.begin() as conn:
            q = select(meters.c.status).where(meters.c.drn == number.drn)
            current = conn.execute(q.with_for_update() if conn.dialect.name != "sqlite" else q).scalar()
            if current is None:
                raise VendError("not_found", f"no meter {number.drn}")
            if current != status:  # setting the status it has changes nothing
                METER.check(current, status, code="conflict")
            conn.execute(update(meters).where(meters.c.drn == number.drn).values(status=status))
            self._audit(conn, caller, "set_meter_status", "meter", number.drn, status=status)
        return get_by(self.engine, meters, meters.c.drn, number.drn, "meter")
