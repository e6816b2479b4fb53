"""The head-end's MQTT client (mita.headend.mqttclient): broker URLs without a password shown, stable client ids,
a persistent session that gets its unacknowledged messages back, Receive Maximum as the back-pressure window,
buffered reads, and the paho internals it relies on (a canary: a paho upgrade that moves them fails here)."""

from __future__ import annotations

import inspect
import socket
import struct
import time
from typing import Any

import pytest
from paho.mqtt import _packet as paho_packets
from paho.mqtt import client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from mita.headend import mqttclient
from mita.headend.mqttclient import BrokerUrl, MqttError, Session, parse_url, stable_client_id


def test_a_broker_url_never_shows_its_password() -> None:
    url = parse_url("mqtt://ingest:s%40cret@broker.example:1884")
    assert (url.host, url.port, url.username, url.password, url.tls) == ("broker.example", 1884, "ingest", "s@cret",
                                                                         False)  # fmt: skip
    assert "cret" not in repr(url) and url.shown() == "mqtt://ingest:***@broker.example:1884"
    assert parse_url("mqtts://h").port == 8883 and parse_url("mqtt://h").shown() == "mqtt://h:1883"


@pytest.mark.parametrize(
    "text", ["http://u:hunter2@h:1", "mqtt://u:hunter2@h:99999", "mqtt://u:hunter2@:1", "mqtt://u:hunter2@h:1/x"]
)
def test_a_bad_url_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(MqttError) as refused:
        parse_url(text)
    assert refused.value.code == "bad_mqtt_url" and "hunter2" not in str(refused.value)


def test_client_ids_are_stable_per_host_and_index() -> None:
    assert stable_client_id("mita-ingest", 3, host="meter.host/1") == "mita-ingest-meter-host-1-3"
    assert stable_client_id("mita-ingest", 0) == stable_client_id("mita-ingest", 0)
    assert len(stable_client_id("x" * 100, 12)) == mqttclient.MAX_CLIENT_ID


def test_paho_still_has_what_the_client_relies_on() -> None:
    """``_create_socket`` (wrapped), ``loop_read`` (called on in bursts), ``_packet_queue`` (PUBACKs as one
    write), ``_sock`` and ``_thread``, and ``pending`` asked of the socket by the loop."""
    assert list(inspect.signature(paho.Client._create_socket).parameters) == ["self"]
    assert list(inspect.signature(paho.Client.loop_read).parameters) == ["self", "max_packets"]
    assert list(inspect.signature(paho.Client._packet_queue).parameters) == ["self", "command", "packet", "mid",
                                                                              "qos", "info"]  # fmt: skip
    assert "pending_bytes = self._sock.pending()" in inspect.getsource(paho.Client._loop)
    assert list(inspect.signature(paho.Client._sock_close).parameters) == ["self"]
    assert "self._sock_close()" in inspect.getsource(paho.Client._packet_write)  # after a DISCONNECT is written
    client = paho.Client(paho.CallbackAPIVersion.VERSION2)
    assert client._sock is None and client._thread is None
    assert (
        client._state == paho._ConnectionState.MQTT_CS_NEW and mqttclient._DISCONNECTING.name == "MQTT_CS_DISCONNECTING"
    )


def test_properties_decode_as_paho_decodes_them() -> None:
    sent = Properties(PacketTypes.PUBLISH)
    sent.CorrelationData = b"command-7"
    sent.MessageExpiryInterval = 60
    sent.UserProperty = [("meter", "47500770018")]
    packed = sent.pack()
    topic = b"mita/v1/47500770018/ack"
    body = struct.pack("!H", len(topic)) + topic + struct.pack("!H", 7) + packed + b'{"v":1}'
    decoded = paho_packets.decode_publish(0x32, body, paho.MQTTv5)
    assert type(decoded.properties) is mqttclient._QuickProperties and decoded.payload == b'{"v":1}'
    stock = Properties(PacketTypes.PUBLISH)
    stock.unpack(packed)
    assert decoded.properties.json() == stock.json() == sent.json()
    assert decoded.properties.CorrelationData == b"command-7"
    bare = paho_packets.decode_publish(0x32, body[: len(topic) + 4] + b"\x00payload", paho.MQTTv5)
    assert bare.properties.json() == {} and bare.payload == b"payload" and bare.mid == 7


def test_buffered_reads_hand_out_what_one_recv_took() -> None:
    left, right = socket.socketpair()
    try:
        wrapped = mqttclient._BufferedSocket(left)
        right.sendall(b"\x30\x05hello\x40")
        time.sleep(0.05)
        assert wrapped.recv(1) == b"\x30" and wrapped.pending() == 7
        assert wrapped.recv(1) == b"\x05" and wrapped.recv(5) == b"hello" and wrapped.recv(10) == b"\x40"
        assert wrapped.pending() == 0 and wrapped.fileno() == left.fileno()
    finally:
        left.close()
        right.close()


def _subscriber(broker: Any, got: list[Any], window: int) -> Session:
    session = Session(broker.url, "test-window", manual_ack=True, receive_maximum=window, on_message=got.append,
                      on_connect=lambda _present: session.subscribe(["t/#"], qos=1))  # fmt: skip
    return session


def _pump_until(session: Session, done: Any, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not done() and time.monotonic() < deadline:
        session.pump(0.05)


def test_receive_maximum_bounds_what_is_unacknowledged_and_the_session_keeps_the_rest(mqtt_broker: Any) -> None:
    """Nothing acknowledged: the broker sends the window and waits (a database that is down stops the flow
    there). Mosquitto 2.0.11 sends its queue past the window once acknowledgements come back: the worker's
    memory is bounded by its own reading then (docs/notes/ingest.md)."""
    got: list[Any] = []
    sub = _subscriber(mqtt_broker, got, 10)
    sub.open()
    sub.wait_connected(5)
    _pump_until(sub, lambda: False, 0.3)  # subscribed
    publisher = Session(mqtt_broker.url, "test-window-pub", clean_start=True, session_expiry=0)
    publisher.start()
    publisher.wait_connected(5)
    for info in [publisher.publish("t/x", b"%d" % i, qos=1) for i in range(50)]:
        info.wait_for_publish(5)
    publisher.stop()
    _pump_until(sub, lambda: len(got) >= 10, 10.0)
    _pump_until(sub, lambda: len(got) > 10, 1.0)  # and a while more: nothing past the window
    assert len(got) == 10  # the window, and nothing more while none is acknowledged
    sub.stop()  # ten unacknowledged, forty queued: kept for the session
    again: list[Any] = []
    resumed = _subscriber(mqtt_broker, again, 100)
    resumed.open()
    resumed.wait_connected(5)
    _pump_until(resumed, lambda: len(again) >= 50)
    assert sorted(int(m.payload) for m in again) == list(range(50))
    assert all(m.dup for m in again[:10])  # the unacknowledged ten, sent again
    resumed.ack_many([m.mid for m in again])
    resumed.stop()


def test_an_unreachable_broker_is_a_typed_error_without_the_password() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    session = Session(BrokerUrl("127.0.0.1", port, "u", "hunter2"), "test-unreachable", min_delay=1, max_delay=1)
    session.open()
    with pytest.raises(MqttError) as failed:
        session.wait_connected(0.5)
    assert failed.value.code == "mqtt_unreachable" and "hunter2" not in str(failed.value)
