"""Commands to MQTT-native meters: published on the meter's ``cmd`` topic, answered on its ``ack`` topic.

The command lifecycle is the DLMS head-end's (``mita.vend.lifecycles.COMMAND``), one table for both transports:

* **sent**: the ``headend`` outbox sender (:class:`mita.headend.runner.CommandSender`) moves the command to
  ``sent`` as for a DLMS meter, then publishes it (:class:`Publisher`): QoS 1, the payload
  :class:`~mita.telemetry.payload.Command`, and the MQTT v5 properties *correlation data* (the command id, in
  decimal), *response topic* (``mita/v1/<meter>/ack``) and *message expiry interval* (until the command's
  deadline, so a broker holding it for an offline meter's persistent session drops it when it is no longer
  wanted). The outbox row is done when the broker has it (PUBACK); a broker that cannot be reached puts the
  command back to ``queued`` and the outbox tries again after its backoff, until the deadline.
* **acknowledged, failed, expired**: the meter's :class:`~mita.telemetry.payload.Ack` arrives at the ack listener
  (:class:`AckListener`, inside ``mita worker``): a shared subscription ``$share/<group>-acks/mita/v1/+/ack`` on a
  persistent session, so several workers split the acks and a worker that dies loses none; each ack is applied in
  one transaction and acknowledged to the broker (PUBACK) only after it committed. :func:`outcome` reads the ack as
  the DLMS path reads the meter's answers: tokens in order, ``used`` counts as delivered (it is on the meter), any
  other refusal fails the command with ``token_refused: <result>``; the result is stored in the same shape
  (``{"tokens": [{"token", "status", "result"}], "credit": ...}``, the switch, the registers), so a vend's
  ``delivery`` reads the same whichever way its tokens went. A meter's ``expired`` (it had the command after its
  deadline and did nothing) ends the command ``expired``. A command with no ack by its deadline is ended
  ``expired`` by the listener's sweep (:meth:`mita.headend.runner.CommandSender.sweep`).
* **sent again**: a PUBACK is the broker's, not the meter's (a broker restarted without persistence has lost what
  it took). The same sweep publishes a command with no ack again, same id and payload, ``MITA_MQTT_RESEND_AFTER``
  seconds after its last publish and then twice as long each time, until ``MITA_MQTT_MAX_SENDS`` publishes or
  its deadline (:meth:`mita.headend.runner.CommandSender.resend`).

A meter answers each command id once and repeats its first outcome for a repeat (``docs/telemetry.md``); an ack for
a command already ended is acknowledged to the broker and changes nothing; an ack on another meter's topic than the
command's meter is refused (logged, never applied).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from paho.mqtt import client as paho
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mita.telemetry import topics
from mita.telemetry.errors import TelemetryError
from mita.telemetry.payload import Ack, Command
from mita.telemetry.topics import Kind
from mita.vend.errors import is_transient
from mita.vend.lifecycles import CommandKind, CommandStatus
from mita.vend.remote import TOKEN_KINDS

from .mqttclient import MqttError, Session, stable_client_id

log = logging.getLogger("mita.headend")

S = CommandStatus
#: The token statuses (IC 115 token_status_code) a delivery goes on after: executed (3), and a key change section
#: kept for its other half (2). As :func:`mita.headend.runner.deliver` reads the DLMS token gateway.
TOKEN_GOES_ON = frozenset({2, 3})
#: How long a publish waits for the broker's PUBACK (seconds).
PUBLISH_TIMEOUT = 5.0
#: The ack listener's Receive Maximum: acks the broker may have sent and not had acknowledged (its back-pressure).
RECEIVE_MAXIMUM = 100
#: Seconds between sweeps of commands past their deadline with no ack.
SWEEP_EVERY = 5.0


# ---------------------------------------------------------------------- a command as a message


def epoch(at: dt.datetime) -> int:
    """A stored time (the utility's wall clock, naive: local time) as Unix seconds."""
    return int(at.timestamp())


def command_message(
    drn: str, command_id: int, kind: str, params: Mapping[str, Any], expires_at: dt.datetime, now: dt.datetime
) -> tuple[str, bytes, Properties]:
    """The topic, payload and MQTT v5 properties of a command. ``set_clock`` carries the time to set (``t``,
    Unix seconds: the head-end's clock when it publishes, as the DLMS path sets the meter to its clock then)."""
    body = dict(params)
    if kind == CommandKind.SET_CLOCK:
        body["t"] = epoch(now)
    expires = epoch(expires_at)
    payload = Command(command_id, kind, body, expires).encode()
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.CorrelationData = str(command_id).encode()
    props.ResponseTopic = topics.topic(drn, Kind.ACK)
    props.MessageExpiryInterval = max(expires - epoch(now), 1)
    return topics.topic(drn, Kind.CMD), payload, props


def correlated(message: paho.MQTTMessage, ack: Ack) -> bool:
    """Whether the correlation data (when the meter sent it back) names the payload's command."""
    data = getattr(message.properties, "CorrelationData", None)
    return not data or bytes(data) == str(ack.id).encode()


# ---------------------------------------------------------------------- an ack as the command's outcome


@dataclass(frozen=True)
class Outcome:
    """What an ack does to its command: the final status, the result to store, the error (``code: reason``)."""

    status: CommandStatus
    result: dict[str, Any] | None
    error: str | None


def outcome(kind: CommandKind, ack: Ack) -> Outcome:
    """The meter's answer read as the DLMS path reads the meter (module docstring). The meter's ``ok`` is not
    taken on trust for tokens: each token's status decides, as it does over DLMS."""
    result = None if ack.result is None else dict(ack.result)
    if not ack.ok:
        error = (ack.error or "failed").strip() or "failed"
        if error.split(":", 1)[0].strip() == "expired":
            return Outcome(S.EXPIRED, result, "expired: the meter had it after its deadline")
        code, _, reason = error.partition(":")
        shown = f"{code.strip()}: {reason.strip()}" if reason else f"{code.strip()}: refused by the meter"
        return Outcome(S.FAILED, result, shown)
    if kind in TOKEN_KINDS:
        tokens = (result or {}).get("tokens")
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, dict) for t in tokens):
            return Outcome(S.FAILED, result, "protocol: the meter's answer has no token statuses")
        for token in tokens:
            if token.get("status") in TOKEN_GOES_ON or token.get("result") == "used":
                continue
            refused = token.get("result") or token.get("status")
            return Outcome(S.FAILED, result, f"token_refused: {refused}")
    return Outcome(S.ACKNOWLEDGED, result or {}, None)


