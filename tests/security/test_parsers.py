"""Every parser of outside input, fuzzed: each succeeds or raises its module's typed error, never anything else.

The suite already fuzzes some parsers with random input (``grep -rn 'given(' tests``): token decoding
(tests/sts/test_properties.py, also ``token_ops.handle`` on mutated requests), MQTT payloads from random bytes
(tests/telemetry), Daraja bodies from random JSON (tests/channels/test_messages.py), SMS commands and USSD
histories from random text, A-XDR truncations (tests/headend/test_cosem.py). Random input mostly dies at the first
check, so what was missing is input that is *nearly* right. This module fills those gaps:

==============================  ==========================================================  ====================
parser                          input                                                       typed error
==============================  ==========================================================  ====================
``mita token batch`` (lines)    random bytes lines, valid requests mutated, as JSON text    none: an error line
meter state (storage.loads)     a valid state file with fields dropped or replaced          ``MeterError``
meter files (load, MeterFile)   random bytes, truncations, non-UTF-8                        ``MeterError``
MQTT payloads (5 kinds)         valid messages with fields dropped or replaced              ``TelemetryError``
MQTT topics                     random topics and mutated valid ones                        ``TelemetryError``
Daraja callbacks                valid bodies of each kind, mutated                          ``VendError``
A-XDR (DLMS values)             random octets to every typed decoder of mita.headend.cosem  ``CosemError``
STS text inputs                 meter numbers, EA, base dates, issue times, digits          ``StsError``
==============================  ==========================================================  ====================

Each runs ``EXAMPLES`` cases (seeded by Hypothesis' database-less derandomised mode: the same cases each run).
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import cli_run
from mita import sts
from mita.channels.mpesa import messages
from mita.headend import cosem
from mita.meter import Meter, storage
from mita.meter.errors import MeterError
from mita.sim.meterfile import MeterFile
from mita.sts.tid import BaseDate, parse_issue_time
from mita.telemetry import topics
from mita.telemetry.errors import TelemetryError
from mita.telemetry.events import EVENTS
from mita.telemetry.obis import Medium
from mita.telemetry.payload import Ack, Command, Event, Events, Reading, Readings, Status
from mita.vend.errors import VendError

EXAMPLES = int(os.environ.get("MITA_FUZZ_EXAMPLES", "300"))
FUZZ = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

# ---------------------------------------------------------------------- nearly-right JSON

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
    | st.sampled_from(["", "0", "-1", "1e999", "NaN", "47500150231", "ab" * 40, "\x00", "\ud800"])
)
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)


def _paths(doc: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value inside ``doc`` (dict keys and list indexes)."""
    out = [at]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*at, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*at, i))
    return out


@st.composite
def mutants(draw: st.DrawFn, doc: Any, max_changes: int = 3) -> Any:
    """``doc`` with a few values replaced by any JSON, or dropped (a dict key, a list item)."""
    doc = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, max_changes))):
        paths = _paths(doc)
        path = draw(st.sampled_from(paths))
        if not path:
            if draw(st.integers(0, 9)) == 0:
                doc = draw(json_values)
            continue
        parent = doc
        for step in path[:-1]:
            parent = parent[step]
        if draw(st.booleans()):
            parent[path[-1]] = draw(json_values)
        elif isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent.pop(path[-1])
    return doc


def only(error: type[BaseException] | tuple[type[BaseException], ...], parse: Callable[[], Any]) -> None:
    """``parse()`` succeeds or raises ``error``; anything else fails the test (with what was raised)."""
    try:
        parse()
    except error as exc:
        code = getattr(exc, "code", "?")
        assert isinstance(code, str) and code, f"{type(exc).__name__} without a code"


# ---------------------------------------------------------------------- mita token batch, as lines of text

BATCH_REQUESTS = [
    {"op": "derive_key", "dkga": 2, "vending_key": "0123456789abcdef", "drn": "47500150231", "sgc": "123456",
     "ti": 1, "krn": 1, "kt": 2},
    {"op": "encode", "ea": 7, "decoder_key": "0123456789abcdef", "class": 0, "subclass": 0, "tid": 1000,
     "amount": 25.5, "rnd": 3},
    {"op": "decode", "ea": 7, "decoder_key": "0123456789abcdef", "token": "5127 2356 9771 3006 1374"},
    {"op": "tid", "issued": "2026-03-10T09:30:00", "base_date": 2014},
]  # fmt: skip


