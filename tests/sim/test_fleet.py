"""mita.sim.fleet: many meters in one process, driven through dlms-cosem 21.3.2 as a head-end would."""

from __future__ import annotations

import datetime as dt
import resource
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mita.meter import Meter, storage
from mita.sim.fleet import Endpoint, FleetError, FleetMeter, FleetThread

from .cosem_calls import DISCONNECTOR_LOG, FRAUD_LOG, TOKEN_LOG, enter, rows, session, status_code
from .sim_fixtures import CREDIT_TOKEN, SECRET, T0, drn_of, make_meter

TOKEN = CREDIT_TOKEN


def clock() -> dt.datetime:
    return T0


def free_ports(count: int) -> int:
    """A first port of ``count`` consecutive ones free now (the test binds them again at once)."""
    for _ in range(50):
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
        probe.close()
        taken = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                taken.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in taken:
                s.close()
    raise RuntimeError("no free run of ports")


@pytest.fixture
def files(tmp_path: Path, master_key: None) -> list[FleetMeter]:
    meters: list[FleetMeter] = []
    for i in range(3):
        path = tmp_path / f"m{i}.json"
        storage.save(make_meter(drn=drn_of(i)), path)
        meters.append((storage.load(path), path, SECRET))
    return meters


@pytest.fixture
def fleet(files: list[FleetMeter]) -> Iterator[FleetThread]:
    with FleetThread(files, clock=clock, idle_s=5) as running:
        yield running


def test_each_meter_listens_on_its_own_port_and_saves_its_own_file(fleet: FleetThread, files: list[FleetMeter]) -> None:
    assert list(fleet.endpoints) == [drn_of(i) for i in range(3)]
    assert len({e.port for e in fleet.endpoints.values()}) == 3
    first, second, _ = fleet.endpoints.values()
    with session(first.port, SECRET) as c:
        enter(c, TOKEN)
        assert status_code(c) == 3
    with session(second.port, SECRET) as c:
        enter(c, TOKEN)  # the same token on another meter: another key would refuse it, this one has the same key
        assert status_code(c) == 3
    credit = [storage.load(path).registers() for _, path, _ in files]  # type: ignore[arg-type]
    assert credit == [{"electricity": 100.0}, {"electricity": 100.0}, {}]


def test_each_meter_has_its_own_logs(fleet: FleetThread) -> None:
    first, second, _ = fleet.endpoints.values()
    with session(first.port, SECRET) as c:
        enter(c, TOKEN)
    with session(second.port) as c:
        assert rows(c, TOKEN_LOG) == [] and rows(c, DISCONNECTOR_LOG) == []
    fleet.call(lambda: fleet.fleet.servers[drn_of(1)].objects.tamper("cover", T0))
    with session(second.port) as c:
        assert [code for _, code in rows(c, FRAUD_LOG)] == [44]


def test_consecutive_ports_from_a_base(files: list[FleetMeter]) -> None:
    base = free_ports(3)
    with FleetThread(files, "127.0.0.1", base) as running:
        assert [e.port for e in running.endpoints.values()] == [base, base + 1, base + 2]
        with session(base + 2, SECRET) as c:
            enter(c, TOKEN)
            assert status_code(c) == 3


def test_one_loopback_address_each(files: list[FleetMeter]) -> None:
    port = free_ports(1)
    with FleetThread(files[:2], addresses="127.0.1.0/29", port_base=port) as running:
        assert list(running.endpoints.values()) == [Endpoint("127.0.1.1", port), Endpoint("127.0.1.2", port)]
        with session(port, SECRET, host="127.0.1.2") as c:
            enter(c, TOKEN)
            assert status_code(c) == 3


@pytest.mark.parametrize(
    ("options", "code"),
    [({"addresses": "127.0.1.0/30"}, "too_few_addresses"), ({"addresses": "127.0.1.x/8"}, "invalid_addresses")],
)
def test_a_block_that_cannot_hold_the_fleet_is_refused(
    files: list[FleetMeter], options: dict[str, str], code: str
) -> None:
    with pytest.raises(FleetError) as caught:
        FleetThread(files, **options).start()
    assert caught.value.code == code


def test_a_meter_given_twice_is_refused(files: list[FleetMeter]) -> None:
    with pytest.raises(FleetError, match=f"meter {drn_of(0)}") as caught:
        FleetThread([files[0], files[0]]).start()
    assert caught.value.code == "duplicate_meter"


def test_a_port_in_use_stops_the_meters_started_and_says_which(files: list[FleetMeter]) -> None:
    base = free_ports(3)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", base + 2))
        busy.listen()
        with pytest.raises(FleetError, match=f"meter {drn_of(2)}: cannot listen on 127.0.0.1:{base + 2}") as caught:
            FleetThread(files, "127.0.0.1", base).start()
    assert caught.value.code == "listen_failed"
    with socket.socket() as again:  # the first two listeners were closed
        again.bind(("127.0.0.1", base))


def test_stop_ends_open_connections_at_once(files: list[FleetMeter]) -> None:
    running = FleetThread(files, idle_s=60).start()
    port = next(iter(running.endpoints.values())).port
    with session(port, SECRET):
        running.stop(timeout=5)  # idle_s is 60: a stop that waited for the connection to go idle would time out
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


@pytest.mark.slow
def test_a_thousand_meters_in_one_process() -> None:
    """Start, one token each through dlms-cosem (sequential: client and fleet share this process's CPU), stop.
    The figures are printed, not asserted (docs/notes/dlms-sim.md has them; a busy machine would fail a bound)."""
    count, saved = 1000, set()
    meters: list[Meter] = [make_meter(drn=drn_of(i)) for i in range(count)]
    fleet: list[FleetMeter] = [(m, lambda m: saved.add(m.state.drn), SECRET) for m in meters]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    running = FleetThread(fleet, clock=clock).start()
    start_s = time.perf_counter() - started
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    try:
        codes = []
        started = time.perf_counter()
        for endpoint in running.endpoints.values():
            with session(endpoint.port, SECRET) as c:
                enter(c, TOKEN)
                codes.append(status_code(c))
        deliver_s = time.perf_counter() - started
    finally:
        started = time.perf_counter()
        running.stop()
        stop_s = time.perf_counter() - started
    assert codes == [3] * count and len(saved) == count
    print(
        f"\n{count} meters: start {start_s:.2f} s, {count / deliver_s:.0f} deliveries/s "
        f"(associate, enter, read status), stop {stop_s * 1000:.0f} ms, max RSS {rss_kb / 1024:.0f} MB "
        f"(+{(rss_kb - rss_before) / 1024:.0f} MB)"
    )
