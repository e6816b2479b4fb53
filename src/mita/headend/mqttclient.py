"""The head-end's MQTT v5 client: one way to reach the broker for the ingest workers, the command sender and the
ack listener (paho-mqtt 2, behind a few typed functions).

What every head-end client is:

* **named by a broker URL**, ``mqtt://[user[:password]@]host:port`` (``mqtts://`` for TLS, port 8883 by default),
  which :func:`parse_url` splits into a :class:`BrokerUrl`; the password is never in its ``repr``, in
  :meth:`BrokerUrl.shown`, in a log line or in an error (:class:`MqttError` says which part is wrong, not what it
  held);
* **a persistent session** (:func:`session`): a stable client id (:func:`stable_client_id`: one per host and
  index, so a restarted worker takes its own session back), ``clean_start`` false on every connect and a session
  expiry interval, so the broker keeps the session's subscriptions and its unacknowledged QoS 1 messages while
  the process is down, and hands them back when it returns;
* **reconnecting with backoff** (paho's network thread doubles the wait from ``min_delay`` to ``max_delay``),
  with the CONNECT's properties (session expiry, Receive Maximum) sent again on each reconnect;
* optionally with a **last will** (:class:`Will`), sent by the broker when the connection drops without a
  DISCONNECT, and a **Receive Maximum**: the number of QoS 1 messages the broker may have sent and not had
  acknowledged. With ``manual_ack`` that window is the client's back-pressure: a consumer that acknowledges after
  its work is done stops the flow at the broker, which keeps the rest in the session's queue.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import unquote, urlsplit

from paho.mqtt import _packet as paho_packets
from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

log = logging.getLogger("mita.headend.mqtt")

#: A day: long enough for a worker's restart, a machine's reboot or an upgrade; a session left past it (a worker
#: retired for good) is dropped by the broker with whatever it still held.
DEFAULT_SESSION_EXPIRY = 86_400
DEFAULT_PORTS = {"mqtt": 1883, "mqtts": 8883}
#: MQTT's limit on a client id is broker-defined past 23 characters; Mosquitto takes 65,535. Kept readable.
MAX_CLIENT_ID = 64


class MqttError(Exception):
    """A broker URL or connection failure, with a stable ``code`` (``bad_mqtt_url``, ``mqtt_unreachable``,
    ``mqtt_refused``); the message never holds a password."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@dataclass(frozen=True)
class BrokerUrl:
    """Where the broker is and who we are to it. ``password`` is left out of ``repr``: print :meth:`shown`."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False

    def shown(self) -> str:
        """The URL for logs and messages: the user named, the password replaced by ``***``."""
        scheme = "mqtts" if self.tls else "mqtt"
        who = ""
        if self.username is not None:
            who = self.username + (":***" if self.password is not None else "") + "@"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{who}{host}:{self.port}"


def parse_url(text: str) -> BrokerUrl:
    """``mqtt://[user[:password]@]host[:port]`` (or ``mqtts://``) as a :class:`BrokerUrl`; ``bad_mqtt_url``
    otherwise, naming what is wrong without echoing the text (it may hold a password)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        raise MqttError("bad_mqtt_url", "the MQTT URL is not mqtt://[user[:password]@]host:port") from None
    if parts.scheme not in DEFAULT_PORTS:
        raise MqttError("bad_mqtt_url", "the MQTT URL's scheme is mqtt:// or mqtts://")
    if not parts.hostname:
        raise MqttError("bad_mqtt_url", "the MQTT URL names no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise MqttError("bad_mqtt_url", "the MQTT URL has a path, query or fragment: only host and port are used")
    if port == 0:
        raise MqttError("bad_mqtt_url", "the MQTT URL's port is 1 to 65535")
    return BrokerUrl(
        host=parts.hostname,
        port=port or DEFAULT_PORTS[parts.scheme],
        username=None if parts.username is None else unquote(parts.username),
        password=None if parts.password is None else unquote(parts.password),
        tls=parts.scheme == "mqtts",
    )


def stable_client_id(role: str, index: int = 0, host: str | None = None) -> str:
    """``<role>-<host>-<index>``: the same on every start of the same process on the same machine (so the broker
    hands it its persistent session back), different for each index on one machine. Characters outside
    ``[A-Za-z0-9_-]`` become ``-``."""
    name = host if host is not None else socket.gethostname()
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "-" for c in f"{role}-{name}")
    suffix = f"-{index}"
    return safe[: MAX_CLIENT_ID - len(suffix)] + suffix


