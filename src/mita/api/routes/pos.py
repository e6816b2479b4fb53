"""Retail tills and aggregators (``/v1/pos``): Electrum PUSI semantics over Mita's API keys (a vendor's key, like
``/v1/vends``). The rules are :mod:`mita.channels.pos`'s; ``docs/channels-pos.md`` maps them to XMLVend 2.1.

How a till reads an answer (PUSI's status types):

| HTTP status | type | what the till does |
|---|---|---|
| 200, 201, 202 | successful | done (a purchase: print the tokens, then send the confirmation advice) |
| 500, 504, no answer in 60 s | unknown | ``POST .../retry`` (same id); its 404: never issued, buy with a NEW id |
| 400, 501, 503 and every other | failed | final: nothing was issued (a purchase), or the advice is settled |

A second create with a purchase id is a 400 ``duplicate_record``; advices are answered from the purchase's state,
the same answer however often and in whatever order they come; a reversal the policy does not allow (confirmed,
or past the reversal window) is a 400 ``reversal_refused``: reprint instead.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from mita.channels.pos import Tills

from .. import pos_models as pm
from ..deps import Who, v1_router
from ..problems import responses

router = v1_router("pos")


def tills_of(request: Request) -> Tills:
    """The app's tills, over its vending service (made on first use)."""
    state: Any = request.app.state
    tills: Tills | None = getattr(state, "tills", None)
    if tills is None:
        tills = state.tills = Tills(state.service)
    return tills


def _json(out: dict[str, Any], status: int = 200) -> JSONResponse:
    return JSONResponse(out, status_code=status, headers={"Cache-Control": "no-store"})


_ADVICE: dict[int | str, dict[str, Any]] = {
    202: {"model": pm.PosAdviceOut, "description": "accepted: the purchase's state (the same if repeated)"}
}


@router.post(
    "/pos/purchases/{purchase_id}",
    status_code=201,
    response_model=None,
    responses={
        201: {"model": pm.PosPurchaseOut, "description": "issued: print the tokens, then confirm"},
        **responses(400, 402, 404, 409, 503),
    },
)
def purchase(purchase_id: pm.PurchaseId, body: pm.PosPurchaseIn, caller: Who, request: Request) -> Any:
    """A purchase at a till: the tokens and the receipt, exactly once per purchase id. A purchase id used before
    is a 400 ``duplicate_record``: after a timeout, ask ``.../retry``. A 503 ``retry``: the outcome is unknown,
    ask ``.../retry``."""
    return _json(tills_of(request).purchase(caller, purchase_id, body.model_dump()), 201)


@router.post(
    "/pos/purchases/{purchase_id}/retry",
    response_model=None,
    responses={
        200: {"model": pm.PosPurchaseOut, "description": "what was issued: the same tokens"},
        **responses(404, 409),
    },
)
def retry(purchase_id: pm.PurchaseId, caller: Who, request: Request) -> Any:
    """What the purchase issued (a till whose create timed out): the same tokens, however often asked. A 404
    ``not_found``: nothing was issued under this id, buy with a new one. A 409 ``reversed``: it was reversed."""
    return _json(tills_of(request).retry(caller, purchase_id))


@router.post(
    "/pos/purchases/{purchase_id}/confirmations/{advice_id}",
    status_code=202,
    response_model=None,
    responses={**_ADVICE, **responses(404, 409)},
)
def confirm(purchase_id: pm.PurchaseId, advice_id: pm.AdviceId, caller: Who, request: Request) -> Any:
    """The till printed the tokens: the purchase is confirmed (settled). Send it until a 202 or a 4xx; repeated,
    the same answer. A 409 ``reversed``: the purchase was reversed first."""
    return _json(tills_of(request).confirm(caller, purchase_id, advice_id), 202)


@router.post(
    "/pos/purchases/{purchase_id}/reversals/{advice_id}",
    status_code=202,
    response_model=None,
    responses={**_ADVICE, **responses(400, 404)},
)
def reverse(purchase_id: pm.PurchaseId, advice_id: pm.AdviceId, caller: Who, request: Request) -> Any:
    """The till could not complete the sale: the purchase is reversed if it is unconfirmed and within the reversal
    window (its ledger lines undone, audited); otherwise a 400 ``reversal_refused``: the tokens exist and cannot
    be recalled, reprint them. Repeated: the same answer."""
    return _json(tills_of(request).reverse(caller, purchase_id, advice_id), 202)


@router.post(
    "/pos/trials/{request_id}",
    response_model=None,
    responses={200: {"model": pm.PosTrialOut, "description": "the quote"}, **responses(404)},
)
def trial(request_id: pm.ClientId, body: pm.PosTrialIn, caller: Who, request: Request) -> Any:
    """A trial purchase: what the amount would buy now, no token, nothing changed."""
    return _json(tills_of(request).trial(caller, request_id, body.meter, body.amount))


@router.post(
    "/pos/reprints/{reprint_id}",
    response_model=None,
    responses={200: {"model": pm.PosReprintOut, "description": "the tokens again"}, **responses(404, 409)},
)
def reprint(reprint_id: pm.ClientId, body: pm.PosReprintIn, caller: Who, request: Request) -> Any:
    """The tokens of a purchase again (by ``purchase_id``), or of the meter's last purchase from this till's
    vendor (by ``meter``); audited. A 409 ``reversed``: a reversed purchase's tokens are not handed out."""
    out = tills_of(request).reprint(caller, reprint_id, purchase_id=body.purchase_id, meter=body.meter)
    return _json(out)
