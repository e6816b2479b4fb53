"""What head-end commands do at a simulated meter (gurux on the other end), through the link (dlms-cosem); one
test reads the same values through gurux's own client and checks both clients agree; answers that do not decode
are protocol failures (a fake association)."""

from __future__ import annotations

import datetime as dt
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mita import sts
from mita.headend import cosem as axdr
from mita.headend import operations as op
from mita.headend.link import LinkError, associate
from mita.headend.operations import ControlState, Reading, SwitchState, TokenStatus
from mita.meter import Meter
from mita.meter.profiles import RESULTS

from .conftest import SIM_SECRET, SIM_T0, SimMeter, sim_token

Sims = Callable[..., SimMeter]
ONE_HOUR_BEFORE = SIM_T0 - dt.timedelta(hours=1)


def mistyped(token: str, at: int = 7) -> str:
    return token[:at] + str((int(token[at]) + 1) % 10) + token[at + 1 :]


# ------------------------------------------------------------------------------------------------ tokens


def test_a_credit_token_is_executed_and_the_credit_read_back(sim_meter: Sims) -> None:
    sim = sim_meter()
    with associate(sim.endpoint()) as assoc:
        status = op.enter_token(assoc, sim_token(100))
        credit = op.read_credit(assoc)
    assert status == TokenStatus(3, f"{RESULTS.index('accept'):08b}")
    assert (status.accepted, status.result, status.meaning) == (True, "accept", "token execution result OK")
    assert credit == 100 * 100  # 100 base units of 0.1 kWh, in Wh
    assert sim.load().registers()["electricity"] == 100


def test_the_same_token_again_is_used_and_counted_once(sim_meter: Sims) -> None:
    sim = sim_meter()
    token = sim_token(50)
    with associate(sim.endpoint()) as assoc:
        assert op.enter_token(assoc, token).accepted
        again = op.enter_token(assoc, token)
        assert op.read_credit(assoc) == 50 * 100
    assert (again.code, again.result, again.accepted) == (6, "used", False)


def test_a_mistyped_digit_fails_authentication(sim_meter: Sims) -> None:
    sim = sim_meter()
    with associate(sim.endpoint()) as assoc:
        status = op.enter_token(assoc, mistyped(sim_token(10)))
        assert op.read_credit(assoc) == 0
    assert (status.code, status.result) == (5, "crc_error")


def test_a_meter_taking_ascii_digits(sim_meter: Sims) -> None:
    sim = sim_meter(encoding="ascii")
    token = sim_token(30)
    with associate(sim.endpoint()) as assoc:
        assert (op.enter_token(assoc, token).code, op.token_status(assoc).result) == (4, "format_error")  # BCD
        assert op.enter_token(assoc, token, "ascii").accepted
        assert op.read_credit(assoc) == 3000


def test_the_public_client_cannot_enter_a_token(sim_meter: Sims) -> None:
    sim = sim_meter()
    with pytest.raises(LinkError) as caught, associate(sim.endpoint(None)) as assoc:
        op.enter_token(assoc, sim_token(100))
    assert caught.value.code == "denied"
    assert sim.load().registers() == {}


@given(st.text(alphabet="0123456789", min_size=20, max_size=20), st.sampled_from(["bcd", "ascii"]))
def test_the_token_carrier_agrees_with_the_meters(digits: str, encoding: str) -> None:
    """Two ends, two codecs: the head-end's packing and the simulated meter's unpacking, written apart."""
    from mita.sim import carrier

    packed = op.pack_token(digits, encoding)  # type: ignore[arg-type]
    assert packed == carrier.pack(digits, encoding)  # type: ignore[arg-type]
    assert carrier.unpack(packed, encoding) == digits  # type: ignore[arg-type]
    assert len(packed) == (10 if encoding == "bcd" else 20)


@pytest.mark.parametrize(("digits", "encoding"), [("1234", "bcd"), ("1" * 19 + "a", "bcd"), ("1" * 20, "ebcdic")])
def test_what_is_not_a_token_is_not_sent(digits: str, encoding: str) -> None:
    with pytest.raises(ValueError):
        op.pack_token(digits, encoding)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "result"),
    [(TokenStatus(6, "00000101"), "old"), (TokenStatus(3, "0000"), None), (TokenStatus(7, "11111111"), None)],
)
def test_a_token_status_names_mitas_result_only_from_its_8_bits(status: TokenStatus, result: str | None) -> None:
    assert status.result == result
    assert TokenStatus(9, "").meaning.startswith("status code 9")


# ------------------------------------------------------------------------------------------------ the switch


def test_disconnect_and_reconnect(sim_meter: Sims) -> None:
    sim = sim_meter()
    with associate(sim.endpoint()) as assoc:
        op.enter_token(assoc, sim_token(100))
        assert op.switch_state(assoc) == SwitchState(True, ControlState.CONNECTED)
        assert op.switch(assoc, connect=False) == SwitchState(False, ControlState.DISCONNECTED)
        assert sim.load().status(SIM_T0)["open_reasons"] == ["remote disconnect"]
        assert op.switch(assoc, connect=True) == SwitchState(True, ControlState.CONNECTED)
        log = op.read_log(assoc, op.DISCONNECTOR_LOG)
    assert [code for _, code in log][-2:] == [62, 63]  # remote disconnection, remote connection
    assert all(when == SIM_T0.replace(tzinfo=dt.UTC) for when, _ in log[-2:])


