"""The simulated meter through an independent DLMS client (dlms-cosem 21.3.2), as the head-end will drive it.

Every token is made by :mod:`mita.sts` for the meter's key, exactly as a vend makes it; the client sends it in the
token gateway's ``enter`` as packed BCD. The status codes checked are the table in :mod:`mita.sim.status`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from dlms_cosem import enumerations as en
from dlms_cosem.clients.dlms_client import ActionError, DlmsClient
from dlms_cosem.exceptions import DlmsClientException

from cli_run import run
from mita import sts
from mita.meter.profiles import RESULTS
from mita.sim import carrier

from .dlms_client import (
    ACCOUNT,
    CLOCK,
    CREDIT,
    DISCONNECT_CONTROL,
    ENERGY,
    WATER,
    enter,
    get,
    session,
    switch,
    token_status,
)
from .sim_fixtures import DRN, KEY, SECRET, T0, Sim, start

TID = sts.tid_from_datetime(T0)


def credit_token(amount: int = 100, tid: int = TID, kind: sts.CreditKind = sts.CreditKind.ELECTRICITY) -> str:
    return sts.encode(sts.TransferCredit(tid, amount, 5, kind), sts.EA.STA, KEY)


def credit_wh(client: object) -> int:
    return int(get(client, en.CosemInterface.CREDIT, CREDIT, 2))  # type: ignore[arg-type]


def test_a_credit_token_entered_remotely_is_executed_and_credited(sim: Sim) -> None:
    with session(sim.port, SECRET) as c:
        before = credit_wh(c)
        enter(c, carrier.pack(credit_token(100)))
        code, bits = token_status(c)
        after = credit_wh(c)
        available = int(get(c, en.CosemInterface.ACCOUNT, ACCOUNT, 5))
    assert (code, bits) == (3, f"{RESULTS.index('accept'):08b}")  # token execution result OK
    assert after - before == 100 * 100  # 100 base units of 0.1 kWh = 10,000 Wh
    assert available == after
    meter = sim.load()  # saved after the change, as `mita meter` saves it
    assert meter.registers()["electricity"] == 100


def test_the_same_token_again_is_a_validation_failure(sim: Sim) -> None:
    token = carrier.pack(credit_token(50))
    with session(sim.port, SECRET) as c:
        enter(c, token)
        assert token_status(c)[0] == 3
        enter(c, token)
        code, bits = token_status(c)
        credit = credit_wh(c)
    assert (code, bits) == (6, f"{RESULTS.index('used'):08b}")  # validation result failure: used
    assert credit == 50 * 100  # counted once


def test_a_mistyped_token_fails_authentication(sim: Sim) -> None:
    good = credit_token(10)
    typo = good[:7] + str((int(good[7]) + 1) % 10) + good[8:]
    with session(sim.port, SECRET) as c:
        enter(c, carrier.pack(typo))
        code, _ = token_status(c)
        credit = credit_wh(c)
    assert code == 5  # authentication failure: the CRC does not hold under the meter's key
    assert credit == 0


@pytest.mark.parametrize("data", [b"\x12\x34", bytes.fromhex("0123456789abcdef0123"), b"12345678901234567890"])
def test_an_octet_string_that_is_not_a_bcd_token_is_a_format_failure(sim: Sim, data: bytes) -> None:
    with session(sim.port, SECRET) as c:
        enter(c, data)
        assert token_status(c)[0] == 4  # token format failure


def test_disconnect_and_reconnect_move_the_meters_switch(sim: Sim) -> None:
    dc = en.CosemInterface.DISCONNECT_CONTROL
    with session(sim.port, SECRET) as c:
        enter(c, carrier.pack(credit_token(100)))
        assert (get(c, dc, DISCONNECT_CONTROL, 2), get(c, dc, DISCONNECT_CONTROL, 3)) == (True, 1)
        switch(c, closed=False)
        assert (get(c, dc, DISCONNECT_CONTROL, 2), get(c, dc, DISCONNECT_CONTROL, 3)) == (False, 0)
        assert sim.load().status(T0)["open_reasons"] == ["remote disconnect"]
        switch(c, closed=True)
        assert (get(c, dc, DISCONNECT_CONTROL, 2), get(c, dc, DISCONNECT_CONTROL, 3)) == (True, 1)
    assert sim.load().status(T0)["switch"] == "closed"


def test_the_meter_file_shows_the_remote_credit_at_the_keypad(sim: Sim) -> None:
    token = credit_token(70)
    with session(sim.port, SECRET) as c:
        enter(c, carrier.pack(token))
    shown = run(["meter", "show", str(sim.path)])
    assert shown.exit_code == 0, shown.output
    assert json.loads(shown.stdout)["registers"]["electricity"] == 70
    again = run(["meter", "enter", str(sim.path), token, "--at", "2024-03-01T12:05"])
    assert json.loads(again.stdout)["result"] == "used"  # delivered remotely, then typed: refused, not counted twice


def test_a_wrong_lls_secret_is_refused(sim: Sim) -> None:
    with pytest.raises(DlmsClientException, match="REJECTED"), session(sim.port, b"wrong-secret"):
        pass
    with session(sim.port, SECRET) as c:  # the meter still answers the right secret afterwards
        assert credit_wh(c) == 0


def test_the_public_client_reads_but_cannot_act(sim: Sim) -> None:
    with session(sim.port) as c:
        assert int(get(c, en.CosemInterface.REGISTER, ENERGY, 2)) == 0
        assert credit_wh(c) == 0
        with pytest.raises(ActionError):
            enter(c, carrier.pack(credit_token(100)))
        with pytest.raises(ActionError):
            switch(c, closed=False)
    assert sim.load().registers() == {}


def test_the_water_meter_shows_volume_not_energy(water_sim: Sim) -> None:
    with session(water_sim.port, SECRET) as c:
        enter(c, carrier.pack(credit_token(20, kind=sts.CreditKind.WATER)))
        assert token_status(c)[0] == 3
        assert credit_wh(c) == 20 * 100  # litres: 20 base units of 0.1 m³
        assert int(get(c, en.CosemInterface.REGISTER, WATER, 2)) == 0
        scaler_unit = get(c, en.CosemInterface.REGISTER, WATER, 3)
    assert list(scaler_unit) == [-3, 13]  # 10^-3 m³: litres


def test_the_secret_never_reaches_the_meter_file(sim: Sim) -> None:
    with session(sim.port, SECRET) as c:
        enter(c, carrier.pack(credit_token(5)))
    assert SECRET not in sim.path.read_bytes()
    assert DRN in sim.path.read_text()


def test_the_clock_reads_the_servers_time(sim: Sim) -> None:
    sim.now[0] = T0.replace(hour=13, minute=7, second=9)
    with session(sim.port) as c:
        raw = get(c, en.CosemInterface.CLOCK, CLOCK, 2)
    # date-time octet-string: year (2 octets), month, day, weekday, hour, minute, second, ...
    assert (int.from_bytes(raw[0:2], "big"), raw[2], raw[3], raw[5], raw[6], raw[7]) == (2024, 3, 1, 13, 7, 9)


@pytest.fixture
def ascii_sim(tmp_path: Path, master_key: None) -> Iterator[Sim]:
    yield from start(tmp_path, encoding="ascii")


def test_a_meter_set_to_ascii_takes_the_twenty_digits_as_characters(ascii_sim: Sim) -> None:
    token = credit_token(30)
    with session(ascii_sim.port, SECRET) as c:
        enter(c, carrier.pack(token))  # packed BCD: not what this meter takes
        assert token_status(c)[0] == 4
        enter(c, carrier.pack(token, "ascii"))
        assert token_status(c)[0] == 3
        assert credit_wh(c) == 3000


def test_the_management_client_without_security_is_refused(sim: Sim) -> None:
    client = DlmsClient.with_tcp_transport("127.0.0.1", sim.port, 1, 1, timeout=5)
    client.connect()
    try:
        with pytest.raises(DlmsClientException, match="REJECTED"):
            client.associate()
    finally:
        client.disconnect()
