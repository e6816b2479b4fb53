"""Errors of the vending service: a stable code, a message, and the HTTP status it maps to."""

from __future__ import annotations

from mita.sts import StsError

STATUS = {
    "not_found": 404,
    "conflict": 409,
    "in_progress": 409,
    "idempotency_conflict": 422,
    "key_change_required": 409,
    "forbidden": 403,
    "unauthorized": 401,
    "retry": 503,
    "credit_limit": 402,
    "reversal_window_closed": 409,
    "already_reversed": 409,
    "meter_blocked": 409,
    "no_pending_key": 409,
    "reversed": 409,
    "not_reversible": 409,
    "key_change_superseded": 409,
    "key_expired": 409,
    "key_credit_limit": 402,
}


class VendError(StsError):
    """A refused request. Nothing was changed when this is raised."""

    def __init__(self, code: str, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status or STATUS.get(code, 422)
