"""One meter file, two ways in (issue 12): a simulated meter serving the file ``mita meter`` uses takes the keypad's
entries made beside it, so a token counts once however it came.

The keypad is ``mita meter enter`` or what it does (load the file, enter, save); the head-end end is dlms-cosem
through :mod:`mita.headend.operations`. Before the fix, the sim's next save overwrote the keypad's: the credit lost,
the token's TID forgotten and the same token accepted a second time.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from pathlib import Path
from typing import NamedTuple

import pytest

from cli_run import run
from mita import sts
from mita.headend import cosem as axdr
from mita.headend import operations as op
from mita.headend.link import Association, Endpoint, associate
from mita.meter import storage
from mita.sim import carrier
from mita.sim.events import EVENT_CODES
from mita.sim.fleet import FleetThread
from mita.sim.meterfile import MeterFile, Signature

from .sim_fixtures import KEY, SECRET, T0, Sim, make_meter

TID = sts.tid_from_datetime(T0)
AT_KEYPAD = T0 + dt.timedelta(minutes=1)
REMOTE, MANUAL = 0, 2  # the token gateway's delivery method (IEC 62056-6-2 IC 115 attr 5)


def token(tid: int, amount: int = 100) -> str:
    return sts.encode(sts.TransferCredit(tid, amount, 5, sts.CreditKind.ELECTRICITY), sts.EA.STA, KEY)


def keypad(path: Path, digits: str, at: dt.datetime = AT_KEYPAD) -> str:
    """What ``mita meter enter`` does: load the file, enter the token, save the file."""
    meter = storage.load(path)
    result = meter.enter(digits, at)
    storage.save(meter, path)
    return result.result.value


def management(port: int) -> Endpoint:
    return Endpoint("127.0.0.1", port, SECRET, release=False)


def public(port: int) -> Endpoint:
    return Endpoint("127.0.0.1", port, release=False)


def remote(port: int, digits: str) -> op.TokenStatus:
    with associate(management(port)) as assoc:
        return op.enter_token(assoc, digits)


class Gateway(NamedTuple):
    token: bytes
    at: dt.datetime
    delivery: int
    code: int
    result: str | None


def gateway(assoc: Association) -> Gateway:
    """The token gateway's last token: attrs 2 token, 3 time, 5 delivery method, 6 token status."""

    def attr(index: int) -> bytes:
        return assoc.get(op.IC.TOKEN_GATEWAY, op.TOKEN_GATEWAY, index)

    status = op.token_status(assoc)
    return Gateway(
        axdr.decode_octet_string(attr(2)),
        axdr.decode_datetime(attr(3)).replace(tzinfo=None),  # the sim's clock is local: deviation 0
        axdr.decode_integer(attr(5)),
        status.code,
        status.result,
    )


def local(row: tuple[object, ...]) -> tuple[object, ...]:
    return tuple(v.replace(tzinfo=None) if isinstance(v, dt.datetime) else v for v in row)


def credit(port: int) -> int:
    """The credit register (Wh), by the public client."""
    with associate(public(port)) as assoc:
        return op.read_credit(assoc)


def read(port: int) -> tuple[Gateway, int, list[tuple[object, ...]]]:
    """The gateway, the credit (Wh) and the token transfer log, by the public client."""
    with associate(public(port)) as assoc:
        return gateway(assoc), op.read_credit(assoc), [local(row) for row in op.read_log(assoc, op.TOKEN_LOG)]


# ------------------------------------------------------------------------------------------------ counted once


def test_a_token_typed_beside_the_sim_counts_once_and_a_remote_one_after_it_too(sim: Sim) -> None:
    typed, delivered = token(TID, 70), token(TID + 1, 30)
    assert keypad(sim.path, typed) == "accept"  # while the sim serves the file
    status = remote(sim.port, delivered)
    assert (status.accepted, status.result) == (True, "accept")
    meter = sim.load()
    assert meter.registers()["electricity"] == 70 + 30  # both credits: the sim's save kept the keypad's
    assert {TID, TID + 1} <= set(meter.state.tids)  # both TIDs
    assert keypad(sim.path, typed, AT_KEYPAD + dt.timedelta(minutes=5)) == "used"  # not a second time
    assert remote(sim.port, typed).result == "used"  # nor over DLMS
    assert remote(sim.port, delivered).result == "used"
    assert sim.load().registers()["electricity"] == 100
    assert credit(sim.port) == 100 * 100  # Wh


