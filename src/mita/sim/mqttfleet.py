"""MQTT meters on a broker: each simulated meter (:class:`~mita.sim.mqttmeter.MeterSim`) its own MQTT v5 session,
all of them on one asyncio loop (``mita sim mqtt``).

Each meter connects as ``mita-meter-<DRN>`` with ``clean_start`` false and a session expiry of
:data:`SESSION_EXPIRY`, so the broker keeps its subscription to ``mita/v1/<DRN>/cmd`` and the commands published
while it is offline (each until its own message expiry), and hands them over when it is back. Its last will is the
retained status offline; on every connection it publishes the status online (retained) and subscribes again. A
meter that dies (an injected ``dead`` fault) disconnects with reason code 0x04, *disconnect with will message*, so
the broker publishes its will, and never comes back.

paho-mqtt runs here without its threads: each client's socket is watched by the event loop
(``on_socket_open``/``register_write`` callbacks: paho's documented external-loop interface), so a thousand meters
are a thousand sockets in one thread, not a thousand threads. One task ticks the meters (every
``min(interval / speed, 1)`` seconds of real time) and one, every second, keeps the connections: paho's
keepalive (``loop_misc``) and reconnecting after a loss, with backoff. While a meter is not connected its
messages wait in its client (at most :data:`QUEUE`; more are dropped and counted), as a meter keeps its load
profile until its link is back.

This module does not use the head-end's MQTT client (:mod:`mita.headend.mqttclient`): the simulated meter and the
head-end never import each other (an import-linter contract), and the meter's needs are small.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, Self
from urllib.parse import unquote, urlsplit

from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from mita.telemetry import topics
from mita.telemetry.topics import Kind

from .loopthread import LoopThread
from .mqttmeter import Message, MeterSim, SimError, ack_topic_ok

log = logging.getLogger("mita.sim.mqtt")

#: How long the broker keeps an offline meter's session, its subscription and the commands waiting for it.
SESSION_EXPIRY = 7 * 86_400
KEEPALIVE = 60
#: Messages a meter keeps while its broker is away (its load profile memory); more are dropped, and counted.
QUEUE = 10_000
#: Reconnection backoff, seconds: doubled from the first to the last after each failure.
BACKOFF = (1.0, 30.0)


class Broker(NamedTuple):
    """Where the broker is: ``mqtt://[user[:password]@]host[:port]`` (``mqtts://`` for TLS)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def __repr__(self) -> str:  # never the password
        return f"Broker({self.host!r}, {self.port})"

    def shown(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker(url: str) -> Broker:
    """The broker of a URL; :class:`SimError` ``bad_mqtt_url`` names what is wrong, never the text (a password)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        raise SimError("bad_mqtt_url", "the MQTT URL is not mqtt://[user[:password]@]host:port") from None
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise SimError("bad_mqtt_url", "the MQTT URL is mqtt://[user[:password]@]host:port (or mqtts://)")
    return Broker(
        parts.hostname,
        port or (8883 if parts.scheme == "mqtts" else 1883),
        None if parts.username is None else unquote(parts.username),
        None if parts.password is None else unquote(parts.password),
        parts.scheme == "mqtts",
    )


class SimClock:
    """The simulation's true time: from ``start`` (epoch seconds), ``speed`` times faster than real time."""

    def __init__(self, start: float | None = None, speed: float = 1.0) -> None:
        if speed <= 0:
            raise ValueError("the speed is positive")
        self.start = time.time() if start is None else start
        self.speed = speed
        self._t0 = time.monotonic()

    def now(self) -> int:
        return int(self.start + (time.monotonic() - self._t0) * self.speed)


class ManualClock:
    """A clock in a test's hand: ``clock.t`` is the true time."""

    speed = 1.0

    def __init__(self, t: int) -> None:
        self.t = t

    def now(self) -> int:
        return self.t


class _Link:
    """One meter's MQTT session: its paho client, its socket on the event loop."""

    def __init__(self, sim: MeterSim, fleet: MqttFleet) -> None:
        self.sim, self.fleet = sim, fleet
        self.cmd, self.ack = topics.topic(sim.drn, Kind.CMD), topics.topic(sim.drn, Kind.ACK)
        self.paused = False  # taken offline by the test or the operator: not reconnected
        self.gone = False  # dead: never reconnected
        self.retry_at, self.delay = 0.0, BACKOFF[0]
        self.connected = False
        client = paho.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"mita-meter-{sim.drn}",
            protocol=MQTTProtocolVersion.MQTTv5,
        )
        broker = fleet.broker
        if broker.username is not None:
            client.username_pw_set(broker.username, broker.password)
        if broker.tls:
            client.tls_set()
        client.will_set(topics.topic(sim.drn, Kind.STATUS), sim.will(), qos=1, retain=True)
        client.max_queued_messages_set(QUEUE)
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        client.on_message = self._message
        client.on_socket_open = self._socket_open
        client.on_socket_close = self._socket_close
        client.on_socket_register_write = self._want_write
        client.on_socket_unregister_write = self._done_writing
        self.client = client

    # ------------------------------------------------------------ the socket on the loop

    def _socket_open(self, client: Any, _userdata: Any, sock: Any) -> None:
        self.fleet.loop.add_reader(sock, self._read)

    def _socket_close(self, client: Any, _userdata: Any, sock: Any) -> None:
        self.fleet.loop.remove_reader(sock)

    def _want_write(self, client: Any, _userdata: Any, sock: Any) -> None:
        self.fleet.loop.add_writer(sock, self._write)

    def _done_writing(self, client: Any, _userdata: Any, sock: Any) -> None:
        self.fleet.loop.remove_writer(sock)

    def _read(self) -> None:
        self.client.loop_read()

    def _write(self) -> None:
        self.client.loop_write()

    # ------------------------------------------------------------ the session

    def connect(self) -> None:
        """Start a connection (the CONNACK comes on the loop); a refused TCP connection is retried later."""
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.fleet.session_expiry
        broker = self.fleet.broker
        try:
            self.client.connect(broker.host, broker.port, keepalive=self.fleet.keepalive, clean_start=False,
                                properties=props)  # fmt: skip
        except OSError as exc:
            self._later(f"{exc.strerror or exc}")

    def reconnect(self) -> None:
        try:
            self.client.reconnect()
        except OSError as exc:
            self._later(f"{exc.strerror or exc}")

    def _later(self, why: str) -> None:
        self.retry_at = time.monotonic() + self.delay
        log.debug("meter %s: no connection to %s (%s); again in %g s", self.sim.drn, self.fleet.broker.shown(), why,
                  self.delay)  # fmt: skip
        self.delay = min(self.delay * 2, BACKOFF[1])

    def _connected(self, client: Any, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any) -> None:
        if reason.is_failure:
            log.warning("meter %s: the broker refused it: %s", self.sim.drn, reason)
            self._later(str(reason))
            return
        self.connected, self.delay = True, BACKOFF[0]
        client.subscribe(self.cmd, qos=1)
        self.fleet.publish(self, self.sim.status(self.fleet.clock.now()))
        self.fleet.connected.add(self.sim.drn)

    def _disconnected(self, client: Any, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any) -> None:
        self.connected = False
        self.fleet.connected.discard(self.sim.drn)
        if not (self.paused or self.gone or self.fleet.stopping):
            log.info("meter %s: disconnected (%s)", self.sim.drn, reason)
            self.retry_at = time.monotonic() + self.delay

    def _message(self, client: Any, _userdata: Any, message: paho.MQTTMessage) -> None:
        try:
            self.fleet.command(self, message)
        except Exception:  # a bug must not stop the loop: the command stays unanswered (the head-end expires it)
            log.exception("meter %s: a command failed", self.sim.drn)

    def misc(self, now: float) -> None:
        """Once a second: keepalive, or a reconnection when it is due."""
        if self.paused or self.gone:
            return
        if self.client.socket() is None:
            if now >= self.retry_at:
                self.retry_at = now + self.delay  # until the attempt says otherwise
                self.reconnect()
        else:
            self.client.loop_misc()


