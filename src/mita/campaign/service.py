"""Campaigns over the vending database: plan, generate (resumable, in batches), export, track.

Generation is the heavy part: a million meters need two decoder keys each
and two or four encrypted tokens. Per batch it reads the batch's meters,
derives their old and new decoder keys through the keystore (in bulk), makes
the sets with :func:`mita.sts.bulk.key_change_sets`, and stores tokens and
the meters' pending key configuration in one transaction. Only rows still
``planned`` are written, so a vend that carried a meter's key change in the
meantime is never overwritten, and a crashed run resumes at its first
unfinished batch.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from types import SimpleNamespace
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, func, insert, literal, select, text, update

from mita import sts
from mita.outbox import Outgoing, enqueue_many
from mita.sts.recipes import KEY_CHANGE_RULES, KeyConfig, RecipeError, check_key_change, key_change_sets
from mita.vend.audit import write_audit
from mita.vend.errors import VendError
from mita.vend.keyring import KeyRing, derivation
from mita.vend.lifecycles import CAMPAIGN, KEY_CHANGE, CampaignStatus, KeyChangeStatus, sql_in
from mita.vend.schema import campaigns, customers, key_changes, meters, supply_groups, vending_keys
from mita.vend.service import Caller, VendingService

DELIVERIES = ("csv", "sms", "attach")
SELECTORS = ("krn", "base_date", "ea", "manufacturer", "area")
Progress = Callable[[int, int], None]  # (meters done, meters planned)


def plan(
    engine: Engine,
    caller: Caller,
    *,
    name: str,
    sgc: str,
    target: dict[str, Any],
    selection: dict[str, Any] | None = None,
    delivery: str = "attach",
    batch_size: int = 10_000,
    at: dt.datetime,
) -> dict[str, Any]:
    """Fix the campaign's meters and batches; nothing is sent to any meter yet.

    ``target`` holds the new ``krn`` and optionally ``base_date``, ``ea``, ``kt`` and ``ken``
    (default: the key's KEN and the supply group's others). ``selection`` narrows the group's
    meters by ``krn``, ``base_date``, ``ea``, ``manufacturer`` or ``area``. Meters already on the
    target, retired, or with a key change under way are left out.
    """
    caller.require("admin")
    selection = dict(selection or {})
    unknown = set(selection) - set(SELECTORS)
    if unknown:
        raise VendError("invalid_request", f"meters are selected by {', '.join(SELECTORS)} (not {', '.join(unknown)})")
    if delivery not in DELIVERIES:
        raise VendError("invalid_request", f"delivery is one of {', '.join(DELIVERIES)}")
    if not 1 <= batch_size <= 1_000_000:
        raise VendError("invalid_request", "batch_size is 1..1000000")
    if not name or len(name) > 100 or not name.isprintable():
        raise VendError("invalid_request", "a campaign has a printable name of at most 100 characters")
    with engine.begin() as conn:
        group = conn.execute(select(supply_groups).where(supply_groups.c.sgc == sgc)).first()
        if group is None:
            raise VendError("not_found", f"no supply group {sgc}")
        goal = _target(conn, group, target)
        if conn.execute(select(campaigns.c.id).where(campaigns.c.name == name)).first():
            raise VendError("conflict", f"a campaign named {name!r} exists already")
        cid = int(
            conn.execute(
                insert(campaigns)
                .values(
                    name=name,
                    supply_group_id=group.id,
                    selection=selection,
                    target=goal,
                    delivery=delivery,
                    batch_size=batch_size,
                    planned=0,
                    status="planned",
                    created_at=at,
                )
                .returning(campaigns.c.id)
            ).scalar_one()
        )
        where, params = _selection_sql(selection)
        params |= {"cid": cid, "gid": group.id, "bs": batch_size, "at": at, **{f"t_{k}": v for k, v in goal.items()}}
        planned = conn.execute(
            text(
                "INSERT INTO key_changes (meter_id, campaign_id, batch, via, status, created_at) "
                "SELECT m.id, :cid, (ROW_NUMBER() OVER (ORDER BY m.id) - 1) / :bs, 'campaign', 'planned', :at "
                "FROM meters m WHERE m.supply_group_id = :gid AND m.status <> 'retired' " + where + " "
                "AND NOT (m.krn = :t_krn AND m.base_date = :t_base_date "
                "AND m.ea = COALESCE(CAST(:t_ea AS INTEGER), m.ea) AND m.kt = COALESCE(CAST(:t_kt AS INTEGER), m.kt) "
                "AND m.ken = :t_ken) "
                "AND NOT EXISTS (SELECT 1 FROM key_changes o WHERE o.meter_id = m.id "
                f"AND o.status IN {sql_in(KEY_CHANGE.open)})"
            ),
            params,
        ).rowcount
        _check_plan(conn, cid, goal)
        conn.execute(update(campaigns).where(campaigns.c.id == cid).values(planned=planned))
        _audit(conn, caller, at, "plan_campaign", cid, name=name, sgc=sgc, target=goal, selection=selection,
               planned=planned)  # fmt: skip
    return get_campaign(engine, cid)


def _check_plan(conn: Connection, cid: int, goal: dict[str, Any]) -> None:
    """The key change rules (:data:`mita.sts.recipes.KEY_CHANGE_RULES`) over the whole selection at once: each
    rule, read over the meters' columns, selects the planned meters that would break it."""
    m = meters.c
    sgc, krn, base_date, ken = (literal(goal[k]) for k in ("sgc", "krn", "base_date", "ken"))  # SQL on both sides
    old = SimpleNamespace(sgc=sgc, krn=m.krn, kt=m.kt, ti=m.ti, ea=m.ea, base_date=m.base_date, ken=m.ken)
    new = SimpleNamespace(
        sgc=sgc, krn=krn, kt=m.kt if goal["kt"] is None else literal(goal["kt"]), ti=m.ti,
        ea=m.ea if goal["ea"] is None else literal(goal["ea"]), base_date=base_date, ken=ken,
    )  # fmt: skip
    joined = key_changes.join(meters, meters.c.id == key_changes.c.meter_id)
    for rule in KEY_CHANGE_RULES:
        found = conn.execute(
            select(func.count())
            .select_from(joined)
            .where(key_changes.c.campaign_id == cid, rule.broken(old, new, goal["dkga"]))
        ).scalar_one()
        if found:
            raise VendError(rule.code, f"{found} selected meters: {rule.message} (narrow the selection)")


