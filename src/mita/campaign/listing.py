"""Listing campaigns: by status and supply group, in id order, a page at a time, with each one's counts."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, func, select

from mita.vend.callers import Caller
from mita.vend.errors import VendError
from mita.vend.lifecycles import CampaignStatus, KeyChangeStatus
from mita.vend.schema import campaigns, key_changes, supply_groups
from mita.vend.walltime import with_offset

MAX_PAGE = 500


def list_campaigns(
    engine: Engine,
    caller: Caller,
    *,
    status: str | None = None,
    sgc: str | None = None,
    limit: int = 50,
    after: int | None = None,
) -> dict[str, Any]:
    """A page of campaigns (admin, operator), oldest first, each as ``GET /v1/campaigns/{id}`` shows it."""
    caller.require("admin", "operator")
    if status is not None and status not in tuple(CampaignStatus):
        raise VendError("invalid_status", f"a campaign's status is one of {', '.join(CampaignStatus)}")
    limit = max(1, min(limit, MAX_PAGE))
    q = (
        select(campaigns, supply_groups.c.sgc)
        .join(supply_groups, supply_groups.c.id == campaigns.c.supply_group_id)
        .order_by(campaigns.c.id)
        .limit(limit + 1)
    )
    if status is not None:
        q = q.where(campaigns.c.status == status)
    if sgc is not None:
        q = q.where(supply_groups.c.sgc == sgc)
    if after is not None:
        q = q.where(campaigns.c.id > after)
    with engine.connect() as conn:
        rows = conn.execute(q).all()
        page = rows[:limit]
        counts: dict[int, dict[str, int]] = {r.id: {s.value: 0 for s in KeyChangeStatus} for r in page}
        if counts:
            for cid, state, n in conn.execute(
                select(key_changes.c.campaign_id, key_changes.c.status, func.count())
                .where(key_changes.c.campaign_id.in_(list(counts)))
                .group_by(key_changes.c.campaign_id, key_changes.c.status)
            ):
                counts[cid][state] = int(n)
    items = [campaign_json(r, r.sgc, counts[r.id]) for r in page]
    return {"items": items, "next": page[-1].id if len(rows) > limit else None}


def campaign_json(r: Any, sgc: str, counts: dict[str, int]) -> dict[str, Any]:
    """A campaign's row as the API shows it (the same shape as :func:`mita.campaign.get_campaign`'s)."""
    return {
        "id": r.id, "name": r.name, "sgc": sgc, "selection": r.selection, "target": r.target,
        "delivery": r.delivery, "batch_size": r.batch_size, "batches": -(-r.planned // r.batch_size),
        "planned": r.planned, "status": r.status, "created_at": with_offset(r.created_at), "meters": counts,
    }  # fmt: skip
