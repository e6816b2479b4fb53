"""The head-end's link (dlms-cosem 21.3.2): associations with the simulated meter (gurux), and each failure mapped to
its LinkError code, against the sim or against a scripted fake meter that answers badly on purpose."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from dlms_cosem import cosem, enumerations
from dlms_cosem import state as dlms_state
from dlms_cosem.connection import DlmsConnection
from dlms_cosem.protocol import xdlms
from dlms_cosem.protocol.xdlms.invoke_id_and_priority import InvokeIdAndPriority

from mita.headend import cosem as axdr
from mita.headend.link import CODES, Endpoint, LinkError, _DlmsCosemAssociation, associate

from .conftest import SIM_SECRET, SimMeter

TOKEN_GATEWAY = (115, "0.0.19.40.0.255")
ENERGY = (3, "1.0.1.8.0.255")

#: What the simulated meter answers a public client's AARQ (accepted), taken from the wire.
AARE_ACCEPTED = bytes.fromhex("6129a109060760857405080101a203020100a305a103020100be10040e0800065f1f040000101dffff0007")


# ------------------------------------------------------------------------------------------------ a fake meter

#: An APDU to send back in a proper wrapper frame, or "close", "hang", "raw:<hex>", "drip:<hex>" (its first 8
#: octets at once, then an octet every 0.1 s); after the last, the fake closes.
Answer = bytes | str


class FakeMeter:
    """A TCP listener that reads wrapper frames and answers each from a script, recording what it received."""

    def __init__(self, script: list[Answer]) -> None:
        self.script = list(script)
        self.received: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            conn, _ = self.listener.accept()
            with conn:
                for answer in self.script:
                    head = _recv(conn, 8)
                    if len(head) < 8:
                        return
                    self.received.append(_recv(conn, int.from_bytes(head[6:8], "big")))
                    if answer == "close":
                        return
                    if answer == "hang":
                        self.done.wait(10)
                        return
                    if isinstance(answer, str) and answer.startswith("drip:"):
                        dripped = bytes.fromhex(answer.removeprefix("drip:"))
                        conn.sendall(dripped[:8])
                        for octet in dripped[8:]:
                            if self.done.wait(0.1):
                                return
                            conn.sendall(bytes([octet]))
                    elif isinstance(answer, str):
                        conn.sendall(bytes.fromhex(answer.removeprefix("raw:")))
                    else:
                        conn.sendall(frame(answer))
                # the script is over: the connection closes

    def close(self) -> None:
        self.done.set()
        self.listener.close()
        self.thread.join(5)


def _recv(conn: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def frame(apdu: bytes, source: int = 1, destination: int = 16, version: int = 1) -> bytes:
    return b"".join(v.to_bytes(2, "big") for v in (version, source, destination, len(apdu))) + apdu


@pytest.fixture
def fake_meter() -> Iterator[Callable[[list[Answer]], FakeMeter]]:
    started: list[FakeMeter] = []

    def start(script: list[Answer]) -> FakeMeter:
        started.append(FakeMeter(script))
        return started[-1]

    yield start
    for meter in started:
        meter.close()


def public(port: int, **options: Any) -> Endpoint:
    return Endpoint("127.0.0.1", port, None, **{"release": False, **options})


def fails(code: str, endpoint: Endpoint, step: Callable[[Any], object] = lambda a: None) -> LinkError:
    with pytest.raises(LinkError) as caught, associate(endpoint) as assoc:
        step(assoc)
    error = caught.value
    assert error.code == code, error
    assert error.transient is CODES[code]
    assert error.__cause__ is None  # never a traceback of dlms-cosem's
    assert error.__context__ is None or error.__suppress_context__
    return error


# ------------------------------------------------------------------------------------------------ values


def test_the_codes_and_which_are_worth_retrying() -> None:
    assert {c for c, transient in CODES.items() if transient} == {"unreachable", "timeout"}
    assert LinkError("denied", "x").transient is False
    with pytest.raises(ValueError):
        LinkError("broken", "x")


def test_an_endpoint_never_shows_its_secret() -> None:
    endpoint = Endpoint("10.0.0.7", 4059, SIM_SECRET)
    assert SIM_SECRET.decode() not in repr(endpoint) and SIM_SECRET.decode() not in str(endpoint)
    assert "secret=<set>" in repr(endpoint)
    assert endpoint.client_sap == 1
    assert Endpoint("10.0.0.7", 4059).client_sap == 16  # without a secret: the public client
    for port, timeout in ((0, 5.0), (70_000, 5.0), (4059, 0.0)):
        with pytest.raises(ValueError):
            Endpoint("10.0.0.7", port, timeout=timeout)


# ------------------------------------------------------------------------------------------------ the sim


def test_the_management_client_reads_and_acts(sim_meter: Callable[..., SimMeter]) -> None:
    sim = sim_meter()
    with associate(sim.endpoint()) as assoc:
        assert assoc.get(*ENERGY, 2) == bytes.fromhex("0500000000")
        assert assoc.action(*TOKEN_GATEWAY, 1, axdr.encode_octet_string(b"\x12" * 10)) is None
        assert axdr.parse_token_status(assoc.get(*TOKEN_GATEWAY, 6))[0] == 5  # not this meter's token


def test_a_wrong_lls_secret_is_refused_and_never_echoed(sim_meter: Callable[..., SimMeter]) -> None:
    sim = sim_meter()
    error = fails("refused", sim.endpoint(b"wrong-secret"))
    assert "AUTHENTICATION_FAILED" in str(error)
    assert "wrong-secret" not in str(error) and "wrong-secret" not in repr(error)
    with associate(sim.endpoint()) as assoc:  # the meter still takes the right one
        assoc.get(*ENERGY, 2)


def test_the_public_client_reads_but_is_denied_every_change(sim_meter: Callable[..., SimMeter]) -> None:
    sim = sim_meter()
    with associate(sim.endpoint(None)) as assoc:
        assert axdr.decode(assoc.get(*ENERGY, 2)) == 0
        with pytest.raises(LinkError) as caught:
            assoc.action(*TOKEN_GATEWAY, 1, axdr.encode_octet_string(b"\x12" * 10))
        assert (caught.value.code, caught.value.transient) == ("denied", False)
        assert "READ_WRITE_DENIED" in str(caught.value)
        with pytest.raises(LinkError, match="READ_WRITE_DENIED"):
            assoc.set(71, "0.0.17.0.0.255", 4, axdr.encode_integer(1000, "double_long_unsigned"))
        assert axdr.decode(assoc.get(*ENERGY, 2)) == 0  # a refusal leaves the association usable


def test_an_object_the_meter_does_not_have_is_denied(sim_meter: Callable[..., SimMeter]) -> None:
    sim = sim_meter()
    error = fails("denied", sim.endpoint(), lambda a: a.get(3, "1.0.2.8.0.255", 2))
    assert "OBJECT_UNDEFINED" in str(error)


def test_release_against_the_sims_malformed_rlre_ends_quietly(
    sim_meter: Callable[..., SimMeter], caplog: pytest.LogCaptureFixture
) -> None:
    sim = sim_meter()
    with caplog.at_level(logging.DEBUG, logger="mita.headend.link"), associate(sim.endpoint(release=True)) as a:
        a.get(*ENERGY, 2)
    assert "release not completed" in caplog.text
    with associate(sim.endpoint(release=True)) as assoc:  # and the meter takes the next association
        assoc.get(*ENERGY, 2)


def test_the_secret_is_in_no_log_record(sim_meter: Callable[..., SimMeter], caplog: pytest.LogCaptureFixture) -> None:
    """dlms-cosem logs every APDU it sends, the AARQ (and its LLS secret) included: not while associating here."""
    sim = sim_meter()
    with caplog.at_level(logging.DEBUG):
        with associate(sim.endpoint(release=True)) as assoc:
            assoc.get(*ENERGY, 2)
        with contextlib.suppress(LinkError), associate(sim.endpoint(b"another-secret")):
            pass
    assert "DLMS state transitioned" in caplog.text  # the library's logging was on
    for secret in (SIM_SECRET, b"another-secret"):
        for form in (secret.decode(), repr(secret), secret.hex()):
            assert form not in caplog.text


def test_canary_the_association_encodes_as_dlms_cosem_send_does() -> None:
    """``_DlmsCosemAssociation._encode`` is ``DlmsConnection.send`` without its log lines: the same octets and the
    same state for every request the head-end makes; and ``send`` is still the code it was read from (21.3.2)."""
    source = inspect.getsource(DlmsConnection.send)
    assert hashlib.sha256(source.encode()).hexdigest()[:16] == "78bdedda767cc710", "DlmsConnection.send changed"
    ours, theirs = (_DlmsCosemAssociation(Endpoint("127.0.0.1", 4059, secret=SIM_SECRET), None) for _ in "ab")  # type: ignore[arg-type]
    aarq = ours.connection.get_aarq()
    assert ours._encode(aarq) == theirs.connection.send(aarq)
    assert ours.connection.state.current_state is theirs.connection.state.current_state
    gateway = cosem.Obis(0, 0, 19, 40, 0, 255)
    status = cosem.CosemAttribute(enumerations.CosemInterface.TOKEN_GATEWAY, gateway, 6)
    enter = cosem.CosemMethod(enumerations.CosemInterface.TOKEN_GATEWAY, gateway, 1)
    for apdu in (
        xdlms.GetRequestNormal(cosem_attribute=status),
        xdlms.SetRequestNormal(cosem_attribute=status, data=b"\x11\x01"),
        xdlms.ActionRequestNormal(cosem_method=enter, data=b"\x09\x0a" + bytes(10)),
    ):
        for assoc in (ours, theirs):  # associated, as if the meter had accepted
            assoc.connection.state.current_state = dlms_state.READY
        assert ours._encode(apdu) == theirs.connection.send(apdu)
        assert ours.connection.state.current_state is theirs.connection.state.current_state


# ------------------------------------------------------------------------------------------------ failures


def test_nothing_listening_is_unreachable() -> None:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    error = fails("unreachable", public(port))
    assert "cannot connect" in str(error)


def test_a_meter_that_never_answers_is_a_timeout(fake_meter: Callable[[list[Answer]], FakeMeter]) -> None:
    meter = fake_meter(["hang"])
    started = time.monotonic()
    fails("timeout", public(meter.port, timeout=0.3))
    assert time.monotonic() - started < 2
    assert meter.received[0][0] == 0x60  # the AARQ arrived


def test_a_meter_that_drips_its_answer_is_a_timeout_per_request(fake_meter: Callable[..., FakeMeter]) -> None:
    meter = fake_meter(["raw:0001", "hang"])  # two octets of a header, then nothing
    started = time.monotonic()
    fails("timeout", public(meter.port, timeout=0.3))
    assert time.monotonic() - started < 2


def test_a_meter_that_drips_a_whole_answer_slower_than_its_timeout_is_a_timeout(
    fake_meter: Callable[..., FakeMeter],
) -> None:
    """The header at once, then every octet of the APDU within the socket's timeout, but the answer as a whole not
    within it: the request's deadline holds across its header and its APDU."""
    meter = fake_meter([frame(AARE_ACCEPTED).hex().join(("drip:", ""))])
    started = time.monotonic()
    fails("timeout", public(meter.port, timeout=0.35))
    assert time.monotonic() - started < 2  # a deadline per read would take the whole drip, over 3 s