def key_changed(result: Mapping[str, Any] | None) -> bool:
    """Whether the meter executed a key change (a token answered ``key_changed``): the vend's key change is then
    confirmed, as over DLMS."""
    tokens = (result or {}).get("tokens")
    return isinstance(tokens, list) and any(isinstance(t, dict) and t.get("result") == "key_changed" for t in tokens)


# ---------------------------------------------------------------------- publishing


class Publisher:
    """One MQTT session per process that publishes commands (thread-safe: the outbox's dispatchers share it).

    Its session is not persistent (a publisher subscribes to nothing; a QoS 1 publish is the outbox's to retry),
    and its client id is this process's own, so workers on one machine do not take each other's connection."""

    def __init__(self, url: str, *, client_id: str | None = None, timeout: float = PUBLISH_TIMEOUT) -> None:
        self.timeout = timeout
        name = client_id or stable_client_id("mita-commands", os.getpid())
        self.session = Session(url, name, clean_start=True, session_expiry=0)
        self._started = False
        self._lock = threading.Lock()

    def _ready(self) -> None:
        with self._lock:
            if not self._started:
                self.session.start()
                self._started = True
        self.session.wait_connected(self.timeout)

    def publish(self, topic: str, payload: bytes, properties: Properties) -> None:
        """Publish at QoS 1 and wait for the broker's PUBACK; :class:`~mita.headend.mqttclient.MqttError`
        ``mqtt_unreachable`` (no connection, or no PUBACK in time) otherwise. A publish that timed out may still
        reach the meter later: the outbox's next try publishes the same command id again, which the meter answers
        once."""
        self._ready()
        info = self.session.client.publish(topic, payload, qos=1, retain=False, properties=properties)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_AGAIN):
            raise MqttError("mqtt_unreachable", f"the broker did not take the command ({paho.error_string(info.rc)})")
        try:
            info.wait_for_publish(self.timeout)
        except (RuntimeError, ValueError) as exc:
            raise MqttError("mqtt_unreachable", f"the broker did not take the command ({exc})") from None
        if not info.is_published():
            raise MqttError("mqtt_unreachable", f"no PUBACK from {self.session.url.shown()} in {self.timeout:g} s")

    def close(self) -> None:
        if self._started:
            self.session.stop()
            self._started = False


