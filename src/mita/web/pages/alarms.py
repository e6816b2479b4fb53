"""Alarms: the list (filters, pages), one alarm with its evidence, acknowledge and close (a note required)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

from mita.headend import alarms
from mita.vend.errors import VendError

from ..console import Posted, Signed, field, go, render, runtime

router = APIRouter()
STATUSES = ("open", "acknowledged", "closed")


@router.get("/alarms")
def alarm_list(
    request: Request, session: Signed, status: str = "", severity: str = "", meter: str = "", after: str | None = None
) -> Response:
    rt = runtime(request)
    f = alarms.AlarmFilter(status=status or None, severity=severity or None, meter=meter or None)
    page = alarms.list_alarms(rt.engine, session.caller, f, 25, after)
    keep = {k: v for k, v in (("status", status), ("severity", severity), ("meter", meter)) if v}
    return render(
        request, "alarms.html", title="Alarms", page=page, status=status, severity=severity, meter=meter, keep=keep
    )


def _alarm(request: Request, alarm_id: int, status: int = 200, **more: object) -> Response:
    rt = runtime(request)
    a = alarms.get(rt.engine, request.state.session.caller, alarm_id)
    return render(request, "alarm.html", status, title=f"Alarm {alarm_id}", a=a, **{"note_error": "", **more})


@router.get("/alarms/{alarm_id}")
def alarm(request: Request, session: Signed, alarm_id: int) -> Response:
    return _alarm(request, alarm_id)


@router.post("/alarms/{alarm_id}/acknowledge")
def acknowledge(request: Request, session: Posted, alarm_id: int) -> Response:
    rt = runtime(request)
    try:
        alarms.acknowledge(rt.engine, session.caller, alarm_id, at=rt.clock())
    except VendError as exc:
        if exc.code == "not_found":
            raise
        return _alarm(request, alarm_id, 409, note_error=exc.message)
    return go(request, f"/alarms/{alarm_id}")


@router.post("/alarms/{alarm_id}/close")
def close(request: Request, session: Posted, alarm_id: int) -> Response:
    form = request.state.form
    note = field(form, "note")
    if not note:
        return _alarm(request, alarm_id, 422, note_error="Say what was done: the note is kept with the alarm.")
    rt = runtime(request)
    try:
        alarms.close(rt.engine, session.caller, alarm_id, at=rt.clock(), note=note[:500])
    except VendError as exc:
        if exc.code == "not_found":
            raise
        return _alarm(request, alarm_id, 409, note_error=exc.message)
    return go(request, f"/alarms/{alarm_id}")