@FUZZ
@given(
    st.lists(
        st.one_of(
            st.binary(max_size=80),
            st.sampled_from(BATCH_REQUESTS).flatmap(mutants).map(lambda d: json.dumps(d).encode()),
            st.sampled_from([b"{", b"[" * 5000, b"1" * 5000, b'"\xff\xfe"', b"\xef\xbb\xbf{}", b"null", b"{}"]),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_token_batch_answers_every_line_with_one_json_line(lines: list[bytes]) -> None:
    lines = [line.replace(b"\n", b" ") for line in lines]
    result = cli_run.run(["token", "batch"], input=b"\n".join(lines) + b"\n")
    assert result.exit_code == 0, result.stderr
    answers = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(answers) == sum(1 for line in lines if line.strip())
    for answer in answers:
        assert isinstance(answer, dict)
        if "error" in answer:
            assert set(answer["error"]) == {"code", "message"} and answer["error"]["code"]


# ---------------------------------------------------------------------- meter state and meter files


@pytest.fixture(scope="module")
def meter_json() -> dict[str, Any]:
    """A real meter's state file, as JSON: entered a token, so its lists and registers are not empty."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MITA_MASTER_KEY", MASTER)
        meter = Meter.create(
            drn="47500150231", ea=7, decoder_key=0x1234, sgc="123456", ti=1, krn=1, kt=2, profile="legacy-ea07"
        )
        meter.run(3600, 500, dt.datetime(2026, 3, 10, 9, 0))
        doc: dict[str, Any] = json.loads(storage.dumps(meter))
    return doc


MASTER = secrets.token_hex(32)


@FUZZ
@given(st.data())
def test_a_mutated_meter_state_is_a_meter_or_a_meter_error(meter_json: dict[str, Any], data: st.DataObject) -> None:
    doc = data.draw(mutants(meter_json))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MITA_MASTER_KEY", MASTER)
        try:
            meter = storage.loads(json.dumps(doc))
        except MeterError as exc:
            assert exc.code
            return
        # a state that loads must also work: the next use of a field the file got wrong is a typed error too
        when = dt.datetime(2026, 3, 10, 12, 0)
        only((MeterError, sts.StsError), lambda: meter.enter("5127 2356 9771 3006 1374", when))
        only((MeterError, sts.StsError), lambda: meter.run(60, 500, when))
        only(MeterError, lambda: storage.dumps(meter))


@FUZZ
@given(st.binary(max_size=400) | st.integers(0, 2000).map(lambda n: n))
def test_any_meter_file_is_a_meter_or_a_meter_error(
    tmp_path_factory: pytest.TempPathFactory, meter_json: dict[str, Any], content: bytes | int
) -> None:
    """Random bytes, or the real file cut short anywhere (a torn write: save is atomic, a copy by hand is not)."""
    if isinstance(content, int):
        text = json.dumps(meter_json).encode()
        content = text[: content % (len(text) + 1)]
    path = tmp_path_factory.mktemp("meterfile") / "meter.json"
    path.write_bytes(content)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MITA_MASTER_KEY", MASTER)
        only(MeterError, lambda: storage.load(path))
        only(MeterError, lambda: MeterFile(path).load())


def test_a_meter_file_that_is_not_utf8_is_a_meter_error(tmp_path: Path) -> None:
    path = tmp_path / "meter.json"
    path.write_bytes(b'{"format": "mita-meter/1", "drn": "\xff\xfe"}')
    with pytest.raises(MeterError):
        storage.load(path)
    with pytest.raises(MeterError):
        MeterFile(path).load()


# ---------------------------------------------------------------------- MQTT payloads and topics

TELEMETRY = [
    Readings(900, (Reading(1, 1_770_000_000, Medium.ELECTRICITY, 123_456, 800, 50_000, True, 10),)),
    Readings(900, (Reading(2, 1_770_000_900, Medium.WATER, 5_000, 12, 9_000, False),)),
    Events((Event(7, 1_770_000_000, sorted(EVENTS)[0]),)),
    Status(True, 1_770_000_000, Medium.ELECTRICITY, "legacy-ea07"),
    Command(41, "enter_tokens", {"tokens": ["51272356977130061374"]}, 1_770_003_600),
    Ack(41, True, {"statuses": ["accepted"]}),
    Ack(42, False, None, "expired"),
]
KINDS = (Readings, Events, Status, Command, Ack)


@FUZZ
@given(st.sampled_from(TELEMETRY).flatmap(lambda m: mutants(json.loads(m.encode()))))
def test_a_mutated_mqtt_payload_decodes_or_raises_a_telemetry_error(doc: Any) -> None:
    raw = json.dumps(doc).encode()
    for kind in KINDS:
        only(TelemetryError, lambda kind=kind: kind.decode(raw))


def test_the_telemetry_seeds_are_valid() -> None:
    """The mutations start from messages that decode, so they reach past the first checks."""
    for message in TELEMETRY:
        assert type(message).decode(message.encode()) == message


topic_parts = st.sampled_from(["mita", "v1", "v2", "47500150231", "4750015023", "+", "#", "", *topics.Kind])


@FUZZ
@given(st.text(max_size=80) | st.lists(topic_parts | st.text(max_size=12), max_size=6).map("/".join))
def test_any_topic_is_a_meter_and_kind_or_a_telemetry_error(name: str) -> None:
    only(TelemetryError, lambda: topics.parse(name))


# ---------------------------------------------------------------------- Daraja's callbacks, nearly right

DARAJA = {
    messages.c2b: {
        "TransactionType": "Pay Bill", "TransID": "RKTQDM7W6S", "TransTime": "20260310093000",
        "TransAmount": "150.00", "BusinessShortCode": "600638", "BillRefNumber": "47500150231",
        "MSISDN": "2547 ***** 126", "ThirdPartyTransID": "", "FirstName": "John",
    },
    messages.stk_callback: {"Body": {"stkCallback": {
        "MerchantRequestID": "29115-34620561-1", "CheckoutRequestID": "ws_CO_191220191020363925",
        "ResultCode": 0, "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": [
            {"Name": "Amount", "Value": 150.00}, {"Name": "MpesaReceiptNumber", "Value": "NLJ7RT61SV"},
            {"Name": "Balance"}, {"Name": "TransactionDate", "Value": 20191219102115},
            {"Name": "PhoneNumber", "Value": 254708374149},
        ]},
    }}},
    messages.stk_query_answer: {
        "ResponseCode": "0", "MerchantRequestID": "22205-34066-1", "CheckoutRequestID": "ws_CO_13012021093521236557",
        "ResultCode": "1032", "ResultDesc": "Request cancelled by user",
    },
    messages.result: {"Result": {
        "ResultType": 0, "ResultCode": 0, "ResultDesc": "The service request is processed successfully.",
        "OriginatorConversationID": "10571-7910404-1", "ConversationID": "AG_20191219_00004e48cf7e3533f581",
        "TransactionID": "NLJ41HAY6Q",
        "ResultParameters": {"ResultParameter": [
            {"Key": "TransactionStatus", "Value": "Reversed"}, {"Key": "ReceiptNo", "Value": "NLJ7RT61SV"},
        ]},
    }},
    messages.pull_page: {"ResponseRefID": "4356", "ResponseCode": "1000", "ResponseMessage": "Success", "Response": [[
        {"transactionId": "RKTQDM7W6S", "trxDate": "2026-03-10T09:30:00", "msisdn": 254700000001,
         "sender": "", "transactiontype": "c2b-pay-bill-debit", "billreference": "47500150231", "amount": "150"},
    ]]},
}  # fmt: skip


def test_the_daraja_seeds_parse() -> None:
    for parse, body in DARAJA.items():
        parse(body)


@FUZZ
@given(st.sampled_from(list(DARAJA)).flatmap(lambda parse: st.tuples(st.just(parse), mutants(DARAJA[parse]))))
def test_a_mutated_daraja_body_parses_or_raises_a_vend_error(case: tuple[Callable[[Any], Any], Any]) -> None:
    parse, body = case
    for each in DARAJA:  # a body of one kind posted to another kind's callback, too
        only(VendError, lambda each=each: each(body))
    if parse is messages.c2b:
        only(VendError, lambda: messages.c2b(body, validation=True))


# ---------------------------------------------------------------------- A-XDR values from a meter

COSEM_DECODERS: list[Callable[[bytes], Any]] = [
    cosem.decode,
    cosem.decode_integer,
    cosem.decode_bool,
    cosem.decode_octet_string,
    cosem.decode_datetime,
    cosem.parse_token_status,
    cosem.decode_scaler_unit,
    cosem.decode_capture_objects,
    cosem.decode_rows,
    lambda raw: cosem.decode_rows(raw, (0,)),
    cosem.datetime_from_octets,
    cosem.obis_text,
]
#: A-XDR tags, so random octets start like values more often than not
TAGS = [0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x09, 0x0A, 0x0C, 0x0F, 0x10, 0x11, 0x12, 0x16, 0x17, 0x19, 0xFF]


@FUZZ
@given(st.one_of(st.binary(max_size=64), st.tuples(st.sampled_from(TAGS), st.binary(max_size=40))))
def test_any_octets_decode_or_raise_a_cosem_error(data: bytes | tuple[int, bytes]) -> None:
    raw = bytes([data[0]]) + data[1] if isinstance(data, tuple) else data
    for decode in COSEM_DECODERS:
        only(cosem.CosemError, lambda decode=decode: decode(raw))


# ---------------------------------------------------------------------- the token engine's text inputs


@FUZZ
@given(st.text(max_size=40) | st.from_regex(r"[0-9 \-]{8,30}", fullmatch=True), st.text(max_size=8) | st.none())
def test_meter_numbers_parse_or_raise_a_typed_error(text: str, iin: str | None) -> None:
    only(sts.StsError, lambda: sts.MeterNumber.parse(text, iin))


@FUZZ
@given(st.one_of(json_leaves, st.text(max_size=12)))
def test_ea_and_base_dates_parse_or_raise_a_typed_error(value: Any) -> None:
    only(sts.StsError, lambda: sts.EA.parse(value))
    only(sts.StsError, lambda: BaseDate.parse(value))


@FUZZ
@given(st.text(max_size=40) | st.datetimes().map(lambda d: d.isoformat()) | st.from_regex(r"\d{4}-\d\d-\d\d.{0,20}"))
def test_issue_times_parse_or_raise_a_typed_error(text: str) -> None:
    only(sts.StsError, lambda: parse_issue_time(text))


@FUZZ
@given(st.text(max_size=40) | st.from_regex(r"[0-9 ]{18,26}", fullmatch=True))
def test_token_digits_parse_or_raise_a_typed_error(text: str) -> None:
    only(sts.StsError, lambda: sts.parse_digits(text))
