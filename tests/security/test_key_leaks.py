"""The key leak scan (tests/leak_scan.py) over the newer outputs: the console's pages, what Mita sends (HTTP
requests of its senders and clients: partners' webhooks, Kannel's sendsms with each SMS text, Daraja), MQTT
messages, outbox payloads and SMS bodies.

Outbox payloads and SMS bodies at rest were already scanned (every column of every table: ``outbox.payload``,
``sms_messages``); the scan now also records requests Mita's own code sends (channel ``http-out``) and every MQTT
publish (``mqtt``). Each new channel is shown to find a planted key; then the console's pages, fetched by a
signed-in operator through TestClient, are scanned and hold none.
"""

from __future__ import annotations

import http.server
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from paho.mqtt import client as mqtt

import leak_scan

from .world import World, world

#: console pages an operator reads most, a receipt (tokens) among them
PAGES = ("/console/", "/console/meters", "/console/customers", "/console/vends", "/console/keys",
         "/console/engineering", "/console/doctor", "/console/audit", "/console/alarms", "/console/campaigns",
         "/console/vend")  # fmt: skip


@pytest.fixture
def fresh() -> Iterator[tuple[leak_scan.Recorder, bytes]]:
    """A recorder of its own (the session's must not see the planted key) and a random key to look for."""
    if not leak_scan.installed():
        pytest.skip("the key leak scan is off (MITA_LEAK_SCAN=0)")
    recorder = leak_scan.Recorder()
    key = secrets.token_bytes(16)
    recorder.secrets.add(key, "planted by tests/security/test_key_leaks.py")
    with leak_scan.recording(recorder):
        yield recorder, key


def channels_found(recorder: leak_scan.Recorder) -> set[str]:
    return {f.channel for f in recorder.scan()[0]}


def as_mita(source: str, **names: object) -> None:
    """Run ``source`` as if it were code of a ``mita`` module (that is who the scan records requests from)."""
    exec(compile(source, "<mita.leak_selftest>", "exec"), {"__name__": "mita.leak_selftest", **names})


def test_a_key_in_a_request_mita_sends_is_found(fresh: tuple[leak_scan.Recorder, bytes]) -> None:
    recorder, key = fresh
    transport = httpx.MockTransport(lambda request: httpx.Response(204))
    with httpx.Client(transport=transport) as client:
        client.post("http://partner.example/hook", json={"note": "from a test"})  # a test's request: input
        assert "http-out" not in recorder.channels()
        as_mita("client.get('http://kannel.example/cgi-bin/sendsms', params={'text': text})", client=client,
                text=f"token {key.hex()}")  # fmt: skip
    assert recorder.channels().get("http-out") == 1
    assert channels_found(recorder) == {"http-out"}


def test_a_key_in_a_body_mita_posts_with_http_client_is_found(fresh: tuple[leak_scan.Recorder, bytes]) -> None:
    recorder, key = fresh

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        as_mita(
            "import http.client\n"
            "c = http.client.HTTPConnection('127.0.0.1', port, timeout=10)\n"
            "c.request('POST', '/webhook', body=body, headers={'Content-Type': 'application/json'})\n"
            "c.getresponse().read()\nc.close()\n",
            port=server.server_address[1],
            body=f'{{"vending_key": "{key.hex()}"}}'.encode(),
        )
    finally:
        server.shutdown()
        server.server_close()
    assert channels_found(recorder) == {"http-out"}


def test_a_key_in_an_mqtt_message_is_found(fresh: tuple[leak_scan.Recorder, bytes]) -> None:
    recorder, key = fresh
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="leak-selftest")
    client.publish("mita/v1/47500150231/ack", f'{{"result": "{key.hex()}"}}'.encode(), qos=1)  # not connected:
    assert channels_found(recorder) == {"mqtt"}  # what it was asked to send is recorded all the same


def test_a_key_on_a_console_page_is_found(fresh: tuple[leak_scan.Recorder, bytes], tmp_path: Path) -> None:
    recorder, key = fresh
    with world(tmp_path) as w:
        customer = {"account": "LEAK-1", "name": f"K {key.hex()}"}  # a key pasted where a name goes
        assert w.client.post("/v1/customers", json=customer, headers=w.headers("admin")).status_code == 201
        w.sign_in()
        assert w.client.get("/console/customers", params={"q": "LEAK-1"}).status_code == 200
    assert any(f.channel == "http" and "/console/customers" in f.where for f in recorder.scan()[0])


# ---------------------------------------------------------------------- the real pages hold no key


@pytest.fixture(scope="module")
def sec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(tmp_path_factory.mktemp("leaks")) as w:
        yield w


def test_console_pages_show_no_key(sec: World) -> None:
    if not leak_scan.installed():
        pytest.skip("the key leak scan is off (MITA_LEAK_SCAN=0)")
    recorder = leak_scan.active()
    before = recorder.channels().get("http", 0)
    sec.sign_in()
    pages = [*PAGES, f"/console/meters/{sec.ids['drn']}", f"/console/vends/{sec.ids['vend_id']}"]
    for page in pages:
        r = sec.client.get(page)
        assert r.status_code == 200, (page, r.status_code)
        assert "text/html" in r.headers["content-type"]
    assert recorder.channels().get("http", 0) >= before + len(pages) // 2  # the pages are in the scan's record
    console = [f for f in recorder.scan()[0] if "/console" in f.where]
    assert not console, recorder.report(console)