# ---------------------------------------------------------------------- the ack listener


class AckListener:
    """The acks of every MQTT meter, on a shared subscription with a persistent session (module docstring).

    ``settle(drn, ack)`` applies one ack in its own transaction (:meth:`mita.headend.runner.CommandSender.settle`);
    ``sweep()`` ends the commands past their deadline with no ack (and publishes again those due a re-send).
    Messages arrive on paho's thread and are applied on the thread that calls :meth:`run`, so a slow database never
    stalls the connection's keepalive; a message is acknowledged to the broker after its transaction committed,
    and only on the connection it came on (after a reconnection the broker sends it again: applying it twice
    changes nothing)."""

    def __init__(
        self,
        url: str,
        *,
        settle: Callable[[str, Ack], object],
        sweep: Callable[[], int],
        group: str = "mita",
        client_id: str | None = None,
        sweep_every: float = SWEEP_EVERY,
        receive_maximum: int = RECEIVE_MAXIMUM,
    ) -> None:
        self.settle, self.sweep, self.sweep_every = settle, sweep, sweep_every
        self.subscription = topics.subscription(Kind.ACK, f"{group}-acks")
        self.inbox: queue.Queue[tuple[int, paho.MQTTMessage]] = queue.Queue()
        self.counts = dict.fromkeys(("applied", "malformed", "errors"), 0)
        self.session = Session(
            url,
            client_id or stable_client_id("mita-acks"),
            manual_ack=True,
            receive_maximum=receive_maximum,
            on_connect=lambda _present: self.session.subscribe([self.subscription], qos=1),
            on_message=lambda message: self.inbox.put((self.session.generation, message)),
        )

    def run(self, stopping: threading.Event) -> None:
        """Listen until ``stopping`` is set; sweep every ``sweep_every`` seconds meanwhile."""
        self.session.start()
        next_sweep = 0.0
        try:
            while not stopping.is_set():
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep()
                    next_sweep = now + self.sweep_every
                try:
                    generation, message = self.inbox.get(timeout=min(0.5, max(next_sweep - now, 0.01)))
                except queue.Empty:
                    continue
                self.handle(generation, message, stopping)
        finally:
            self.session.stop()

    def handle(self, generation: int, message: paho.MQTTMessage, stopping: threading.Event | None = None) -> None:
        """Apply one message, then acknowledge it. A database that is down is waited for (tries with backoff, in
        order: acks of one meter are not reordered); a stop meanwhile leaves the message unacknowledged, which the
        broker keeps in the session for the next start."""
        delay = 0.2
        while True:
            try:
                self._apply(message)
                break
            except Exception as exc:
                if not is_transient(exc):
                    self.counts["errors"] += 1
                    log.exception("ack on %s could not be applied: left to the deadline sweep", message.topic[:80])
                    break
                log.warning("ack on %s: the database is unavailable (%s); trying again in %g s", message.topic[:80],
                            type(exc).__name__, delay)  # fmt: skip
                if stopping is not None and stopping.wait(delay):
                    return
                delay = min(delay * 2, 10.0)
        if generation == self.session.generation and message.mid:
            self.session.ack(message.mid, message.qos)

    def _apply(self, message: paho.MQTTMessage) -> None:
        try:
            drn, kind = topics.parse(message.topic)
            if kind is not Kind.ACK:
                raise TelemetryError("bad_topic", "not an ack topic")
            ack = Ack.decode(bytes(message.payload))
        except TelemetryError as exc:
            self.counts["malformed"] += 1
            log.warning("ack on %s refused: %s", message.topic[:80], exc.code)
            return
        if not correlated(message, ack):
            self.counts["malformed"] += 1
            log.warning("ack of meter %s refused: its correlation data is not command %s", drn, ack.id)
            return
        self.settle(drn, ack)
        self.counts["applied"] += 1

    def _sweep(self) -> None:
        try:
            ended = self.sweep()
        except Exception as exc:  # the next sweep tries again
            log.warning("sweep of expired MQTT commands failed: %s", type(exc).__name__)
            return
        if ended:
            log.info("%d MQTT command(s) expired with no acknowledgement", ended)
