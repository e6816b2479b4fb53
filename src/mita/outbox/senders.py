"""How a queued message leaves: one small interface, the built-in transports, and which channel uses which.

A :class:`Sender` gets a :class:`Message` and returns when it was delivered, or raises :class:`SendError`
(``permanent`` for a refusal that a retry cannot change). Every message carries its row's dedupe key, so a
receiver can drop a repeat: after a crash a message may be delivered again, never lost.

Built in: ``log`` (logs channel, recipient and dedupe key; never the payload at INFO), ``webhook`` (an HTTP POST
of the payload, signed) and ``null`` (does nothing: benchmarks); ``mita worker`` adds ``campaign`` (runs a
campaign's generation, :mod:`mita.outbox.jobs`). ``MITA_OUTBOX_SENDERS`` maps channels to them, e.g.
``receipt=log,sms=log,webhook=webhook``, over :data:`DEFAULT_ROUTES`; ``channel=off`` leaves a channel to
other workers. Others (an SMS gateway, a head-end) add theirs with :func:`register_kind`.

Nothing here reads the process environment: the shell hands it in (:class:`SenderContext`).
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import logging
import re
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from sqlalchemy import Engine

from mita import __version__
from mita.vend.errors import VendError

from .queue import Claimed

log = logging.getLogger("mita.outbox")


class SendError(Exception):
    """A send that failed. ``reason`` is short and never a secret: it is logged and kept in ``last_error``."""

    def __init__(self, reason: str, *, permanent: bool = False, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent
        self.retry_after = retry_after


class Interrupted(Exception):
    """The worker is stopping: the try is given back (due again at once, not counted as an attempt)."""


class LeaseLost(Exception):
    """Another worker took the row over (this worker's lease ran out): stop, and write nothing about it."""


def _no_keepalive() -> None:
    return None


@dataclass(frozen=True)
class Message(Claimed):
    """One outbox row, as a sender sees it: the claimed row (``attempts`` is this try's number, 1 the first),
    and how to keep the claim."""

    #: renews the worker's lease on the row: a long job calls it between its steps (raises LeaseLost if gone)
    keepalive: Callable[[], None] = field(default=_no_keepalive, repr=False, compare=False)


class Sender(Protocol):
    def send(self, message: Message) -> None:
        """Deliver ``message`` (with its dedupe key), or raise :class:`SendError`."""
        ...


class NullSender:
    """Sends nothing (benchmarks: the queue's own cost)."""

    def send(self, message: Message) -> None:
        return None


class LogSender:
    """Logs that the message went: channel, recipient and dedupe key (the payload, tokens and all, never at INFO)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or log

    def send(self, message: Message) -> None:
        self.log.info("%s to %s [%s]", message.channel, message.recipient or "-", message.dedupe_key)
        if self.log.isEnabledFor(logging.DEBUG) and isinstance(message.payload, Mapping):
            self.log.debug("%s payload fields: %s", message.dedupe_key, ", ".join(sorted(message.payload)))


#: A response that a retry cannot change: dead at once (408 and 429 ask for a retry).
def _permanent(status: int) -> bool:
    return 400 <= status < 500 and status not in (408, 429)


class WebhookSender:
    """An HTTP POST of the message's JSON payload, with ``X-Mita-Signature: sha256=<hex HMAC-SHA256 of the body>``
    and ``Idempotency-Key: <dedupe key>``. 2xx: sent; 4xx other than 408 and 429: dead at once; anything else
    (5xx, 408, 429, a timeout, a refused connection): tried again later, after ``Retry-After`` if it says so.

    The URL is the one named by the row's recipient in ``urls``, else ``url``. Redirects are not followed (a
    POST must not turn into a GET somewhere else): a 3xx is retried, and dies if it stays.
    """

    def __init__(
        self, url: str | None, secret: bytes, *, urls: Mapping[str, str] | None = None, timeout: float = 10.0
    ) -> None:
        self.url = url
        self.urls = dict(urls or {})
        for each in ([url] if url else []) + list(self.urls.values()):
            parts = urlsplit(each)
            if parts.scheme not in ("http", "https") or not parts.hostname or parts.username or parts.password:
                raise VendError("outbox_misconfigured", "a webhook URL is http(s)://host[:port]/path, without a login")
        if not self.url and not self.urls:
            raise VendError("outbox_misconfigured", "the webhook sender needs MITA_WEBHOOK_URL or MITA_WEBHOOK_URLS")
        if len(secret) < 16:
            raise VendError("outbox_misconfigured", "the webhook secret must have at least 16 characters")
        if not 0 < timeout <= 300:
            raise VendError("outbox_misconfigured", "the webhook timeout is 0..300 seconds")
        self._secret = secret
        self.timeout = timeout
        self._tls = ssl.create_default_context()

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> WebhookSender:
        """``MITA_WEBHOOK_URL`` (and/or ``MITA_WEBHOOK_URLS``: ``name=url`` pairs, comma or space separated),
        the secret from ``MITA_WEBHOOK_SECRET`` or the file ``MITA_WEBHOOK_SECRET_FILE``, and
        ``MITA_WEBHOOK_TIMEOUT`` (seconds, default 10)."""
        urls: dict[str, str] = {}
        for item in re.split(r"[,\s]+", env.get("MITA_WEBHOOK_URLS", "").strip()):
            if item:
                name, sep, url = item.partition("=")
                if not sep or not name or not url:
                    raise VendError("outbox_misconfigured", "MITA_WEBHOOK_URLS holds name=url pairs")
                urls[name] = url
        try:
            timeout = float(env.get("MITA_WEBHOOK_TIMEOUT", "10"))
        except ValueError:
            raise VendError("outbox_misconfigured", "MITA_WEBHOOK_TIMEOUT is a number of seconds") from None
        return cls(env.get("MITA_WEBHOOK_URL") or None, webhook_secret(env), urls=urls, timeout=timeout)

    def signature(self, body: bytes) -> str:
        return "sha256=" + hmac.new(self._secret, body, hashlib.sha256).hexdigest()

    def send(self, message: Message) -> None:
        url = self.urls.get(message.recipient, self.url)
        if url is None:
            raise SendError("no webhook URL for this recipient", permanent=True)
        body = json.dumps(message.payload, separators=(",", ":"), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": message.dedupe_key,
            "X-Mita-Signature": self.signature(body),
            "X-Mita-Channel": message.channel,
            "User-Agent": f"mita/{__version__}",
        }
        parts = urlsplit(url)
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host, port = parts.hostname or "", parts.port
        conn: http.client.HTTPConnection
        if parts.scheme == "https":
            conn = http.client.HTTPSConnection(host, port, timeout=self.timeout, context=self._tls)
        else:
            conn = http.client.HTTPConnection(host, port, timeout=self.timeout)
        try:
            conn.request("POST", target, body=body, headers=headers)
            response = conn.getresponse()
            response.read(65536)
            status, retry_after = response.status, response.getheader("Retry-After")
        except (OSError, http.client.HTTPException) as exc:  # the error's class only: never the URL
            raise SendError(type(exc).__name__) from None
        finally:
            conn.close()
        if 200 <= status < 300:
            return
        wait = float(retry_after) if retry_after and retry_after.strip().isdigit() else None
        raise SendError(f"HTTP {status}", permanent=_permanent(status), retry_after=wait)


def webhook_secret(env: Mapping[str, str]) -> bytes:
    """The webhook signing secret: ``MITA_WEBHOOK_SECRET``, or the file named by ``MITA_WEBHOOK_SECRET_FILE``
    (surrounding whitespace ignored). Never from the command line."""
    text, path = env.get("MITA_WEBHOOK_SECRET"), env.get("MITA_WEBHOOK_SECRET_FILE")
    if text and path:
        raise VendError("outbox_misconfigured", "set MITA_WEBHOOK_SECRET or MITA_WEBHOOK_SECRET_FILE, not both")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeError):
            raise VendError("outbox_misconfigured", "MITA_WEBHOOK_SECRET_FILE cannot be read") from None
    secret = (text or "").strip().encode()
    if not secret:
        raise VendError("outbox_misconfigured", "the webhook sender needs MITA_WEBHOOK_SECRET or ..._SECRET_FILE")
    return secret


# ---------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class SenderContext:
    """What a sender may need to be made: the database, the worker's stop flag, the environment."""

    engine: Engine
    stopping: threading.Event
    env: Mapping[str, str]


