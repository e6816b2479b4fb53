"""Background jobs through the outbox: a campaign's generation runs in ``mita worker``, not in an API process.

The HTTP route queues the job in its request (:func:`enqueue_campaign_generation`, channel
``campaign.generate``, recipient the campaign's id) and answers 202; a worker runs
:func:`mita.campaign.generate`, which commits batch by batch and resumes at its first unfinished batch. (The
campaign service sits above the outbox: the worker's shell hands :class:`CampaignGenerator` that function.) The
job renews its lease after every batch, so no row lock is held while it runs, and a worker that dies leaves
the job to another once the lease ends: that one resumes where the first stopped. A worker asked to stop
ends the job after its current batch and gives the row back (due at once, the try not counted).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import Connection, Engine, select

from mita import sts
from mita.sealing import KeyStoreError
from mita.vend.errors import VendError
from mita.vend.keyring import KeyRing
from mita.vend.schema import campaigns, outbox
from mita.vend.service import Caller

from .queue import PENDING, enqueue
from .senders import Interrupted, Message, SendError

log = logging.getLogger("mita.outbox")

CAMPAIGN_GENERATE = "campaign.generate"


def enqueue_campaign_generation(
    conn: Connection, campaign_id: int, at: dt.datetime, caller_name: str, *, api_key_id: int | None = None
) -> bool:
    """Queue the generation of a campaign's planned meters (in the caller's transaction, which must have
    checked the caller may, and that the campaign is not closed). False if one is queued or running already: a
    second request while one is under way starts nothing. An unknown campaign is ``not_found``.

    The campaign's row is locked for the check, so two requests at once queue one job.
    """
    found = conn.execute(select(campaigns.c.id).where(campaigns.c.id == campaign_id).with_for_update()).first()
    if found is None:
        raise VendError("not_found", f"no campaign {campaign_id}")
    if generation_queued(conn, campaign_id):
        return False
    payload = {"campaign": campaign_id, "caller": caller_name, "api_key_id": api_key_id, "at": at.isoformat()}
    key = f"{CAMPAIGN_GENERATE}:{campaign_id}:{uuid.uuid4().hex}"  # one per request; the lock above dedupes
    return enqueue(conn, CAMPAIGN_GENERATE, str(campaign_id), key, payload, at)


def generation_queued(conn: Connection, campaign_id: int) -> bool:
    """Whether a generation of this campaign is queued or running (a pending job row)."""
    o = outbox.c
    found = conn.execute(
        select(o.id).where(o.status == PENDING, o.channel == CAMPAIGN_GENERATE, o.recipient == str(campaign_id))
    ).first()
    return found is not None


#: :func:`mita.campaign.generate`'s signature: (engine, caller, campaign id, *, at, keyring, progress) -> campaign
Generate = Callable[..., dict[str, Any]]


class CampaignGenerator:
    """The ``campaign`` sender: runs the generation a ``campaign.generate`` row asks for, with ``generate``
    (:func:`mita.campaign.generate`)."""

    def __init__(
        self,
        engine: Engine,
        generate: Generate,
        *,
        keyring: KeyRing | None = None,
        stopping: threading.Event | None = None,
    ) -> None:
        self.engine = engine
        self.generate = generate
        self.keyring = keyring or KeyRing()
        self.stopping = stopping or threading.Event()

    def send(self, message: Message) -> None:
        try:
            p = message.payload
            cid, at = int(p["campaign"]), dt.datetime.fromisoformat(p["at"])
            key_id = None if p.get("api_key_id") is None else int(p["api_key_id"])
            caller = Caller(api_key_id=key_id, name=str(p["caller"]), role="admin")  # the route checked the role
        except (KeyError, TypeError, ValueError):
            raise SendError("malformed campaign job", permanent=True) from None

        def progress(done: int, planned: int) -> None:
            if self.stopping.is_set():
                raise Interrupted(f"campaign {cid}")
            message.keepalive()

        try:
            out = self.generate(self.engine, caller, cid, at=at, keyring=self.keyring, progress=progress)
        except KeyStoreError as exc:  # the keystore's configuration (a master key, an HSM) can be put right
            raise SendError(exc.code) from None
        except sts.StsError as exc:  # refused (closed, no such campaign, key not active): asking again will not do
            raise SendError(exc.code, permanent=True) from None
        log.info("campaign %s: %s, %s", cid, out["status"], out["meters"])