class MqttFleet:
    """Meters on a broker, on the running asyncio loop: :meth:`start`, then :meth:`run` until stopped, then
    :meth:`stop`. ``clock`` is the simulation's true time (:class:`SimClock`); ``wall`` the meters'
    communication clock, which a command's expiry is judged by."""

    def __init__(
        self,
        sims: Sequence[MeterSim],
        url: str,
        *,
        clock: SimClock | ManualClock,
        wall: Callable[[], float] = time.time,
        session_expiry: int = SESSION_EXPIRY,
        keepalive: int = KEEPALIVE,
    ) -> None:
        drns = [s.drn for s in sims]
        if len(set(drns)) != len(drns):
            raise SimError("duplicate_meter", "a meter is in the fleet twice")
        self.sims = list(sims)
        self.broker = parse_broker(url)
        self.clock, self.wall = clock, wall
        self.session_expiry, self.keepalive = session_expiry, keepalive
        self.loop = asyncio.get_running_loop()
        self.links = {s.drn: _Link(s, self) for s in sims}
        self.connected: set[str] = set()
        self.stopping = False
        self.counts = dict.fromkeys(("readings", "events", "acks", "dropped"), 0)
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def tick_s(self) -> float:
        """Real seconds between ticks: an interval of simulated time, at most a second, at least 10 ms."""
        interval = min((s.interval for s in self.sims), default=900)
        return max(min(interval / self.clock.speed, 1.0), 0.01)

    async def start(self, timeout: float = 10.0) -> None:
        """Connect every meter and power it up; return when all are connected (``mqtt_unreachable`` when none
        is after ``timeout``; the others go on trying in the background)."""
        for link in self.links.values():
            link.connect()
        self._tasks.append(asyncio.create_task(self._keep()))
        deadline = time.monotonic() + timeout
        while len(self.connected) < len(self.links) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if not self.connected and self.links:
            await self.stop(flush=False)
            raise SimError("mqtt_unreachable", f"no meter could connect to {self.broker.shown()} in {timeout:g} s")
        t = self.clock.now()
        for link in self.links.values():
            self._send(link, link.sim.start(t))
        self._tasks.append(asyncio.create_task(self._ticking()))

    def tick(self) -> None:
        """Every meter advanced to the clock's time; what it says published; a meter that died now sends its will."""
        t = self.clock.now()
        for link in self.links.values():
            if link.gone or link.sim.dead:
                continue
            self._send(link, link.sim.advance(t))
            if link.sim.dead:
                self.die(link)

    def die(self, link: _Link) -> None:
        """The meter stops: a DISCONNECT with reason 0x04, so the broker publishes its last will."""
        link.gone = True
        with_will = ReasonCode(PacketTypes.DISCONNECT, identifier=4)
        link.client.disconnect(reasoncode=with_will)
        log.info("meter %s: dead (its last will sent)", link.sim.drn)

    def offline(self, drn: str, *, will: bool = True) -> None:
        """Take a meter off the broker (a power cut: with its will) until :meth:`online`; its session stays."""
        link = self.links[drn]
        link.paused = True
        reason = ReasonCode(PacketTypes.DISCONNECT, identifier=4 if will else 0)
        link.client.disconnect(reasoncode=reason)

    def online(self, drn: str) -> None:
        link = self.links[drn]
        link.paused, link.retry_at, link.delay = False, 0.0, BACKOFF[0]
        link.reconnect()

    def command(self, link: _Link, message: paho.MQTTMessage) -> None:
        props = message.properties
        correlation = getattr(props, "CorrelationData", None)
        response = getattr(props, "ResponseTopic", None)
        ack, events = link.sim.command(bytes(message.payload), self.clock.now(), int(self.wall()), correlation)
        self._send(link, events)
        if ack is None:
            return
        out = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        if correlation:
            out.CorrelationData = bytes(correlation)
        self.publish(link, Message(Kind.ACK, ack.encode()), topic=ack_topic_ok(response, link.ack), properties=out)

    def publish(self, link: _Link, message: Message, *, topic: str | None = None,
                properties: Properties | None = None) -> None:  # fmt: skip
        name = topic or topics.topic(link.sim.drn, message.kind)
        info = link.client.publish(name, message.payload, qos=1, retain=message.retain, properties=properties)
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
            self.counts["dropped"] += 1
            return
        counted = {Kind.READINGS: "readings", Kind.EVENTS: "events", Kind.ACK: "acks"}.get(message.kind)
        if counted is not None:
            self.counts[counted] += 1

    def _send(self, link: _Link, messages: list[Message]) -> None:
        for message in messages:
            self.publish(link, message)

    async def _ticking(self) -> None:
        while not self.stopping:
            await asyncio.sleep(self.tick_s)
            self.tick()

    async def _keep(self) -> None:
        while not self.stopping:
            now = time.monotonic()
            for link in self.links.values():
                link.misc(now)
            await asyncio.sleep(1.0)

    async def stop(self, *, flush: bool = True, timeout: float = 5.0) -> None:
        """Stop ticking; each live meter publishes what it has not yet pushed, ``power_down`` and its status
        offline, then disconnects cleanly (its session kept for :data:`SESSION_EXPIRY`)."""
        self.stopping = True
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        t = self.clock.now()
        for link in self.links.values():
            if flush and not (link.gone or link.sim.dead) and link.connected:
                self._send(link, link.sim.stop(t))
            link.client.disconnect()
        deadline = time.monotonic() + timeout
        while any(link.client.socket() is not None for link in self.links.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        for link in self.links.values():
            sock = link.client.socket()
            if sock is not None:  # the broker did not close it: close it here
                with contextlib.suppress(Exception):
                    self.loop.remove_reader(sock)
                    self.loop.remove_writer(sock)
                    sock.close()


class MqttFleetThread(LoopThread[MqttFleet]):
    """A fleet on its own event loop in a daemon thread (tests, benchmarks): ``start()`` returns when every meter
    is connected and powered up; :meth:`call` runs a function on the fleet's loop (where the meters live)."""

    def __init__(self, sims: Sequence[MeterSim], url: str, **options: Any) -> None:
        super().__init__("mita-sim-mqtt")
        self._args, self._options = (list(sims), url), options

    def start(self, timeout: float = 30.0) -> Self:
        async def begin() -> MqttFleet:
            fleet = MqttFleet(*self._args, **self._options)
            await fleet.start(timeout)
            return fleet

        return self._begin(begin(), timeout + 5)

    def stop(self, timeout: float = 10.0, *, flush: bool = True) -> None:
        self._end(lambda fleet: fleet.stop(flush=flush), timeout)
