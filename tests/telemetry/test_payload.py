"""The ``mita/v1`` messages: every encode has its decode (Hypothesis), and malformed input is a typed error."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mita.telemetry import topics
from mita.telemetry.errors import TelemetryError
from mita.telemetry.events import EVENTS
from mita.telemetry.obis import Medium
from mita.telemetry.payload import Ack, Command, Event, Events, Reading, Readings, Status

seqs = st.integers(0, 2**63 - 1)
times = st.integers(0, 2**37)
values = st.integers(0, 2**62)
readings = st.builds(
    Reading,
    seqs,
    times,
    st.sampled_from(Medium),
    values,
    values,
    st.integers(-(2**62), 2**62),
    st.booleans(),
    st.none() | values,
).map(lambda r: r._replace(reverse=None) if r.medium is Medium.WATER else r)
small_json = st.dictionaries(st.text(max_size=8), st.integers() | st.text(max_size=8) | st.booleans(), max_size=4)


@given(st.integers(1, 86_400), st.lists(readings, min_size=1, max_size=8))
def test_readings_round_trip(interval: int, items: list[Reading]) -> None:
    block = Readings(interval, tuple(items))
    assert Readings.decode(block.encode()) == block


@given(st.lists(st.builds(Event, seqs, times, st.sampled_from(sorted(EVENTS))), min_size=1, max_size=8))
def test_events_round_trip(items: list[Event]) -> None:
    assert Events.decode(Events(tuple(items)).encode()) == Events(tuple(items))


@given(st.builds(Status, st.booleans(), times, st.none() | st.sampled_from(Medium), st.none() | st.text(max_size=40)))
def test_status_round_trip(status: Status) -> None:
    assert Status.decode(status.encode()) == status


@given(st.builds(Command, st.integers(1, 2**63 - 1), st.text(min_size=1, max_size=40), small_json, times))
def test_command_round_trip(command: Command) -> None:
    assert Command.decode(command.encode()) == command


errors = st.none() | st.text(max_size=200)


@given(st.builds(Ack, st.integers(1, 2**63 - 1), st.booleans(), st.none() | small_json, errors))
def test_ack_round_trip(ack: Ack) -> None:
    assert Ack.decode(ack.encode()) == ack


@given(st.binary(max_size=200))
def test_any_bytes_decode_or_raise_a_typed_error(data: bytes) -> None:
    for kind in (Readings, Events, Status, Command, Ack):
        try:
            kind.decode(data)
        except TelemetryError as exc:
            assert exc.code in {"bad_json", "bad_version", "bad_field", "bad_event"}


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"not json", "bad_json"),
        (b"[1]", "bad_json"),
        (b'{"v": 2, "interval": 900, "readings": []}', "bad_version"),
        (b'{"v": 1, "interval": 900, "readings": []}', "bad_field"),
        (b'{"v": 1, "interval": 900, "readings": [{"seq": 1, "t": 1}]}', "bad_field"),
        (b'{"v": 1, "interval": 0, "readings": [{}]}', "bad_field"),
    ],
)
def test_malformed_readings(body: bytes, code: str) -> None:
    with pytest.raises(TelemetryError) as caught:
        Readings.decode(body)
    assert caught.value.code == code


def test_a_reading_says_its_medium_by_its_register_and_refuses_a_bool_for_a_number() -> None:
    water = Reading(7, 1_764_835_200, Medium.WATER, 1_500, 30, 9_000, True)
    body = json.loads(Readings(900, (water,)).encode())
    assert "8.0.1.0.0.255" in body["readings"][0] and "1.0.1.8.0.255" not in body["readings"][0]
    body["readings"][0]["8.0.1.0.0.255"] = True  # JSON true is not a register value
    with pytest.raises(TelemetryError, match=r"8\.0\.1\.0\.0\.255"):
        Readings.decode(json.dumps(body).encode())


def test_unknown_event_is_refused() -> None:
    with pytest.raises(TelemetryError) as caught:
        Events.decode(b'{"v": 1, "events": [{"seq": 1, "t": 5, "event": "meter_exploded"}]}')
    assert caught.value.code == "bad_event"


def test_topics() -> None:
    assert topics.topic("01234567890", topics.Kind.READINGS) == "mita/v1/01234567890/readings"
    assert topics.parse("mita/v1/01234567890/readings") == ("01234567890", topics.Kind.READINGS)
    assert topics.subscription(topics.Kind.EVENTS, "g") == "$share/g/mita/v1/+/events"
    for bad in ("mita/v2/01234567890/readings", "mita/v1/123/readings", "mita/v1/0123456789a/readings",
                "mita/v1/01234567890/nonsense", "mita/v1/٠١٢٣٤٥٦٧٨٩٠/readings"):  # fmt: skip
        with pytest.raises(TelemetryError) as caught:
            topics.parse(bad)
        assert caught.value.code == "bad_topic"
