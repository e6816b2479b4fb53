"""Key change campaigns: the list, a new one (plan, then generate), and a campaign's live progress (its counts
refreshed by htmx every two seconds while it runs; a plain reload without JavaScript)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response, StreamingResponse
from sqlalchemy.exc import IntegrityError

from mita import campaign, outbox
from mita.campaign.listing import list_campaigns
from mita.vend import registry
from mita.vend.errors import VendError
from mita.vend.operators import Session
from mita.vend.schema import supply_groups

from ..console import HEADERS, Posted, Signed, field, go, render, runtime

router = APIRouter()


def _form(request: Request, status: int = 200, **values: object) -> Response:
    rt = runtime(request)
    groups = registry.page(rt.engine, supply_groups, 200)["items"]
    context = {"name": "", "sgc": "", "krn": "", "area": "", "delivery": "attach", "errors": {}, **values}
    return render(request, "campaign_new.html", status, title="New campaign", groups=groups, **context)


@router.get("/campaigns")
def campaigns(request: Request, session: Signed) -> Response:
    rt = runtime(request)
    page = list_campaigns(rt.engine, session.caller, limit=100)
    return render(request, "campaigns.html", title="Campaigns", items=page["items"])


@router.get("/campaigns/new")
def new_campaign(request: Request, session: Signed) -> Response:
    session.caller.require("admin")
    return _form(request)


@router.post("/campaigns")
def plan(request: Request, session: Posted) -> Response:
    """Plan (admin): a name, the supply group, the KRN its meters move to, optionally only one area's."""
    form = request.state.form
    values = {k: field(form, k) for k in ("name", "sgc", "krn", "area", "delivery")}
    errors = {}
    if not values["name"]:
        errors["name"] = "Give the campaign a name."
    if not values["krn"].isdigit():
        errors["krn"] = "The key revision number the meters move to: a whole number."
    if errors:
        return _form(request, 422, errors=errors, **values)
    rt = runtime(request)
    selection = {"area": values["area"]} if values["area"] else None
    try:
        made = campaign.plan(
            rt.engine, session.caller, name=values["name"], sgc=values["sgc"], target={"krn": int(values["krn"])},
            selection=selection, delivery=values["delivery"] or "attach", at=rt.clock(),
        )  # fmt: skip
    except IntegrityError:
        return _form(request, 409, errors={"name": f"There is a campaign named {values['name']!r} already."}, **values)
    except VendError as exc:
        where = {"not_found": "sgc", "invalid_key_change": "krn", "no_vending_key": "krn"}.get(exc.code, "form")
        return _form(request, 422, errors={where: exc.message}, **values)
    return go(request, f"/campaigns/{made['id']}")


@router.get("/campaigns/{campaign_id}")
def show(request: Request, session: Signed, campaign_id: int) -> Response:
    return _campaign(request, session, campaign_id)


def _campaign(request: Request, session: Session, campaign_id: int, sms_queued: int | None = None) -> Response:
    session.caller.require("admin", "operator")
    rt = runtime(request)
    c = campaign.get_campaign(rt.engine, campaign_id)
    with rt.engine.connect() as conn:
        running = outbox.generation_queued(conn, campaign_id)
    partial = request.headers.get("HX-Request") == "true"  # htmx asks for the progress only
    page = "campaign_progress.html" if partial else "campaign.html"
    return render(request, page, title=f"Campaign {c['name']}", c=c, running=running, sms_queued=sms_queued)


@router.get("/campaigns/{campaign_id}/export.csv")
def export(request: Request, session: Signed, campaign_id: int) -> Response:
    """The field teams' list, as the API's export: meter, where it is, old and new key, and its tokens."""
    session.caller.require("admin", "operator")
    rt = runtime(request)
    campaign.get_campaign(rt.engine, campaign_id)  # a page saying so before the first line, not a cut-off file
    return StreamingResponse(
        iter(campaign.export_csv(rt.engine, campaign_id)),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="campaign-{campaign_id}.csv"', **HEADERS},
    )


@router.post("/campaigns/{campaign_id}/sms")
def queue_sms(request: Request, session: Posted, campaign_id: int) -> Response:
    """Each issued meter's tokens by SMS to its customer's phone, through the outbox."""
    rt = runtime(request)
    queued = campaign.queue_sms(rt.engine, session.caller, campaign_id, at=rt.clock())
    return _campaign(request, session, campaign_id, sms_queued=queued)


@router.post("/campaigns/{campaign_id}/generate")
def generate(request: Request, session: Posted, campaign_id: int) -> Response:
    """Generate its tokens (admin): a job in the outbox that ``mita worker`` runs, batch by batch."""
    session.caller.require("admin")
    rt = runtime(request)
    campaign.check_generatable(rt.engine, campaign_id)
    with rt.engine.begin() as conn:
        outbox.enqueue_campaign_generation(
            conn, campaign_id, rt.clock(), session.caller.name, api_key_id=session.caller.api_key_id
        )
    return go(request, f"/campaigns/{campaign_id}")
