"""Retail tills and aggregators, with the semantics of Electrum's Prepaid Utility Service Interface (PUSI) over
Mita's own API keys (``docs/channels-pos.md`` maps them to XMLVend 2.1 too).

A till names every request itself (ids it makes, UUIDs): the purchase id is the vend's idempotency key under the
till's API key, so one id can never vend twice; a second create with it is refused (``duplicate_record``, 400) and
the till asks for what was issued with ``retry``. Confirmation and reversal advices are stored-and-forwarded by the
till until a final answer, possibly repeated and out of order: each is answered from the purchase's state, the same
answer every time.

How a till reads an answer (PUSI's status types):

| HTTP status | type | what the till does |
|---|---|---|
| 200, 201, 202 | successful | done (a purchase: print the tokens, then send the confirmation advice) |
| 500, 504, no answer within 60 s | unknown | ``retry`` the purchase (same id); ``404``: never seen, buy with a NEW id |
| 400, 501, 503 and every other | failed | final: nothing was issued (a purchase) or the advice is settled |

A purchase's lifecycle (:data:`~mita.vend.lifecycles.POS_PURCHASE`): ``issued`` when the vend is made;
``confirmed`` by the till's confirmation advice or, left unconfirmed past a window, by :func:`settle_unconfirmed`
(tokens cannot be recalled: an unconfirmed purchase is settled, not undone); ``reversed`` by a reversal advice the
policy allows (:meth:`Tills.reverse`). Both are final.

The ``pos_purchases`` row cannot share the vend's own transaction (the vending service owns it), so it is written
right after, idempotently; a create that died between the two leaves a vend without its row, and the till's retry
(or its repeated create) writes it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import Engine, select, update

from mita import sts
from mita.vend import listings
from mita.vend.callers import Caller, local_now
from mita.vend.errors import VendError
from mita.vend.lifecycles import PosStatus
from mita.vend.schema import pos_purchases
from mita.vend.service import VendingService
from mita.vend.walltime import with_offset

from .payments import dialect_of

T = PosStatus
ROLES = ("admin", "operator", "vendor")
#: Refusals of a create whose id was used before (another body, a reversed purchase, one still in flight).
USED = frozenset({"idempotency_conflict", "reversed", "in_progress"})


class Tills:
    """The PUSI operations over the vending service and the ``pos_purchases`` table."""

    def __init__(self, service: VendingService) -> None:
        self.service = service
        self.engine: Engine = service.engine

    # ------------------------------------------------------------------ purchases

    def purchase(self, caller: Caller, purchase_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """Vend once for the till's purchase id; a purchase id used before is ``duplicate_record``."""
        caller.require(*ROLES)
        _check_id(purchase_id, "purchase")
        if self._row(caller, purchase_id) is not None:
            raise _duplicate(purchase_id)
        try:
            issued = self.service.vend(caller, purchase_id, body)
        except VendError as exc:
            if exc.code in USED:
                raise _duplicate(purchase_id) from None
            raise
        self._keep(caller, purchase_id, issued.body["id"])
        if issued.replayed:  # made before, by a create that died before its row, or by /v1/vends with this key
            raise _duplicate(purchase_id)
        return shown(purchase_id, T.ISSUED, issued.body)

    def retry(self, caller: Caller, purchase_id: str) -> dict[str, Any]:
        """What was issued for the purchase id (the same tokens); ``not_found`` if it was never vended."""
        caller.require(*ROLES)
        _check_id(purchase_id, "purchase")
        row = self._row(caller, purchase_id)
        if row is None:
            vend_id = self.service.vend_of_key(caller, purchase_id)
            if vend_id is None:
                raise VendError("not_found", f"no purchase {purchase_id}: nothing was issued, buy with a new id")
            self._keep(caller, purchase_id, vend_id)  # the row its create did not live to write
            row = self._row(caller, purchase_id)
            assert row is not None
        if row.status == T.REVERSED:
            raise VendError("reversed", f"purchase {purchase_id} was reversed: its tokens are not handed out again")
        return shown(purchase_id, row.status, self.service.get_vend(caller, row.vend_id))

    # ------------------------------------------------------------------ advices

    def confirm(self, caller: Caller, purchase_id: str, advice_id: str) -> dict[str, Any]:
        """The till printed the tokens: issued -> confirmed (settled). Repeated: the same answer."""
        caller.require(*ROLES)
        _check_id(purchase_id, "purchase")
        _check_id(advice_id, "advice")
        at = self.service.clock()
        with self.engine.begin() as conn:
            conn.execute(
                update(pos_purchases)
                .where(*self._key(caller, purchase_id), pos_purchases.c.status == T.ISSUED)
                .values(status=T.CONFIRMED, advice_id=advice_id, settled_at=at)
            )
        row = self._row(caller, purchase_id)
        if row is None:
            raise VendError("not_found", f"no purchase {purchase_id}")
        if row.status == T.REVERSED:
            raise VendError("reversed", f"purchase {purchase_id} was reversed: it cannot be confirmed")
        return advice(purchase_id, row)

    def reverse(self, caller: Caller, purchase_id: str, advice_id: str) -> dict[str, Any]:
        """Undo a purchase the till could not complete, if the policy allows: it is unconfirmed and within the
        vending service's reversal window. Otherwise ``reversal_refused`` (the till reprints instead: the tokens
        exist and cannot be recalled). Repeated: the same answer."""
        caller.require(*ROLES)
        _check_id(purchase_id, "purchase")
        _check_id(advice_id, "advice")
        row = self._row(caller, purchase_id)
        if row is None:
            raise VendError("not_found", f"no purchase {purchase_id}")
        if row.status == T.ISSUED:
            at = self.service.clock()
            if at - row.created_at > self.service.reversal_window:
                raise _refused(purchase_id, "the reversal window has closed")
            # claimed before the vend is reversed: a confirmation that comes meanwhile finds it reversed
            with self.engine.begin() as conn:
                conn.execute(
                    update(pos_purchases)
                    .where(*self._key(caller, purchase_id), pos_purchases.c.status == T.ISSUED)
                    .values(status=T.REVERSED, advice_id=advice_id, settled_at=at)
                )
            row = self._row(caller, purchase_id)
            assert row is not None
        if row.status == T.CONFIRMED:
            raise _refused(purchase_id, "it was confirmed (settled)")
        # reversed here: make sure the vend is (a repeat after a crash between the two finishes the job)
        till = Caller(caller.api_key_id, caller.name, "operator", caller.vendor_id)  # the policy above allowed it
        try:
            self.service.reverse(till, row.vend_id, f"till reversal advice {advice_id}"[:200])
        except VendError as exc:
            if exc.code == "already_reversed":
                return advice(purchase_id, row)
            if exc.code in ("reversal_window_closed", "not_reversible"):
                with self.engine.begin() as conn:  # the vend stands: so does the purchase
                    conn.execute(
                        update(pos_purchases)
                        .where(*self._key(caller, purchase_id), pos_purchases.c.status == T.REVERSED)
                        .values(status=T.ISSUED, advice_id=None, settled_at=None)
                    )
                raise _refused(purchase_id, exc.code.replace("_", " ")) from None
            raise
        return advice(purchase_id, row)

    # ------------------------------------------------------------------ no effect

    def trial(self, caller: Caller, request_id: str, meter: str, amount: int) -> dict[str, Any]:
        """What the amount would buy now (a trial purchase): no token, nothing stored."""
        caller.require(*ROLES)
        _check_id(request_id, "request")
        return {"request_id": request_id, **self.service.quote(caller, meter, amount)}

    def reprint(
        self, caller: Caller, reprint_id: str, *, purchase_id: str | None = None, meter: str | None = None
    ) -> dict[str, Any]:
        """The tokens of a purchase again (by its id), or of the meter's last purchase this till's vendor can see;
        audited by the vending service. A reversed purchase's tokens are not handed out (``reversed``)."""
        caller.require(*ROLES)
        _check_id(reprint_id, "reprint")
        if (purchase_id is None) == (meter is None):
            raise VendError("invalid_request", "a reprint names a purchase_id or a meter")
        vend_id: str | None = None
        if purchase_id is not None:
            row = self._row(caller, purchase_id)
            if row is None:
                raise VendError("not_found", f"no purchase {purchase_id}")
            vend_id = row.vend_id
        else:
            drn = sts.MeterNumber.parse(str(meter)).drn
            found = listings.list_vends(
                self.engine, caller, listings.VendFilter(meter=drn, kind="purchase", status="completed"), 1
            )
            if not found["items"]:
                raise VendError("not_found", f"no purchase for meter {drn}")
            vend_id = found["items"][0]["id"]
        assert vend_id is not None
        out = self.service.reprint(caller, vend_id)
        return {"reprint_id": reprint_id, "purchase_id": purchase_id, "vend": out}

    # ------------------------------------------------------------------ the table

    @staticmethod
    def _key(caller: Caller, purchase_id: str) -> tuple[Any, Any]:
        return pos_purchases.c.api_key_id == caller.api_key_id, pos_purchases.c.purchase_id == purchase_id

    def _row(self, caller: Caller, purchase_id: str) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(select(pos_purchases).where(*self._key(caller, purchase_id))).first()

    def _keep(self, caller: Caller, purchase_id: str, vend_id: str) -> None:
        """The purchase's row, once (a second write of it changes nothing)."""
        row = {"api_key_id": caller.api_key_id, "purchase_id": purchase_id, "vend_id": vend_id,
               "status": T.ISSUED, "created_at": self.service.clock()}  # fmt: skip
        with self.engine.begin() as conn:
            conn.execute(dialect_of(conn).insert(pos_purchases).values(row).on_conflict_do_nothing())


