"""The outbox as a queue: every message (receipt, SMS, webhook) and background job goes through it.

Writers queue in their own transaction with :func:`enqueue` (once per dedupe key); ``mita worker``
(:class:`Worker`) claims due rows under a lease, sends each through its channel's :class:`Sender`, and marks
it sent, retries it with backoff, or parks it dead. See :mod:`mita.outbox.queue` for the claim and its fencing,
:mod:`mita.outbox.senders` for the transports, :mod:`mita.outbox.jobs` for campaign generation.
"""

from .jobs import CAMPAIGN_GENERATE, CampaignGenerator, enqueue_campaign_generation, generation_queued
from .queue import Outgoing, depth, enqueue, enqueue_many
from .senders import (
    DEFAULT_ROUTES,
    Interrupted,
    LeaseLost,
    LogSender,
    Message,
    NullSender,
    Sender,
    SenderContext,
    SendError,
    WebhookSender,
    build_senders,
    parse_routes,
    register_kind,
)
from .worker import Counts, Policy, Worker, backoff

__all__ = [
    "CAMPAIGN_GENERATE",
    "DEFAULT_ROUTES",
    "CampaignGenerator",
    "Counts",
    "Interrupted",
    "LeaseLost",
    "LogSender",
    "Message",
    "NullSender",
    "Outgoing",
    "Policy",
    "SendError",
    "Sender",
    "SenderContext",
    "WebhookSender",
    "Worker",
    "backoff",
    "build_senders",
    "depth",
    "enqueue",
    "enqueue_campaign_generation",
    "enqueue_many",
    "generation_queued",
    "parse_routes",
    "register_kind",
]
