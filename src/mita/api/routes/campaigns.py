"""Key change campaigns: plan, generate, export, SMS, field reports."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from fastapi import Request, Response
from fastapi.responses import StreamingResponse
from sqlalchemy.exc import IntegrityError

from mita import campaign, sts
from mita.vend.errors import VendError

from .. import models as m
from ..deps import (
    READERS,
    CampaignId,
    Svc,
    Who,
    v1_router,
)
from ..problems import responses

log = logging.getLogger("mita.api")


router = v1_router("campaigns")


# --- key change campaigns


class _Stopped(Exception):
    """The server is shutting down: generation stops after its last committed batch (a later run resumes)."""


class Generations:
    """Campaign generations running in this process, at most one per campaign, each in its own thread (a long run
    must not hold one of the few request threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[int, threading.Thread] = {}
        self._stopping = threading.Event()

    def start(self, campaign_id: int, work: Callable[[Callable[[int, int], None]], Any]) -> bool:
        """Run ``work(progress)`` unless this campaign's generation runs already; True if it was started."""
        with self._lock:
            if campaign_id in self._running or self._stopping.is_set():
                return False
            thread = threading.Thread(
                target=self._run, args=(campaign_id, work), name=f"mita-campaign-{campaign_id}", daemon=True
            )
            self._running[campaign_id] = thread
            thread.start()
        return True

    def running(self, campaign_id: int) -> bool:
        with self._lock:
            return campaign_id in self._running

    def _progress(self, _done: int, _planned: int) -> None:
        if self._stopping.is_set():
            raise _Stopped

    def _run(self, campaign_id: int, work: Callable[[Callable[[int, int], None]], Any]) -> None:
        try:
            work(self._progress)
        except _Stopped:
            log.warning("campaign %s: generation stopped by shutdown; generate again to resume", campaign_id)
        except sts.StsError as exc:
            log.error("campaign %s: generation refused: %s", campaign_id, exc.code)
        except Exception as exc:  # a thread's failure is logged, never lost (and never with its arguments)
            log.error("campaign %s: generation failed: %s", campaign_id, type(exc).__name__)
        finally:
            with self._lock:
                self._running.pop(campaign_id, None)

    def stop(self, timeout: float = 30.0) -> None:
        """Let every run finish its current batch, and wait for them."""
        self._stopping.set()
        with self._lock:
            threads = list(self._running.values())
        for thread in threads:
            thread.join(timeout)


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
def generate_campaign(campaign_id: CampaignId, request: Request, caller: Who, svc: Svc, response: Response) -> Any:
    """Make the key change tokens of every planned meter, in the background, batch by batch (admin).

    Answers at once; ``GET /v1/campaigns/{id}`` shows the progress in its counts. A run that stopped resumes
    where it stopped; asking again while a run is going starts no second one.
    """
    caller.require("admin")
    info = campaign.get_campaign(svc.engine, campaign_id)
    if info["status"] == "closed":
        raise VendError("conflict", f"campaign {campaign_id} is closed")
    at = svc.clock()

    def work(progress: Callable[[int, int], None]) -> Any:
        return campaign.generate(svc.engine, caller, campaign_id, at=at, keyring=svc.keyring, progress=progress)

    generations: Generations = request.app.state.generations
    generations.start(campaign_id, work)
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