def test_a_reconnect_does_not_give_supply_without_credit(sim_meter: Sims) -> None:
    sim = sim_meter()
    with associate(sim.endpoint()) as assoc:
        assert op.switch(assoc, connect=True).output is False


# ------------------------------------------------------------------------------------------------ registers


def consumed(profile_load: int, kind: sts.CreditKind = sts.CreditKind.ELECTRICITY) -> Callable[[Meter], object]:
    """A meter that took 100 units from its keypad and then supplied ``profile_load`` (W or L/h) for an hour."""

    def prepare(meter: Meter) -> None:
        tid = sts.tid_from_datetime(SIM_T0 - dt.timedelta(hours=2))
        assert meter.enter(sim_token(100, tid, kind), ONE_HOUR_BEFORE).result == "accept"
        meter.run(3600, profile_load, ONE_HOUR_BEFORE)

    return prepare


@pytest.mark.parametrize("profile", ["legacy-ea07", "edition2-ea11"])
def test_energy_on_an_electricity_meter(sim_meter: Sims, profile: str) -> None:
    sim = sim_meter(profile, prepare=consumed(1234))
    with associate(sim.endpoint(None)) as assoc:
        assert op.read_register(assoc, op.ACTIVE_ENERGY_IMPORT) == Reading(1234, "Wh", 1234, 0)
        assert op.read_credit(assoc) == 10_000 - 1234
        with pytest.raises(LinkError) as caught:
            op.read_register(assoc, op.WATER_VOLUME)
    assert caught.value.code == "denied"


def test_volume_on_a_water_meter(sim_meter: Sims) -> None:
    sim = sim_meter("water-valve", prepare=consumed(1234, sts.CreditKind.WATER))
    with associate(sim.endpoint(None)) as assoc:
        reading = op.read_register(assoc, op.WATER_VOLUME)
        with pytest.raises(LinkError, match="OBJECT_UNDEFINED"):
            op.read_register(assoc, op.ACTIVE_ENERGY_IMPORT)  # a water meter has no energy register
    assert reading == Reading(1.234, "m3", 1234, -3)
    assert reading.exact == Decimal("1.234")


# ------------------------------------------------------------------------------------------------ clock, limit, logs


def test_the_clock_is_read_and_set(sim_meter: Sims) -> None:
    sim = sim_meter()
    sim.now[0] = SIM_T0.replace(hour=13, minute=7, second=9)
    with associate(sim.endpoint()) as assoc:
        assert op.read_clock(assoc).replace(tzinfo=None) == sim.now[0]
        op.set_clock(assoc, dt.datetime(2024, 5, 1, 8, 30))
        assert op.read_clock(assoc).replace(tzinfo=None) == dt.datetime(2024, 5, 1, 8, 30)
        rows = op.read_log(assoc, op.STANDARD_LOG)
    assert [code for _, code in rows] == [2, 4, 5]  # power up, clock adjusted (old time), (new time)
    assert rows[-1][0].replace(tzinfo=None) == dt.datetime(2024, 5, 1, 8, 30)


def test_the_power_limit_is_read_and_set(sim_meter: Sims) -> None:
    sim = sim_meter()
    with associate(sim.endpoint()) as assoc:
        assert op.read_power_limit(assoc) is None
        op.set_power_limit(assoc, 2500)
        assert op.read_power_limit(assoc) == 2500
        op.set_power_limit(assoc, None)
        assert op.read_power_limit(assoc) is None
    assert sim.load().state.mpl is None


def test_the_token_transfer_log(sim_meter: Sims) -> None:
    sim = sim_meter()
    token = sim_token(20)
    with associate(sim.endpoint()) as assoc:
        op.enter_token(assoc, token)
        op.enter_token(assoc, token)
        rows = op.read_log(assoc, op.TOKEN_LOG)
        assert op.read_log(assoc, op.FRAUD_LOG) == []
    assert rows == [(SIM_T0.replace(tzinfo=dt.UTC), op.pack_token(token), code) for code in (3, 6)]


# ------------------------------------------------------------------------------------------------ the other library


class GuruxClient:
    """gurux-dlms's own client (the simulated meter's library), as the research note §2.1 drives it."""

    def __init__(self, port: int, secret: bytes) -> None:
        from gurux_dlms import GXDLMSClient
        from gurux_dlms.enums import Authentication, InterfaceType

        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.client = GXDLMSClient(True, 1, 1, Authentication.LOW, secret, InterfaceType.WRAPPER)
        self.client.parseAareResponse(self._exchange(self.client.aarqRequest()).data)

    def _exchange(self, frames: Any) -> Any:
        from gurux_dlms import GXByteBuffer, GXReplyData

        reply = GXReplyData()
        for request in frames if isinstance(frames, list) else [frames]:
            self.sock.sendall(bytes(request))
            received = GXByteBuffer()
            while not self.client.getData(received, reply, None):
                received.set(self.sock.recv(65536))
        assert not reply.isMoreData()
        return reply

    def read(self, target: Any, attribute: int) -> Any:
        reply = self._exchange(self.client.read(target, attribute))
        return self.client.updateValue(target, attribute, reply.value)