class Will(NamedTuple):
    """A last will: published by the broker for us when our connection drops without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


def connect_properties(session_expiry: int, receive_maximum: int | None = None) -> Properties:
    """The CONNECT's properties: how long the broker keeps the session after a disconnect (seconds), and how many
    unacknowledged QoS 1/2 messages it may send us (1 to 65,535; None: the broker's default, 65,535)."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = int(session_expiry)
    if receive_maximum is not None:
        if not 1 <= receive_maximum <= 65_535:
            raise ValueError("Receive Maximum is 1 to 65535")
        props.ReceiveMaximum = int(receive_maximum)
    return props


#: What one read takes from the socket (paho reads a packet in three or more reads of a few octets each).
READ_SIZE = 65_536
#: Packets read in one go before paho's loop gets to write (acknowledgements, pings) again.
READ_BURST = 1_000
_DISCONNECTING = paho._ConnectionState.MQTT_CS_DISCONNECTING  # type: ignore[attr-defined]
#: How long a clean disconnect waits for the broker to close its side.
DRAIN_SECONDS = 2.0
_PUBACK = struct.Struct("!BBH")
_PUBACK_TYPE = 0x40


class _QuickProperties(Properties):
    """paho's MQTT v5 properties of one packet, without building paho's tables again for each.

    paho decodes every PUBLISH's properties into a new ``Properties``, whose ``__init__`` builds three tables (27
    names, their types, the packets they apply to) and then clears its 27 attributes one ``hasattr`` at a time:
    ~15 % of an ingest worker's CPU at 10,000 messages a second. The tables never change, so this one shares
    them; everything else is paho's. Installed in ``paho.mqtt._packet`` (the decoder of received packets) when
    this module is imported; tests/headend/test_ingest_mqttclient.py checks it decodes as paho's does."""

    def __init__(self, packetType: int) -> None:
        object.__setattr__(self, "packetType", packetType)
        object.__setattr__(self, "types", _TABLES.types)
        object.__setattr__(self, "names", _TABLES.names)
        object.__setattr__(self, "properties", _TABLES.properties)

    def unpack(self, buffer: bytes) -> tuple[Properties, int]:
        """No properties (a length of 0, one octet), on a fresh object: nothing to clear, nothing to read; paho's
        ``unpack`` clears its 27 attributes first, one ``hasattr`` each."""
        if buffer[:1] == b"\x00" and len(self.__dict__) == 4:
            return self, 1
        result: tuple[Properties, int] = super().unpack(buffer)  # type: ignore[no-untyped-call]
        return result


_TABLES = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
setattr(paho_packets, "Properties", _QuickProperties)  # noqa: B010 (paho declares no such export)


class _BufferedSocket:
    """A socket whose ``recv`` takes up to :data:`READ_SIZE` octets from the kernel and hands them out as paho asks
    (paho reads each packet's type, length and body separately: four system calls a message, each releasing and
    taking back the interpreter's lock, which another busy thread holds for up to 5 ms each time). ``pending``
    (which paho already asks of TLS sockets) says what is buffered, so paho's loop reads on without waiting on
    ``select``. Everything else is the socket's."""

    def __init__(self, sock: Any) -> None:
        self._sock = sock
        self._buffer = b""
        self._at = 0

    def recv(self, size: int) -> bytes:
        buffered = len(self._buffer) - self._at
        if buffered <= 0:
            data: bytes = self._sock.recv(max(size, READ_SIZE))
            if len(data) <= size:
                return data
            self._buffer, self._at = data, size
            return data[:size]
        end = self._at + min(size, buffered)
        out = self._buffer[self._at : end]
        self._at = end
        if end == len(self._buffer):
            self._buffer, self._at = b"", 0
        return out

    def buffered(self) -> int:
        return len(self._buffer) - self._at

    def drain(self, seconds: float) -> None:
        """After our DISCONNECT: our side shut for writing, and what the broker still sends read and dropped until
        it closes its side. Closing a socket with unread data makes the kernel reset the connection, and a reset
        can discard what we sent last (the last PUBACKs: the broker would send those messages again)."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_WR)
            deadline = time.monotonic() + seconds
            while (left := deadline - time.monotonic()) > 0:
                if not select.select([self._sock], [], [], left)[0]:
                    return
                if not self._sock.recv(READ_SIZE):
                    return

    def pending(self) -> int:
        inner = getattr(self._sock, "pending", None)
        return self.buffered() + (int(inner()) if inner is not None else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _Client(paho.Client):
    """paho's client with buffered reads (:class:`_BufferedSocket`), a burst of packets a read, and many
    acknowledgements sent as one write (:meth:`ack_many`), and a clean close after a DISCONNECT. Relies on paho
    2's private ``_create_socket``, ``_sock_close``, ``_packet_queue``, ``_state`` and ``loop_read``'s loop:
    tests/headend/test_ingest_mqttclient.py checks they are still there, with the shapes used here."""

    def _create_socket(self) -> Any:
        return _BufferedSocket(super()._create_socket())

    def _sock_close(self) -> None:
        sock = self._sock
        if isinstance(sock, _BufferedSocket) and self._state == _DISCONNECTING:
            sock.drain(DRAIN_SECONDS)  # a clean DISCONNECT: see _BufferedSocket.drain
        super()._sock_close()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        rc = super().loop_read(max_packets)
        sock = self._sock
        burst = 1
        while rc == MQTTErrorCode.MQTT_ERR_SUCCESS and isinstance(sock, _BufferedSocket) and sock.buffered() > 0:
            if self._sock is not sock or burst >= READ_BURST:
                break
            rc = super().loop_read(max_packets)
            burst += 1
        return rc

    def ack_many(self, mids: list[int]) -> None:
        """PUBACKs of QoS 1 messages, queued as one write (one wake-up of paho's thread, one system call)."""
        if mids:
            packet = b"".join([_PUBACK.pack(_PUBACK_TYPE, 2, mid) for mid in mids])
            self._packet_queue(_PUBACK_TYPE, packet, 0, 1)


class Session:
    """A paho client on a persistent session, its network loop on paho's own thread.

    ``on_connect(session_present)`` runs on each successful CONNACK (subscribe there: a broker that lost the
    session forgets its subscriptions); ``generation`` counts connections, so that a consumer acknowledging late
    can tell a message of an earlier connection (whose packet id means nothing on this one: the broker sends it
    again) from one of this connection.
    """

    def __init__(
        self,
        url: BrokerUrl | str,
        client_id: str,
        *,
        session_expiry: int = DEFAULT_SESSION_EXPIRY,
        receive_maximum: int | None = None,
        manual_ack: bool = False,
        will: Will | None = None,
        keepalive: int = 30,
        min_delay: int = 1,
        max_delay: int = 30,
        clean_start: bool = False,
        on_connect: Callable[[bool], None] | None = None,
        on_message: Callable[[paho.MQTTMessage], None] | None = None,
        on_disconnect: Callable[[str], None] | None = None,
    ) -> None:
        self.url = url if isinstance(url, BrokerUrl) else parse_url(url)
        self.client_id = client_id
        self.keepalive = keepalive
        self.clean_start = clean_start
        self.properties = connect_properties(session_expiry, receive_maximum)
        self.generation = 0
        self.connected = threading.Event()
        self.refused: str | None = None  # the broker's reason when it refused us (bad credentials...)
        self._stopping = False
        self.min_delay, self.max_delay = float(min_delay), float(max_delay)
        self._retry_at: float | None = None  # pump's next reconnection, while disconnected
        self._pumped = False  # the network loop runs in the caller's thread (open and pump)
        self._delay = 0.0
        self._on_connect, self._on_disconnect = on_connect, on_disconnect
        client = _Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            manual_ack=manual_ack,
        )
        if self.url.username is not None:
            client.username_pw_set(self.url.username, self.url.password)
        if self.url.tls:
            client.tls_set()
        if will is not None:
            client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client.reconnect_delay_set(min_delay, max_delay)
        client.on_connect = self._connected
        client.on_disconnect = self._disconnected
        if on_message is not None:
            client.on_message = lambda _client, _userdata, message: on_message(message)
        self.client: _Client = client

    # paho's callbacks, on its network thread
    def _connected(self, _client: Any, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any) -> None:
        if reason.is_failure:
            self.refused = str(reason)
            log.warning("MQTT %s refused %s: %s", self.url.shown(), self.client_id, reason)
            return
        self.refused = None
        self.generation += 1
        present = bool(getattr(_flags, "session_present", False))
        log.info("MQTT connected to %s as %s (session %s)", self.url.shown(), self.client_id,
                 "resumed" if present else "new")  # fmt: skip
        if self._on_connect is not None:
            self._on_connect(present)
        self.connected.set()

    def _disconnected(self, _client: Any, _userdata: Any, _flags: Any, reason: ReasonCode, _props: Any) -> None:
        was = self.connected.is_set()
        self.connected.clear()
        if was and not self._stopping:
            log.warning("MQTT %s: disconnected (%s); reconnecting", self.url.shown(), reason)
        if self._on_disconnect is not None:
            self._on_disconnect(str(reason))

    def start(self) -> None:
        """Connect in the background (paho's thread retries with backoff until it is connected, and after every
        loss): a broker down at start is waited for, not an error."""
        self.client.connect_async(
            self.url.host,
            self.url.port,
            keepalive=self.keepalive,
            clean_start=self.clean_start,
            properties=self.properties,
        )
        self.client.loop_start()

    def open(self) -> None:
        """Connect without a thread of paho's: the caller runs the network loop with :meth:`pump` (one thread
        doing the network, the decoding and the database in turns: none waits for the interpreter's lock
        another holds)."""
        self.client.connect_async(
            self.url.host,
            self.url.port,
            keepalive=self.keepalive,
            clean_start=self.clean_start,
            properties=self.properties,
        )
        self._delay = 0.0
        self._pumped = True
        self._reconnect()

    def pump(self, timeout: float) -> None:
        """One turn of the network loop in the caller's thread: what arrived is read (callbacks run here), what
        is queued is written, pings are sent; after a lost connection, a reconnection once its backoff passed
        (doubling from ``min_delay`` to ``max_delay``). Returns within about ``timeout`` seconds."""
        if self._retry_at is not None:
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                time.sleep(min(wait, timeout))
                return
            self._reconnect()
            return
        rc = self.client.loop(timeout)
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not self._stopping:
            self._schedule()

    def _reconnect(self) -> None:
        try:
            self.client.reconnect()
            self._retry_at = None
        except OSError as exc:
            log.warning("MQTT %s: cannot connect (%s)", self.url.shown(), type(exc).__name__)
            self._schedule()

    def _schedule(self) -> None:
        self._delay = min(max(self._delay * 2, self.min_delay), self.max_delay)
        self._retry_at = time.monotonic() + self._delay

    def wait_connected(self, timeout: float) -> None:
        """Block until connected (pumping the loop when it runs in this thread); ``mqtt_refused`` when the broker
        said no, ``mqtt_unreachable`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not self.connected.is_set() and self.refused is None:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self._pumped:
                self.pump(min(left, 0.05))
            else:
                self.connected.wait(min(left, 0.05))
        if self.connected.is_set():
            return
        if self.refused is not None:
            raise MqttError("mqtt_refused", f"{self.url.shown()} refused client {self.client_id}: {self.refused}")
        raise MqttError("mqtt_unreachable", f"no connection to {self.url.shown()} within {timeout:g} s")

    def subscribe(self, topics: list[str], qos: int = 1) -> None:
        for topic in topics:
            self.client.subscribe(topic, qos=qos)

    def ack(self, mid: int, qos: int = 1) -> None:
        """PUBACK a message (``manual_ack``): thread-safe, queued for paho's thread to send."""
        self.client.ack(mid, qos)

    def ack_many(self, mids: list[int]) -> None:
        """PUBACK many QoS 1 messages (``manual_ack``) in one write: thread-safe, as :meth:`ack`."""
        self.client.ack_many(mids)

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> paho.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=qos, retain=retain)

    def stop(self) -> None:
        """A clean DISCONNECT (no last will sent; the session kept for its expiry), then the loop stopped (paho's
        thread, or :meth:`pump`'s: a DISCONNECT is written at once when no thread of paho's runs)."""
        self._stopping = True
        self.client.disconnect()
        if self.client._thread is not None:
            self.client.loop_stop()
        self.connected.clear()


def session(
    url: BrokerUrl | str,
    client_id: str,
    **options: Any,
) -> Session:
    """A :class:`Session` (see its options), not started yet."""
    return Session(url, client_id, **options)