def test_a_meter_that_closes_in_the_middle_of_an_answer_is_unreachable(fake_meter: Callable[..., FakeMeter]) -> None:
    """dlms-cosem's own TCP transport would loop forever here (recv returns b"")."""
    meter = fake_meter([AARE_ACCEPTED, "raw:00010001001000"])  # a header cut short, then the connection closes
    error = fails("unreachable", public(meter.port), lambda a: a.get(*ENERGY, 2))
    assert "closed the connection" in str(error)


@pytest.mark.parametrize(
    ("script", "step"),
    [
        (["raw:" + frame(b"\xff\x00").hex()], None),  # no such APDU
        (["raw:" + frame(AARE_ACCEPTED, version=2).hex()], None),  # another wrapper version
        (["raw:" + frame(AARE_ACCEPTED, destination=1).hex()], None),  # addressed to another client
        ([bytes.fromhex("c40181000500")], None),  # a GET response where the AARE belongs
        ([AARE_ACCEPTED, bytes.fromhex("c401")], "get"),  # an APDU cut short
        ([AARE_ACCEPTED, bytes.fromhex("c701c10000")], "get"),  # an ACTION response to a GET
    ],
)
def test_a_malformed_or_unexpected_answer_is_a_protocol_failure(
    fake_meter: Callable[..., FakeMeter], script: list[Answer], step: str | None
) -> None:
    meter = fake_meter(script)
    fails("protocol", public(meter.port), (lambda a: a.get(*ENERGY, 2)) if step else (lambda a: None))


