"""Alarms and what a meter told the head-end: the alarms' list, one alarm, a person's moves on it, a meter's
timeline and latest telemetry (admin and operator; vendors' keys are refused).

Alarms are raised by the ingest (tamper events, at once) and by the periodic detection (``mita headend detect``);
a person acknowledges one (someone is on it) and closes it with a note (dealt with). A refused move is a 409 with
its code: ``alarm_closed`` (closed is final; the same condition seen again opens a new alarm) or
``already_acknowledged``.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path

from mita.headend import alarms

from .. import alarm_models as am
from .. import listings as lm
from ..deps import ID_MAX, READERS, DrnPath, Limit, Svc, Who, v1_router
from ..problems import responses

router = v1_router("alarms")

AlarmId = Annotated[int, Path(ge=1, le=ID_MAX, description="the alarm's id")]


@router.get("/alarms", response_model=am.AlarmPage)
def list_alarms(
    caller: Who,
    svc: Svc,
    status: am.StatusFilter = None,
    meter: am.MeterFilter = None,
    rule: am.Rule = None,
    severity: am.SeverityFilter = None,
    since: lm.Since = None,
    until: lm.Until = None,
    limit: Limit = 50,
    after: lm.Cursor = None,
) -> Any:
    """Alarms, newest opened first, filtered (admin, operator). ``since`` and ``until`` bound when they opened;
    filters combine; a meter that does not exist finds nothing. Pages: pass ``next`` as ``after``."""
    f = alarms.AlarmFilter(
        status=None if status is None else status.value, meter=meter, rule=rule,
        severity=None if severity is None else severity.value, since=since, until=until,
    )  # fmt: skip
    return alarms.list_alarms(svc.engine, caller, f, limit, after)


@router.get("/alarms/{alarm_id}", response_model=am.AlarmOut, responses=responses(404))
def get_alarm(alarm_id: AlarmId, caller: Who, svc: Svc) -> Any:
    """One alarm, with its evidence (admin, operator)."""
    return alarms.get(svc.engine, caller, alarm_id)


@router.post("/alarms/{alarm_id}/acknowledge", response_model=am.AlarmOut, responses=responses(404, 409))
def acknowledge(alarm_id: AlarmId, caller: Who, svc: Svc) -> Any:
    """Someone is on it (admin, operator): open -> acknowledged. Repeats of its condition keep counting on it.
    Audited. 409 ``already_acknowledged``, or ``alarm_closed``."""
    return alarms.acknowledge(svc.engine, caller, alarm_id, at=svc.clock())


@router.post("/alarms/{alarm_id}/close", response_model=am.AlarmOut, responses=responses(404, 409))
def close(alarm_id: AlarmId, body: am.AlarmCloseIn, caller: Who, svc: Svc) -> Any:
    """Dealt with (admin, operator): open or acknowledged -> closed, with a note of what was found and done.
    Final: the same condition seen again opens a new alarm. Audited. 409 ``alarm_closed`` if it was closed."""
    return alarms.close(svc.engine, caller, alarm_id, at=svc.clock(), note=body.note)


@router.get("/meters/{drn}/timeline", response_model=am.TimelinePage, responses=responses(404))
def timeline(drn: DrnPath, caller: Who, svc: Svc, limit: Limit = 50, after: lm.Cursor = None) -> Any:
    """What happened at a meter, newest first (admin, operator): its alarms, the events it reported, the
    head-end's commands and its vends, in one shape with a ``type``. Pages: pass ``next`` as ``after``."""
    return alarms.timeline(svc.engine, caller, drn, limit, after)


@router.get("/meters/{drn}/telemetry", response_model=am.TelemetryOut, responses=responses(404))
def telemetry(drn: DrnPath, caller: Who, svc: Svc) -> Any:
    """The meter's latest reading and status (admin, operator); 404 ``not_found`` when it reported nothing."""
    caller.require(*READERS)
    return alarms.telemetry(svc.engine, caller, drn)