@contextmanager
def gurux_session(port: int) -> Iterator[GuruxClient]:
    client = GuruxClient(port, SIM_SECRET)
    try:
        yield client
    finally:
        client.sock.close()  # no release: one side of the interop is enough to show gurux's RLRE


def test_gurux_and_the_head_end_read_the_same_values(sim_meter: Sims) -> None:
    from gurux_dlms.objects import GXDLMSDisconnectControl, GXDLMSRegister, GXDLMSTokenGateway

    sim = sim_meter(prepare=consumed(321))
    with associate(sim.endpoint()) as assoc:
        op.enter_token(assoc, sim_token(10))
        status = op.enter_token(assoc, sim_token(10))  # used: a status other than the gateway's first one
        reading = op.read_register(assoc, op.ACTIVE_ENERGY_IMPORT)
        switch = op.switch(assoc, connect=False)
    gateway, register = GXDLMSTokenGateway(op.TOKEN_GATEWAY), GXDLMSRegister(op.ACTIVE_ENERGY_IMPORT)
    disconnect = GXDLMSDisconnectControl(op.DISCONNECT_CONTROL)
    with gurux_session(sim.port) as gurux:
        for target, attribute in ((gateway, 6), (register, 2), (register, 3), (disconnect, 2), (disconnect, 3)):
            gurux.read(target, attribute)
    assert (status.code, status.data) == (int(gateway.statusCode), str(gateway.dataValue)) == (6, "00000100")
    assert (reading.raw, 10**reading.scaler, reading.unit) == (register.value, register.scaler, "Wh")
    assert op.UNITS[int(register.unit)] == "Wh"
    assert (switch.output, list(op.CONTROL_STATES.values())[int(disconnect.controlState)]) == (
        bool(disconnect.outputState),
        ControlState.DISCONNECTED,
    )


# ------------------------------------------------------------------------------------------------ bad answers


class Scripted:
    """An Association whose GETs answer fixed octets (what a broken meter might say)."""

    def __init__(self, answers: dict[tuple[int, str, int], bytes]) -> None:
        self.answers = answers

    def get(self, interface: int, obis: str, attribute: int) -> bytes:
        return self.answers[interface, obis, attribute]

    def set(self, interface: int, obis: str, attribute: int, data: bytes) -> None:
        self.answers[interface, obis, attribute] = data

    def action(self, interface: int, obis: str, method: int, data: bytes) -> bytes | None:
        return None


DC, REG, LOG = (70, op.DISCONNECT_CONTROL), (3, op.ACTIVE_ENERGY_IMPORT), (7, op.TOKEN_LOG)


def energy(assoc: Any) -> object:
    return op.read_register(assoc, op.ACTIVE_ENERGY_IMPORT)


def token_log(assoc: Any) -> object:
    return op.read_log(assoc, op.TOKEN_LOG)


@pytest.mark.parametrize(
    ("answers", "call"),
    [
        ({(115, op.TOKEN_GATEWAY, 6): bytes.fromhex("0202160304")}, lambda a: op.token_status(a)),
        ({(*DC, 2): bytes.fromhex("0301"), (*DC, 3): bytes.fromhex("1609")}, op.switch_state),
        ({(*DC, 2): bytes.fromhex("1101"), (*DC, 3): bytes.fromhex("1601")}, op.switch_state),
        ({(*REG, 2): bytes.fromhex("0a0131"), (*REG, 3): bytes.fromhex("02020f00161e")}, energy),  # a string
        ({(*REG, 2): bytes.fromhex("0500000001"), (*REG, 3): bytes.fromhex("0f00")}, energy),  # no unit
        ({(8, op.CLOCK, 2): bytes.fromhex("090507e80301ff")}, op.read_clock),
        ({(112, op.CREDIT, 2): bytes.fromhex("0300")}, op.read_credit),
        ({(*LOG, 3): bytes.fromhex("0100"), (*LOG, 2): bytes.fromhex("0101020111ff")}, token_log),  # extra column
    ],
)  # fmt: skip
def test_an_answer_that_does_not_decode_is_a_protocol_failure(
    answers: dict[tuple[int, str, int], bytes], call: Callable[[Any], object]
) -> None:
    with pytest.raises(LinkError) as caught:
        call(Scripted(answers))
    assert (caught.value.code, caught.value.transient) == ("protocol", False)


def test_a_power_limit_is_sent_in_the_type_the_meter_uses() -> None:
    meter = Scripted({(71, op.LIMITER, 4): axdr.encode_integer(0, "long_unsigned")})
    op.set_power_limit(meter, 4000)
    assert meter.answers[71, op.LIMITER, 4] == axdr.encode_integer(4000, "long_unsigned")
    with pytest.raises(ValueError, match="does not fit"):
        op.set_power_limit(meter, 70_000)