def _target(conn: Connection, group: Any, target: dict[str, Any]) -> dict[str, Any]:
    if "krn" not in target:
        raise VendError("invalid_request", "a campaign's target names the new KRN")
    unknown = set(target) - {"krn", "base_date", "ea", "kt", "ken"}
    if unknown:
        raise VendError("invalid_request", f"a target has krn, base_date, ea, kt and ken (not {', '.join(unknown)})")
    key = conn.execute(
        select(vending_keys).where(vending_keys.c.supply_group_id == group.id, vending_keys.c.krn == target["krn"])
    ).first()
    if key is None or key.status not in ("pending", "active"):
        raise VendError("no_vending_key", f"supply group {group.sgc} has no usable key with KRN {target['krn']}")
    goal = {
        "sgc": group.sgc,
        "krn": int(target["krn"]),
        "base_date": int(sts.BaseDate.parse(target.get("base_date", group.base_date))),
        # unless the target says otherwise, each meter keeps its own algorithm and key type
        "ea": None if target.get("ea") is None else int(sts.EA.parse(target["ea"])),
        "kt": None if target.get("kt") is None else int(target["kt"]),
        "ken": int(target.get("ken", key.ken)),
        "dkga": key.dkga,
    }
    sts.identity.check_key_params(2 if goal["kt"] is None else goal["kt"], group.sgc, 1, goal["krn"])
    if not 0 <= goal["ken"] <= 255:
        raise sts.RangeError("KEN must be 0..255")
    return goal