def test_an_exception_response_is_denied(fake_meter: Callable[..., FakeMeter]) -> None:
    meter = fake_meter([AARE_ACCEPTED, bytes.fromhex("d80102")])  # state: service not allowed, service: ...
    fails("denied", public(meter.port), lambda a: a.get(*ENERGY, 2))


def blocks(value: bytes, size: int, first: int = 1) -> list[Answer]:
    parts = [value[i : i + size] for i in range(0, len(value), size)]
    invoke = InvokeIdAndPriority(1, True, True)
    answers: list[Answer] = [
        xdlms.GetResponseWithBlock(data=p, block_number=first + i, invoke_id_and_priority=invoke).to_bytes()
        for i, p in enumerate(parts[:-1])
    ]
    last = xdlms.GetResponseLastBlock(
        data=parts[-1], block_number=first + len(parts) - 1, invoke_id_and_priority=invoke
    )
    return [*answers, last.to_bytes()]


def test_a_value_sent_in_blocks_is_joined(fake_meter: Callable[..., FakeMeter]) -> None:
    value = axdr.encode_octet_string(bytes(range(256)) * 3)
    meter = fake_meter([AARE_ACCEPTED, *blocks(value, 200)])
    with associate(public(meter.port)) as assoc:
        assert assoc.get(*ENERGY, 2) == value
    nexts = [r for r in meter.received if r[:2] == b"\xc0\x02"]  # GET-request-next, one per block but the last
    assert [int.from_bytes(r[3:7], "big") for r in nexts] == [1, 2, 3]


def test_blocks_out_of_order_are_a_protocol_failure(fake_meter: Callable[..., FakeMeter]) -> None:
    meter = fake_meter([AARE_ACCEPTED, *blocks(axdr.encode_octet_string(b"x" * 500), 200, first=2)])
    fails("protocol", public(meter.port), lambda a: a.get(*ENERGY, 2))


def test_leaving_never_raises_and_never_hides_the_error_inside(fake_meter: Callable[..., FakeMeter]) -> None:
    meter = fake_meter([AARE_ACCEPTED, "close"])  # the RLRQ finds the connection gone
    with associate(public(meter.port, release=True)):
        pass
    meter = fake_meter([AARE_ACCEPTED, bytes.fromhex("c40181000500")])
    with pytest.raises(KeyError), associate(public(meter.port, release=True)):
        raise KeyError("the caller's own error")


def test_without_release_no_rlrq_is_sent(fake_meter: Callable[..., FakeMeter]) -> None:
    meter = fake_meter([AARE_ACCEPTED])
    with associate(public(meter.port, release=False)):
        pass
    meter.close()
    assert [r[0] for r in meter.received] == [0x60]  # the AARQ only (an RLRQ is 0x62)
