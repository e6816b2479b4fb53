"""Key change campaigns: plan, generate, export, SMS, field reports."""

from __future__ import annotations

import logging
from typing import Annotated, Any, Literal

from fastapi import Query, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.exc import IntegrityError

from mita import campaign, outbox, sts
from mita.campaign.listing import list_campaigns
from mita.vend.errors import VendError

from .. import models as m
from ..deps import (
    READERS,
    After,
    CampaignId,
    Limit,
    Svc,
    Who,
    v1_router,
)
from ..problems import responses

log = logging.getLogger("mita.api")


router = v1_router("campaigns")


# --- key change campaigns


@router.post("/campaigns", status_code=201, response_model=m.CampaignOut, responses=responses(404, 409))
def plan_campaign(body: m.CampaignIn, caller: Who, svc: Svc, response: Response) -> Any:
    """Plan a key change campaign (admin): which meters move to which key, in batches. Nothing is sent yet."""
    try:
        out = campaign.plan(
            svc.engine, caller, name=body.name, sgc=body.sgc, target=body.target.model_dump(exclude_none=True),
            selection=body.selection.model_dump(exclude_none=True) if body.selection is not None else None,
            delivery=body.delivery, batch_size=body.batch_size, at=svc.clock(),
        )  # fmt: skip
    except IntegrityError:  # campaign names are unique; the service lets the database say so
        raise VendError("conflict", f"there is a campaign named {body.name!r} already") from None
    response.headers["Location"] = f"/v1/campaigns/{out['id']}"
    return out


@router.get("/campaigns", response_model=m.Page[m.CampaignOut])
def list_all_campaigns(
    caller: Who,
    svc: Svc,
    status: Annotated[
        Literal["planned", "generating", "generated", "closed"] | None,
        Query(description="only campaigns in this status"),
    ] = None,
    sgc: Annotated[str | None, Query(pattern=r"^[0-9]{6}$", description="only this supply group's campaigns")] = None,
    limit: Limit = 50,
    after: After = None,
) -> Any:
    """Campaigns, oldest first, with how far each one's meters got (admin, operator)."""
    return list_campaigns(svc.engine, caller, status=status, sgc=sgc, limit=limit, after=after)


@router.get("/campaigns/{campaign_id}", response_model=m.CampaignOut, responses=responses(404))
def get_campaign(campaign_id: CampaignId, caller: Who, svc: Svc) -> Any:
    """The campaign, and how many of its meters are planned, issued, delivered and confirmed (admin, operator)."""
    caller.require(*READERS)
    return campaign.get_campaign(svc.engine, campaign_id)


@router.post(
    "/campaigns/{campaign_id}/generate",
    status_code=202,
    response_model=m.CampaignOut,
    responses=responses(404, 409),
)
def generate_campaign(campaign_id: CampaignId, caller: Who, svc: Svc, response: Response) -> Any:
    """Make the key change tokens of every planned meter, batch by batch, in the background (admin).

    Answers at once: the generation is a job in the outbox, which ``mita worker`` runs (a run that stopped
    resumes where it stopped; asking again while one is queued or running queues no second one).
    ``GET /v1/campaigns/{id}`` shows the progress in its counts.
    """
    caller.require("admin")
    campaign.check_generatable(svc.engine, campaign_id)  # closed, or its key not active: refused now, not later
    with svc.engine.begin() as conn:
        outbox.enqueue_campaign_generation(conn, campaign_id, svc.clock(), caller.name, api_key_id=caller.api_key_id)
    response.headers["Location"] = f"/v1/campaigns/{campaign_id}"
    return campaign.get_campaign(svc.engine, campaign_id)


@router.get(
    "/campaigns/{campaign_id}/export.csv",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/csv": {}}, "description": "one line per meter still to confirm, tokens in order"},
        **responses(404),
    },
)
def export_campaign(campaign_id: CampaignId, caller: Who, svc: Svc) -> StreamingResponse:
    """The field teams' list (admin, operator): meter, where it is, old and new key, and its tokens."""
    caller.require(*READERS)
    campaign.get_campaign(svc.engine, campaign_id)  # a 404 before the first line, not a cut-off stream
    return StreamingResponse(
        iter(campaign.export_csv(svc.engine, campaign_id)),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="campaign-{campaign_id}.csv"',
            "Cache-Control": "no-store",
        },
    )


@router.post("/campaigns/{campaign_id}/sms", response_model=m.SmsQueuedOut, responses=responses(404))
def queue_campaign_sms(campaign_id: CampaignId, caller: Who, svc: Svc) -> Any:
    """One SMS per issued meter whose customer has a phone number, into the outbox (admin, operator)."""
    return {"queued": campaign.queue_sms(svc.engine, caller, campaign_id, at=svc.clock())}


@router.post("/campaigns/{campaign_id}/marks", response_model=m.MarksOut, responses=responses(404, 409))
def mark_campaign(campaign_id: CampaignId, body: m.MarksIn, caller: Who, svc: Svc) -> Any:
    """Field or gateway reports (admin, operator): meters whose tokens were ``delivered``, or ``confirmed``
    (accepted by the meter: its new key becomes current)."""
    caller.require("admin", "operator")
    numbers = [sts.MeterNumber.parse(drn).drn for drn in body.meters]  # every check digit before any change
    campaign.get_campaign(svc.engine, campaign_id)
    return campaign.mark(svc, caller, campaign_id, numbers, body.status, at=svc.clock())