def _selection_sql(selection: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    where, params = "", {}
    for column in SELECTORS:
        if column in selection:
            where += f" AND m.{column} = :s_{column}"
            params[f"s_{column}"] = selection[column]
    return where, params


def get_campaign(engine: Engine, campaign_id: int) -> dict[str, Any]:
    """The campaign and how far each of its meters got."""
    with engine.connect() as conn:
        row = conn.execute(select(campaigns).where(campaigns.c.id == campaign_id)).first()
        if row is None:
            raise VendError("not_found", f"no campaign {campaign_id}")
        counts: dict[str, int] = dict(
            conn.execute(
                select(key_changes.c.status, func.count())
                .where(key_changes.c.campaign_id == campaign_id)
                .group_by(key_changes.c.status)
            ).all()
        )
        sgc = conn.execute(select(supply_groups.c.sgc).where(supply_groups.c.id == row.supply_group_id)).scalar()
    return {
        "id": row.id,
        "name": row.name,
        "sgc": sgc,
        "selection": row.selection,
        "target": row.target,
        "delivery": row.delivery,
        "batch_size": row.batch_size,
        "batches": -(-row.planned // row.batch_size),
        "planned": row.planned,
        "status": row.status,
        "created_at": row.created_at.isoformat(),
        "meters": {s.value: int(counts.get(s, 0)) for s in KeyChangeStatus},
    }


# ---------------------------------------------------------------------- generation


def check_generatable(engine: Engine, campaign_id: int) -> dict[str, Any]:
    """The campaign, if its generation can start now (not closed, its target key active); else a typed error."""
    info = get_campaign(engine, campaign_id)
    with engine.connect() as conn:
        _check_generatable(conn, info)
    return info


def _check_generatable(conn: Connection, info: dict[str, Any]) -> None:
    if info["status"] == "closed":
        raise VendError("conflict", f"campaign {info['id']} is closed")
    status = conn.execute(
        select(vending_keys.c.status)
        .join(supply_groups, supply_groups.c.id == vending_keys.c.supply_group_id)
        .where(supply_groups.c.sgc == info["target"]["sgc"], vending_keys.c.krn == info["target"]["krn"])
    ).scalar()
    if status != "active":  # the meters' pending key must be one they can buy credit under at once
        raise VendError("key_not_active", f"activate KRN {info['target']['krn']} before generating (it is {status})")


def generate(
    engine: Engine,
    caller: Caller,
    campaign_id: int,
    *,
    at: dt.datetime,
    keyring: KeyRing | None = None,
    progress: Progress | None = None,
    max_batches: int | None = None,
) -> dict[str, Any]:
    """Make and store every planned meter's key change set, one committed batch at a time (resumable)."""
    caller.require("admin")
    keyring = keyring or KeyRing()
    info = get_campaign(engine, campaign_id)
    with engine.begin() as conn:
        _check_generatable(conn, info)
        CAMPAIGN.check(info["status"], CampaignStatus.GENERATING, code="conflict")
        conn.execute(update(campaigns).where(campaigns.c.id == campaign_id).values(status=CampaignStatus.GENERATING))
        batches = [
            b
            for (b,) in conn.execute(
                select(key_changes.c.batch)
                .where(key_changes.c.campaign_id == campaign_id, key_changes.c.status == "planned")
                .group_by(key_changes.c.batch)
                .order_by(key_changes.c.batch)
            )
        ]
    done = info["planned"] - info["meters"]["planned"]
    if progress:
        progress(done, info["planned"])
    for n, batch in enumerate(batches):
        if max_batches is not None and n >= max_batches:
            return get_campaign(engine, campaign_id)
        with engine.begin() as conn:
            made = _generate_batch(conn, campaign_id, batch, info, keyring, at)
        done += made
        if progress:
            progress(done, info["planned"])
    with engine.begin() as conn:
        left = conn.execute(
            select(func.count()).where(key_changes.c.campaign_id == campaign_id, key_changes.c.status == "planned")
        ).scalar_one()
        if not left:
            CAMPAIGN.check(CampaignStatus.GENERATING, CampaignStatus.GENERATED)
            conn.execute(update(campaigns).where(campaigns.c.id == campaign_id).values(status=CampaignStatus.GENERATED))
        _audit(conn, caller, at, "generate_campaign", campaign_id, generated=done, left=left)
    return get_campaign(engine, campaign_id)


_BATCH_READ = (
    "SELECT kc.id AS kc_id, m.id, m.drn, m.iin, m.ti, m.kt, m.krn, m.ea, m.base_date, m.ken, m.last_tid, "
    "m.pending_key, g.sgc FROM key_changes kc JOIN meters m ON m.id = kc.meter_id "
    "JOIN supply_groups g ON g.id = m.supply_group_id "
    "WHERE kc.campaign_id = :cid AND kc.batch = :batch AND kc.status = 'planned' ORDER BY kc.id"
)


def _generate_batch(
    conn: Connection, cid: int, batch: int, info: dict[str, Any], keyring: KeyRing, at: dt.datetime
) -> int:
    rows = conn.execute(text(_BATCH_READ), {"cid": cid, "batch": batch}).all()
    goal = info["target"]
    attach = info["delivery"] == "attach"
    by_config: dict[KeyConfig, list[Any]] = defaultdict(list)
    for r in rows:
        if r.pending_key not in (None, "null"):  # raw SQL: SQLite gives JSON as text
            # another change was issued since planning (an operator's): its tokens may be in the meter
            # already, so the campaign must not replace the pending configuration they install
            continue
        by_config[KeyConfig(r.sgc, r.krn, r.kt, r.ti, r.ea, r.base_date, r.ken)].append(r)
    out: list[tuple[int, int, str, str, str, str]] = []
    for old, group in by_config.items():
        ea = old.ea if goal["ea"] is None else goal["ea"]
        kt = old.kt if goal["kt"] is None else goal["kt"]
        new = KeyConfig(goal["sgc"], goal["krn"], kt, old.ti, ea, goal["base_date"], goal["ken"])
        numbers = [sts.MeterNumber(r.iin, r.drn) for r in group]
        try:
            _, old_key = keyring.get(conn, old.sgc, old.krn)
            info_new, new_key = keyring.get(conn, new.sgc, new.krn)
            check_key_change(old, new, info_new.dkga)
        except (VendError, RecipeError):  # e.g. the old key was destroyed: these meters cannot be moved; the others can
            continue
        sets = key_change_sets(
            old,
            new,
            old_key.decoder_keys(numbers, derivation(old)),
            new_key.decoder_keys(numbers, derivation(new)),
            len(group),
        )
        from_doc, to_doc = json.dumps(old.as_dict()), json.dumps(new.as_dict())
        tokens = np.char.decode(sets, "ascii").tolist()
        for r, digits in zip(group, tokens, strict=True):
            pending = {**new.as_dict(), "last_tid": -1, "attach": attach, "campaign": cid}
            out.append((r.kc_id, r.id, json.dumps(digits), from_doc, to_doc, json.dumps(pending)))
    _store(conn, out, at)
    # what is still planned in this batch cannot be done (another change pending, a key gone): cancelled,
    # so that the campaign finishes and its counts say so
    conn.execute(
        update(key_changes)
        .where(key_changes.c.campaign_id == cid, key_changes.c.batch == batch, key_changes.c.status == "planned")
        .values(status="cancelled")
    )
    return len(rows)


def _store(conn: Connection, rows: list[tuple[int, int, str, str, str, str]], at: dt.datetime) -> None:
    """Tokens onto the still-planned rows, and the pending configuration onto their meters."""
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        raw = conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur:
            cur.execute(
                "CREATE TEMP TABLE IF NOT EXISTS campaign_out (kc_id bigint, meter_id bigint, tokens text, "
                "from_key text, to_key text, pending text) ON COMMIT DELETE ROWS"
            )
            with cur.copy("COPY campaign_out FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            # meters first, in id order, as every vend and key change locks them: no deadlock, and a meter
            # that got another change meanwhile (its pending key set) is left alone
            cur.execute(
                "SELECT id FROM meters WHERE id = ANY(%(ids)s) ORDER BY id FOR UPDATE", {"ids": [r[1] for r in rows]}
            )
            cur.execute(
                "WITH done AS (UPDATE key_changes kc SET tokens = o.tokens::json, from_key = o.from_key::json, "
                "to_key = o.to_key::json, status = 'issued', issued_at = %(at)s FROM campaign_out o "
                "JOIN meters m ON m.id = o.meter_id WHERE kc.id = o.kc_id AND kc.status = 'planned' "
                "AND (m.pending_key IS NULL OR m.pending_key::text = 'null') RETURNING o.meter_id, o.pending) "
                "UPDATE meters m SET pending_key = done.pending::json FROM done WHERE m.id = done.meter_id",
                {"at": at},
            )
        return
    for kc_id, meter_id, tokens, from_key, to_key, pending in rows:
        done = conn.execute(
            update(key_changes)
            .where(key_changes.c.id == kc_id, key_changes.c.status == "planned")
            .values(
                tokens=json.loads(tokens),
                from_key=json.loads(from_key),
                to_key=json.loads(to_key),
                status="issued",
                issued_at=at,
            )
        ).rowcount
        if done:
            conn.execute(update(meters).where(meters.c.id == meter_id).values(pending_key=json.loads(pending)))


# ---------------------------------------------------------------------- delivery and tracking


def _issued(conn: Connection, cid: int) -> Iterator[Any]:
    return iter(
        conn.execute(
            select(
                key_changes.c.id,
                key_changes.c.status,
                key_changes.c.tokens,
                key_changes.c.from_key,
                key_changes.c.to_key,
                meters.c.drn,
                meters.c.manufacturer,
                meters.c.area,
                customers.c.account,
                customers.c.phone,
            )
            .join(meters, meters.c.id == key_changes.c.meter_id)
            .outerjoin(customers, customers.c.id == meters.c.customer_id)
            .where(key_changes.c.campaign_id == cid, key_changes.c.status.in_(("issued", "delivered")))
            .order_by(key_changes.c.id)
        )
    )


CSV_COLUMNS = (
    "meter", "manufacturer", "area", "account", "from_krn", "from_base_date", "to_krn", "to_base_date",
    "token_1", "token_2", "token_3", "token_4",
)  # fmt: skip


def export_csv(engine: Engine, campaign_id: int) -> Iterable[str]:
    """The field teams' list: one line per meter still to be confirmed, tokens in entry order."""
    get_campaign(engine, campaign_id)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    yield buf.getvalue()
    with engine.connect() as conn:
        for r in _issued(conn, campaign_id):
            buf.seek(0)
            buf.truncate()
            toks = list(r.tokens) + [""] * (4 - len(r.tokens))
            # a row a vend delivered before generation reached it had no from/to in older versions of the
            # vending service: the meter's record has them (its current and its pending configuration)
            was, goes = r.from_key, r.to_key
            writer.writerow(
                [
                    r.drn,
                    r.manufacturer,
                    r.area,
                    r.account or "",
                    was["krn"],
                    was["base_date"],
                    goes["krn"],
                    goes["base_date"],
                    *toks,
                ]
            )
            yield buf.getvalue()


def queue_sms(engine: Engine, caller: Caller, campaign_id: int, *, at: dt.datetime) -> int:
    """Put one SMS per issued meter with a phone number in the outbox (channel ``sms``, to the phone, dedupe key
    ``sms:campaign:<campaign>:kc:<key change>``: a meter's SMS is queued once); returns how many were new."""
    caller.require("admin", "operator")
    get_campaign(engine, campaign_id)
    with engine.begin() as conn:
        messages = [
            Outgoing("sms", r.phone, f"sms:campaign:{campaign_id}:kc:{r.id}", at=at, payload={
                "campaign": campaign_id, "key_change_id": r.id, "meter": r.drn, "phone": r.phone,
                "text": f"Meter {r.drn}: enter these key change tokens in order: " + " ".join(r.tokens)})
            for r in _issued(conn, campaign_id)
            if r.phone and r.status == "issued"
        ]  # fmt: skip
        queued = enqueue_many(conn, messages)
        _audit(conn, caller, at, "queue_campaign_sms", campaign_id, queued=queued)
    return queued


def mark(
    svc: VendingService, caller: Caller, campaign_id: int, drns: Iterable[str], status: str, *, at: dt.datetime
) -> dict[str, int]:
    """Field or gateway reports: ``delivered`` (the tokens reached the customer) or ``confirmed`` (accepted)."""
    caller.require("admin", "operator")
    if status not in ("delivered", "confirmed"):
        raise VendError("invalid_request", "a meter is marked delivered or confirmed")
    get_campaign(svc.engine, campaign_id)  # an unknown campaign is an error, not a list of misses
    counts = {"marked": 0, "not_in_campaign": 0}
    for drn in drns:
        number = sts.MeterNumber.parse(drn)
        with svc.engine.begin() as conn:
            kc = conn.execute(
                select(key_changes.c.id)
                .join(meters, meters.c.id == key_changes.c.meter_id)
                .where(
                    key_changes.c.campaign_id == campaign_id,
                    meters.c.drn == number.drn,
                    key_changes.c.status.in_(("issued", "delivered")),
                )
            ).scalar()
            if kc is None:
                counts["not_in_campaign"] += 1
                continue
            if status == "delivered":
                conn.execute(
                    update(key_changes).where(key_changes.c.id == kc).values(status="delivered", delivered_at=at)
                )
        if status == "confirmed":
            svc.confirm_key_change(caller, number.drn, via="campaign")
        counts["marked"] += 1
    return counts


def _audit(conn: Connection, caller: Caller, at: dt.datetime, action: str, cid: int, **detail: Any) -> None:
    write_audit(conn, caller, at, action, "campaign", cid, **detail)
