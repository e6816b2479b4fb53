"""Key change campaigns: move a whole fleet to a new key (TID rollover, KRN rotation, EA migration).

A campaign goes plan → generate → deliver → confirm. Planning fixes the list
of meters (and splits it into batches); generation makes every meter's key
change set with the bulk token engine and commits batch by batch, so a run
that stops half-way resumes where it stopped; delivery is a CSV for field
teams, a queue for SMS, or the next purchase; each meter is tracked as
planned, issued, delivered and confirmed in ``key_changes``.
"""

from .service import (
    DELIVERIES,
    check_generatable,
    export_csv,
    generate,
    get_campaign,
    mark,
    plan,
    queue_sms,
)

__all__ = ["DELIVERIES", "check_generatable", "export_csv", "generate", "get_campaign", "mark", "plan", "queue_sms"]