def test_a_remote_token_arriving_while_the_keypad_saves_waits_its_turn_and_neither_is_lost(sim: Sim) -> None:
    """The keypad holds the file's lock from its load to its save (as ``mita meter`` does); a remote delivery that
    arrives in between waits, then takes the keypad's save. Without the lock the sim answered from its stale
    meter and its save dropped the keypad's credit."""
    typed, delivered = token(TID, 70), token(TID + 1, 30)
    answers: list[op.TokenStatus] = []
    with storage.FileLock(sim.path):
        meter = storage.load(sim.path)
        arriving = threading.Thread(target=lambda: answers.append(remote(sim.port, delivered)))
        arriving.start()
        arriving.join(0.5)
        assert arriving.is_alive() and not answers  # the sim waits for the keypad
        assert str(meter.enter(typed, AT_KEYPAD).result) == "accept"
        storage.save(meter, sim.path)
    arriving.join(5)
    assert [a.result for a in answers] == ["accept"]
    meter = sim.load()
    assert meter.registers()["electricity"] == 70 + 30 and {TID, TID + 1} <= set(meter.state.tids)


def test_the_sim_takes_the_file_at_each_request_not_only_at_each_change(sim: Sim) -> None:
    """A read by the public client shows the keypad's credit: nothing over DLMS changed the meter in between."""
    assert credit(sim.port) == 0
    assert keypad(sim.path, token(TID, 40)) == "accept"
    assert credit(sim.port) == 40 * 100
    assert keypad(sim.path, token(TID + 1, 2)) == "accept"
    assert credit(sim.port) == 42 * 100


# ------------------------------------------------------------------------------------------------ the gateway


def test_the_gateway_shows_a_keypad_token_as_a_manual_entry_and_a_remote_one_as_remote(sim: Sim) -> None:
    typed, delivered = token(TID, 70), token(TID + 1, 30)
    assert keypad(sim.path, typed) == "accept"
    shown, _, log = read(sim.port)
    assert shown == Gateway(carrier.pack(typed), AT_KEYPAD, MANUAL, 3, "accept")
    assert log == [(AT_KEYPAD, carrier.pack(typed), 3)]  # the token transfer log has the keypad's token too

    assert remote(sim.port, delivered).accepted
    shown, _, log = read(sim.port)
    assert shown == Gateway(carrier.pack(delivered), T0, REMOTE, 3, "accept")
    assert log[-1] == (T0, carrier.pack(delivered), 3)

    later = AT_KEYPAD + dt.timedelta(minutes=2)
    assert keypad(sim.path, delivered, later) == "used"  # a refused keypad entry shows too, with its status
    shown, _, log = read(sim.port)
    assert shown == Gateway(carrier.pack(delivered), later, MANUAL, 6, "used")
    assert [row[2] for row in log] == [3, 3, 6] and len(log) == 3
    assert len(read(sim.port)[2]) == 3  # the same keypad entry read again is not logged again


def test_mita_meter_on_the_served_file_shows_in_the_gateway_and_the_logs(sim: Sim) -> None:
    """The real ``mita meter`` commands beside the sim: a keypad credit, a tamper, a clear-tamper token."""
    typed = token(TID, 10)
    entered = run(["meter", "enter", str(sim.path), typed, "--at", "2024-03-01T12:01"])
    assert entered.exit_code == 0, entered.output
    assert run(["meter", "tamper", str(sim.path), "--kind", "magnetic", "--at", "2024-03-01T12:02"]).exit_code == 0
    with associate(public(sim.port)) as assoc:
        shown = gateway(assoc)
        fraud = [row[1] for row in op.read_log(assoc, op.FRAUD_LOG)]
        supply = [row[1] for row in op.read_log(assoc, op.DISCONNECTOR_LOG)]
    assert shown == Gateway(carrier.pack(typed), AT_KEYPAD, MANUAL, 3, "accept")
    assert fraud == [EVENT_CODES["strong_dc_field_detected"][0]]
    # the keypad's credit closed the switch, the tamper opened it (this profile opens it for a tamper)
    assert supply == [EVENT_CODES["supply_on_credit"][0], EVENT_CODES["supply_off_tamper"][0]]
    clear = sts.encode(sts.ClearTamperCondition(TID + 1), sts.EA.STA, KEY)
    assert json.loads(run(["meter", "enter", str(sim.path), clear, "--at", "2024-03-01T12:03"]).stdout)["result"] == (
        "accept"
    )
    with associate(public(sim.port)) as assoc:
        assert [row[1] for row in op.read_log(assoc, op.FRAUD_LOG)][-1] == EVENT_CODES["no_strong_dc_field_anymore"][0]
        assert [row[1] for row in op.read_log(assoc, op.DISCONNECTOR_LOG)][-1] == (
            EVENT_CODES["supply_on_tamper_cleared"][0]
        )
        assert gateway(assoc).delivery == MANUAL