def settle_unconfirmed(engine: Engine, older_than: dt.datetime, *, at: dt.datetime | None = None) -> int:
    """Confirm the purchases left unconfirmed since before ``older_than`` (a till that never sent its advice): they
    are settled, and no reversal is accepted after. ``older_than`` = now - the reversal window is the natural
    choice (a reversal is refused past it anyway). How many were settled."""
    with engine.begin() as conn:
        done = conn.execute(
            update(pos_purchases)
            .where(pos_purchases.c.status == T.ISSUED, pos_purchases.c.created_at <= older_than)
            .values(status=T.CONFIRMED, settled_at=at or local_now())
        ).rowcount
    return int(done)


# ---------------------------------------------------------------------- answers


def shown(purchase_id: str, status: str, vend: dict[str, Any]) -> dict[str, Any]:
    return {"purchase_id": purchase_id, "status": str(status), "vend": vend}


def advice(purchase_id: str, row: Any) -> dict[str, Any]:
    settled = with_offset(row.settled_at) if row.settled_at is not None else None
    return {"purchase_id": purchase_id, "status": str(row.status), "advice_id": row.advice_id,
            "vend_id": row.vend_id, "settled_at": settled}  # fmt: skip


def _check_id(value: str, what: str) -> None:
    if not 1 <= len(value) <= 200 or not value.isprintable():
        raise VendError("invalid_request", f"a {what} id is 1 to 200 printable characters")


def _duplicate(purchase_id: str) -> VendError:
    return VendError(
        "duplicate_record",
        f"purchase id {purchase_id} was used before: ask for it with .../retry, or buy with a new id",
    )


def _refused(purchase_id: str, why: str) -> VendError:
    return VendError(
        "reversal_refused", f"purchase {purchase_id} cannot be reversed ({why}): reprint its tokens instead"
    )
