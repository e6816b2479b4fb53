"""Setting up a utility: API keys, vendors, supply groups, tariffs, customers and meters.

Every change is validated here (so the API, the CLI and the demo refuse the
same things) and written with its audit entry in the same transaction.
Vending keys go in sealed and never come out: a supply group shows only the
key's check value.
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import Connection, Engine, Table, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from mita import sts
from mita.keys.software import check_vending_key
from mita.sts.identity import check_key_params

from . import apikeys, bounds, imports, limits
from .answers import tariff_from_spec
from .audit import write_audit
from .callers import ROLES, Caller, local_now
from .errors import VendError
from .fields import CUSTOMER_FIELDS, METER_FIELDS, customer_row, meter_key, meter_row, text
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
    vends,
)
from .walltime import wall_clock, with_offset

API_KEY_PREFIX = "mita_"


SYSTEM = Caller(api_key_id=None, name="system", role="admin")


hash_key = apikeys.hash_key


def _row(row: Any, hide: tuple[str, ...] = ()) -> dict[str, Any]:
    out = {}
    for k, v in row._mapping.items():
        if k in hide:
            continue
        out[k] = with_offset(v) if isinstance(v, dt.datetime) else v
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

# Who a key belongs to, cached briefly, and listing keys: :mod:`.apikeys` (named here too, as before).
AUTH_TTL = apikeys.AUTH_TTL
authenticate = apikeys.authenticate
cached_caller = apikeys.cached_caller
list_api_keys = apikeys.list_api_keys


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


def webhook_of_vend(conn: Connection, vend_id: str) -> str | None:
    """The webhook name of the vendor that made a vend (None: none, or not a vendor's vend)."""
    return conn.execute(
        select(vendors.c.webhook)
        .select_from(vends.join(vendors, vendors.c.id == vends.c.vendor_id))
        .where(vends.c.id == vend_id)
    ).scalar()


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
    out["key_expiry"] = with_offset(current[0].issued_until) if current and current[0].issued_until else None
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
    out["versions"] = [{"effective_from": with_offset(v.effective_from), "spec": v.spec} for v in versions]
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
        text(name, "name", limits.NAME)
        plaintext = API_KEY_PREFIX + secrets.token_urlsafe(32)
        with self.engine.begin() as conn:
            key_id = _insert(
                conn,
                api_keys,
                "API key",
                name=name,
                role=role,
                key_hash=hash_key(plaintext),
                key_last4=plaintext[-4:],
                vendor_id=vendor_id,
                created_at=self.clock(),
            )
            self._audit(conn, SYSTEM, "create_api_key", "api_key", key_id, name=name, role=role, vendor_id=vendor_id)
        return key_id, plaintext

    def channel_caller(self, channel: str) -> Caller:
        """The vendor a payment channel sells as (``channel:<name>``, e.g. ``channel:mpesa``) and its API key, made
        on first use: its vends are reported, reconciled and limited like any vendor's, and their idempotency keys
        are the channel's own. The key's plaintext is thrown away: nobody can call the API with it."""
        name = f"channel:{channel}"
        text(name, "name", limits.NAME)
        for _ in range(2):  # a second process that made them at the same moment: read what it made
            with self.engine.begin() as conn:
                found = conn.execute(
                    select(api_keys.c.id, api_keys.c.vendor_id)
                    .join(vendors, vendors.c.id == api_keys.c.vendor_id)
                    .where(vendors.c.name == name, api_keys.c.name == name, api_keys.c.revoked_at.is_(None))
                    .order_by(api_keys.c.id)
                ).first()
                if found is not None:
                    return Caller(found.id, name, "vendor", found.vendor_id)
                try:
                    with conn.begin_nested():
                        at = self.clock()
                        vid = conn.execute(select(vendors.c.id).where(vendors.c.name == name)).scalar() or _insert(
                            conn, vendors, f"vendor {name}", name=name, balance=0, created_at=at
                        )
                        plaintext = API_KEY_PREFIX + secrets.token_urlsafe(32)
                        kid = _insert(
                            conn, api_keys, "API key", name=name, role="vendor", key_hash=hash_key(plaintext),
                            key_last4=plaintext[-4:], vendor_id=vid, created_at=at,
                        )  # fmt: skip
                        self._audit(conn, SYSTEM, "create_channel", "vendor", vid, name=name, api_key_id=kid)
                    return Caller(kid, name, "vendor", vid)
                except (IntegrityError, VendError):
                    continue
        raise VendError("conflict", f"the vendor {name} could not be made")

    def set_webhook(self, caller: Caller, vendor_id: int, name: str | None) -> dict[str, Any]:
        """A vendor's webhook name (``None``: none): its vends and their deliveries are posted there by the channels'
        partner sender. Admin only, audited."""
        caller.require("admin")
        if name is not None:
            text(name, "webhook", limits.NAME)
        with self.engine.begin() as conn:
            before = conn.execute(select(vendors.c.webhook).where(vendors.c.id == vendor_id)).first()
            if before is None:
                raise VendError("not_found", f"no vendor {vendor_id}")
            conn.execute(update(vendors).where(vendors.c.id == vendor_id).values(webhook=name))
            self._audit(conn, caller, "set_webhook", "vendor", vendor_id, webhook=name, before=before.webhook)
            row = conn.execute(select(vendors.c.id, vendors.c.name, vendors.c.webhook).where(vendors.c.id == vendor_id))
            return dict(row.one()._mapping)

    def meter_phone(self, drn: str) -> str | None:
        """The phone of the customer a meter belongs to (where a channel sends its tokens), if any."""
        with self.engine.connect() as conn:
            return conn.execute(
                select(customers.c.phone)
                .join(meters, meters.c.customer_id == customers.c.id)
                .where(meters.c.drn == drn)
            ).scalar()

    def revoke_api_key(self, caller: Caller, key_id: int) -> dict[str, Any]:
        """Revoke a key (admin), audited: see :func:`.apikeys.revoke_api_key`."""
        return apikeys.revoke_api_key(self.engine, caller, key_id, self.clock())

    def create_vendor(self, caller: Caller, name: str, credit_limit: int | None = None) -> dict[str, Any]:
        caller.require("admin")
        text(name, "name", limits.NAME)
        if credit_limit is not None:
            bounds.money(credit_limit, "credit_limit")
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
        text(name, "name", limits.NAME)
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
                    issued_until=None if key_expiry is None else wall_clock(key_expiry),
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
        text(name, "name", limits.NAME)
        bounds.check_tariff_spec(spec)
        tariff_from_spec(spec)  # validates the blocks' order
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
                effective_from=wall_clock(effective_from),
                spec=spec,
                created_at=self.clock(),
            )
            self._audit(conn, caller, "create_tariff", "tariff", name, currency=currency, spec=spec)
        return get_tariff(self.engine, name)

    def add_tariff_version(
        self, caller: Caller, name: str, spec: dict[str, Any], effective_from: dt.datetime
    ) -> dict[str, Any]:
        caller.require("admin")
        bounds.check_tariff_spec(spec)
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
                effective_from=wall_clock(effective_from),
                spec=spec,
                created_at=self.clock(),
            )
            self._audit(
                conn,
                caller,
                "add_tariff_version",
                "tariff",
                name,
                effective_from=wall_clock(effective_from).isoformat(),
                spec=spec,
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
        fields = {"account": account, "name": name, "phone": phone, "fbe_eligible": fbe_eligible, "debt": debt,
                  "debt_rate": debt_rate}  # fmt: skip
        values = {column: check(fields[column]) for column, check in CUSTOMER_FIELDS.items()}
        with self.engine.begin() as conn:
            cid = _insert(conn, customers, f"customer {account}", **customer_row(values, self.clock()))
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
        fields = {"drn": drn, "utility": utility, "manufacturer": manufacturer, "area": area, "ti": ti}
        own = {column: METER_FIELDS[column](value) for column, value in fields.items()}
        with self.engine.begin() as conn:
            group = conn.execute(select(supply_groups).where(supply_groups.c.sgc == sgc)).first()
            if group is None:
                raise VendError("not_found", f"no supply group {sgc}")
            cust_id = _lookup(conn, customers, customers.c.account, customer, "customer")
            tariff_id = _lookup(conn, tariffs, tariffs.c.name, tariff, "tariff")
            values = meter_key(group, ti=own["ti"], krn=krn, kt=kt, ea=ea, base_date=base_date, ken=ken)
            row = meter_row(own, group, values, cust_id, tariff_id, self.clock())
            mid = _insert(conn, meters, f"meter {row['drn']}", **row)
            self._audit(
                conn, caller, "create_meter", "meter", row["drn"], sgc=sgc, customer=customer, tariff=tariff, **values
            )
            return _row(conn.execute(select(meters).where(meters.c.id == mid)).one())

    def import_customers(self, caller: Caller, rows: Iterable[Mapping[str, object]]) -> dict[str, Any]:
        """Every customer of ``rows`` ({column: cell}, e.g. :func:`.imports.parse_csv`'s), or none."""
        return imports.import_customers(self.engine, caller, rows, self.clock())

    def import_meters(self, caller: Caller, rows: Iterable[Mapping[str, object]]) -> dict[str, Any]:
        """Every meter of ``rows`` ({column: cell}, e.g. :func:`.imports.parse_csv`'s), or none."""
        return imports.import_meters(self.engine, caller, rows, self.clock())

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