SenderFactory = Callable[[SenderContext], Sender]
_KINDS: dict[str, SenderFactory] = {}


def register_kind(name: str, factory: SenderFactory) -> None:
    """Make a kind of sender available to ``MITA_OUTBOX_SENDERS`` (a gateway, a head-end, a test's)."""
    _KINDS[name] = factory


register_kind("null", lambda ctx: NullSender())
register_kind("log", lambda ctx: LogSender())
register_kind("webhook", lambda ctx: WebhookSender.from_env(ctx.env))

#: Which sender each channel uses unless ``MITA_OUTBOX_SENDERS`` says otherwise.
DEFAULT_ROUTES = {"receipt": "log", "sms": "log", "campaign.generate": "campaign"}
OFF = "off"


def parse_routes(text: str | None, defaults: Mapping[str, str] = DEFAULT_ROUTES) -> dict[str, str]:
    """``channel=kind`` pairs (comma or space separated) over ``defaults``; ``channel=off`` drops a channel."""
    routes = dict(defaults)
    for item in re.split(r"[,\s]+", (text or "").strip()):
        if not item:
            continue
        channel, sep, kind = item.partition("=")
        if not sep or not channel or not kind:
            raise VendError("outbox_misconfigured", "MITA_OUTBOX_SENDERS holds channel=sender pairs")
        if kind == OFF:
            routes.pop(channel, None)
        elif kind not in _KINDS:
            raise VendError("outbox_misconfigured", f"no sender {kind!r} (there are {', '.join(sorted(_KINDS))})")
        else:
            routes[channel] = kind
    return routes


def build_senders(routes: Mapping[str, str], ctx: SenderContext) -> dict[str, Sender]:
    """One sender per kind, shared by the channels that use it."""
    made: dict[str, Sender] = {}
    for kind in sorted(set(routes.values())):
        if kind not in _KINDS:
            raise VendError("outbox_misconfigured", f"no sender {kind!r} (there are {', '.join(sorted(_KINDS))})")
        made[kind] = _KINDS[kind](ctx)
    return {channel: made[kind] for channel, kind in routes.items()}