def test_a_key_change_section_typed_beside_the_sim_shows_without_its_digits(sim: Sim) -> None:
    section = sts.key_change_set(0xFEDCBA9876543210, key_bits=64, ken=255, krn=2, kt=2, ti=1)[0]
    assert keypad(sim.path, sts.encode(section, sts.EA.STA, KEY)) == "kct_pending"
    shown, _, log = read(sim.port)
    assert shown == Gateway(b"", AT_KEYPAD, MANUAL, 2, "kct_pending")  # validation OK, waiting for its other half
    assert log == [(AT_KEYPAD, b"", 2)]


# ------------------------------------------------------------------------------------------------ a fleet


def test_a_fleet_meter_shows_its_last_keypad_token_from_the_start_and_takes_later_ones(
    tmp_path: Path, master_key: None
) -> None:
    path = tmp_path / "meter.json"
    storage.save(make_meter(), path)
    before = token(TID, 5)
    assert keypad(path, before) == "accept"  # before the fleet starts
    with FleetThread([(storage.load(path), path, SECRET)], clock=lambda: T0, idle_s=5) as running:
        port = next(iter(running.endpoints.values())).port
        shown, credit, log = read(port)
        assert shown == Gateway(carrier.pack(before), AT_KEYPAD, MANUAL, 3, "accept")  # the meter remembers it
        assert (credit, log) == (5 * 100, [])  # logged only when it happens while served
        assert keypad(path, token(TID + 1, 7), AT_KEYPAD + dt.timedelta(minutes=1)) == "accept"
        assert remote(port, token(TID + 2, 11)).accepted
        assert remote(port, token(TID + 1, 7)).result == "used"
    assert storage.load(path).registers()["electricity"] == 5 + 7 + 11


# ------------------------------------------------------------------------------------------------ files not taken


def test_a_file_that_does_not_load_is_not_taken_and_said_once(sim: Sim, caplog: pytest.LogCaptureFixture) -> None:
    assert keypad(sim.path, token(TID, 20)) == "accept"
    assert credit(sim.port) == 20 * 100
    broken = sim.path.with_name("broken.json")
    broken.write_text("{not json")
    broken.replace(sim.path)  # a whole new file, as a save makes one
    with caplog.at_level(logging.WARNING, logger="mita.sim"):
        assert credit(sim.port) == 20 * 100  # served as it was
        assert credit(sim.port) == 20 * 100
    warnings = [r.getMessage() for r in caplog.records if r.name == "mita.sim"]
    assert len(warnings) == 1 and "does not load (corrupt_state)" in warnings[0] and str(sim.path) in warnings[0]
    assert remote(sim.port, token(TID + 1, 1)).accepted  # the sim's save makes the file whole again
    assert storage.load(sim.path).registers()["electricity"] == 21


def test_a_meter_that_took_no_token_has_an_empty_gateway(sim: Sim) -> None:
    with associate(public(sim.port)) as assoc:
        token = axdr.decode_octet_string(assoc.get(op.IC.TOKEN_GATEWAY, op.TOKEN_GATEWAY, 2))
        at = assoc.get(op.IC.TOKEN_GATEWAY, op.TOKEN_GATEWAY, 3)
    assert (token, at) == (b"", bytes.fromhex("090c") + bytes.fromhex("ff" * 9 + "8000ff"))  # time unspecified


def test_a_file_holding_another_meter_is_not_taken(sim: Sim, caplog: pytest.LogCaptureFixture) -> None:
    other = make_meter(drn="47500150249")
    other.enter(token(TID, 99), T0)
    with caplog.at_level(logging.WARNING, logger="mita.sim"):
        storage.save(other, sim.path)
        assert credit(sim.port) == 0
        assert credit(sim.port) == 0
    warnings = [r.getMessage() for r in caplog.records if r.name == "mita.sim"]
    assert len(warnings) == 1 and "holds meter 47500150249" in warnings[0]


# ------------------------------------------------------------------------------------------------ MeterFile


def test_a_meter_file_knows_whether_another_program_saved_it(tmp_path: Path, master_key: None) -> None:
    path = tmp_path / "meter.json"
    storage.save(make_meter(), path)
    file = MeterFile(path, sync=False)
    assert file.changed()  # never read: whatever is there is news
    meter = file.load()
    assert not file.changed()
    file.save(meter)
    assert not file.changed() and file.signature == file.current()  # its own save
    storage.save(meter, path)  # the same meter, saved by another program: a new file all the same
    assert file.changed()
    file.load()
    assert not file.changed()
    path.unlink()
    assert file.current() is None and not file.changed()  # gone: the next save makes it again
    file(meter)  # a save callable, as MeterObjects calls it
    assert isinstance(file.signature, Signature) and not file.changed()
