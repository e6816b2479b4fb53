"""Request ids and the access log: every answer carries an ``X-Request-ID`` (the caller's if it is a plain token),
and every request leaves one line in ``mita.access``, as text or a JSON object, with the API key's id and never
the key, and never the query string."""

from __future__ import annotations

import io
import json
import logging
import re
import secrets
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from hypothesis import given
from hypothesis import strategies as st
from starlette.types import Scope

from mita.api import create_app, logs
from mita.api.observe import VALID_ID, request_id
from mita.vend import database, registry

HEX32 = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def app_and_key(tmp_path: object, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[TestClient, int, str]]:
    monkeypatch.setenv("MITA_MASTER_KEY", secrets.token_hex(32))
    url = f"sqlite:///{tmp_path}/observe.db"
    database.upgrade(url)
    app = create_app(url)
    key_id, key = registry.Registry(app.state.engine).create_api_key("control room", "operator")
    with TestClient(app) as client:
        yield client, key_id, key


def access_lines(formatter: logging.Formatter) -> tuple[io.StringIO, logging.Handler]:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(formatter)
    return out, handler


@pytest.fixture
def captured() -> Iterator[dict[str, io.StringIO]]:
    """What ``mita.access`` writes, through both formatters at once."""
    logger = logging.getLogger("mita.access")
    text, text_handler = access_lines(logs.TextFormatter())
    js, json_handler = access_lines(logs.JsonFormatter())
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(text_handler)
    logger.addHandler(json_handler)
    try:
        yield {"text": text, "json": js}
    finally:
        logger.removeHandler(text_handler)
        logger.removeHandler(json_handler)
        logger.setLevel(level)


def test_a_valid_request_id_is_echoed_and_others_are_replaced(app_and_key: tuple[TestClient, int, str]) -> None:
    client, _, _ = app_and_key
    assert client.get("/healthz", headers={"X-Request-ID": "trace-42:a/b+c="}).headers["x-request-id"] == (
        "trace-42:a/b+c="
    )
    for bad in ("has space", "x" * 129, "semi;colon", "back\\slash", ""):
        rid = client.get("/healthz", headers={"X-Request-ID": bad}).headers["x-request-id"]
        assert HEX32.fullmatch(rid), (bad, rid)
    fresh = {client.get("/healthz").headers["x-request-id"] for _ in range(5)}
    assert len(fresh) == 5 and all(HEX32.fullmatch(r) for r in fresh)


def test_problems_carry_the_request_id_too(app_and_key: tuple[TestClient, int, str]) -> None:
    client, _, _ = app_and_key
    for r in (
        client.get("/v1/meters", headers={"X-Request-ID": "req-1"}),  # refused by the gate
        client.get("/v1/nothing", headers={"X-Request-ID": "req-1", "X-API-Key": app_and_key[2]}),  # by the router
    ):
        assert r.headers["content-type"] == "application/problem+json"
        assert r.headers["x-request-id"] == "req-1"


@given(st.binary(max_size=200))
def test_request_id_accepts_only_plain_tokens(raw: bytes) -> None:
    scope: Scope = {"type": "http", "headers": [(b"x-request-id", raw)]}
    rid = request_id(scope)
    if VALID_ID.fullmatch(raw):
        assert rid == raw.decode("ascii")
    else:
        assert HEX32.fullmatch(rid)


def test_one_access_line_per_request_as_text_and_json(
    app_and_key: tuple[TestClient, int, str], captured: dict[str, io.StringIO]
) -> None:
    client, key_id, key = app_and_key
    r = client.get("/v1/meters?api_key=not-for-the-log&limit=5", headers={"X-API-Key": key, "X-Request-ID": "r-1"})
    assert r.status_code == 200
    r = client.get("/v1/meters/47500150231", headers={"X-Request-ID": "r-2"})
    assert r.status_code == 401
    text = captured["text"].getvalue().splitlines()
    lines = [json.loads(line) for line in captured["json"].getvalue().splitlines()]
    assert len(text) == len(lines) == 2
    assert re.fullmatch(
        rf"\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{{3}}Z INFO mita\.access "
        rf"GET /v1/meters 200 \d+\.\dms rid=r-1 key={key_id}",
        text[0],
    ), text[0]
    assert text[1].endswith("GET /v1/meters/47500150231 401 " + text[1].split(" 401 ")[1])
    assert "rid=r-2 key=-" in text[1]
    first, second = lines
    assert first["logger"] == "mita.access" and first["level"] == "info" and first["time"].endswith("Z")
    assert (first["method"], first["path"], first["route"], first["status"]) == ("GET", "/v1/meters", "/v1/meters", 200)
    assert first["request_id"] == "r-1" and first["key_id"] == key_id and first["code"] is None
    assert isinstance(first["duration_ms"], float) and first["duration_ms"] >= 0
    assert (second["status"], second["key_id"], second["code"], second["route"]) == (
        401, None, "unauthorized", "/v1/meters/{drn}",
    )  # fmt: skip
    everything = captured["text"].getvalue() + captured["json"].getvalue()
    assert key not in everything and "not-for-the-log" not in everything and "limit=5" not in everything


def test_other_log_lines_written_during_a_request_name_it(app_and_key: tuple[TestClient, int, str]) -> None:
    client, _, _ = app_and_key
    out, handler = access_lines(logs.JsonFormatter())
    app = client.app
    logger = logging.getLogger("mita.api.test")

    @app.get("/v1/noisy")  # type: ignore[attr-defined, untyped-decorator]
    def noisy() -> dict[str, str]:
        logger.warning("something to say")  # in a worker thread: the id travels with the context
        return {}

    logger.addHandler(handler)
    try:
        client.get("/v1/noisy", headers={"X-API-Key": app_and_key[2], "X-Request-ID": "r-noisy"})
    finally:
        logger.removeHandler(handler)
    (line,) = [json.loads(x) for x in out.getvalue().splitlines()]
    assert line["message"] == "something to say" and line["request_id"] == "r-noisy"
    assert "request_id" not in json.loads(logs.JsonFormatter().format(logging.makeLogRecord({"msg": "outside"})))


def test_uvicorns_news_is_dropped_and_its_warnings_kept() -> None:
    """(The whole configuration, applied by uvicorn in a real server, is tested in test_launch.py.)"""
    out, handler = access_lines(logs.TextFormatter())
    handler.addFilter(logs.UvicornNews())
    for level, msg in (
        (logging.INFO, "Started server process [1]"),
        (logging.WARNING, "a warning of uvicorn's"),
        (logging.INFO, "Child process [2] died"),
    ):
        fields = {"levelno": level, "levelname": logging.getLevelName(level), "msg": msg}
        handler.handle(logging.makeLogRecord({"name": "uvicorn.error", **fields}))
    warning, died = out.getvalue().splitlines()
    assert warning.endswith("WARNING uvicorn.error a warning of uvicorn's")
    assert died.endswith("INFO uvicorn.error Child process [2] died")
    config = logs.config("json", on_start={"()": "x.Y"})
    assert config["formatters"]["mita"]["()"] == "mita.api.logs.JsonFormatter"
    assert config["handlers"]["uvicorn"]["filters"] == ["start", "news"]  # the start-up filter sees the record first
    with pytest.raises(ValueError, match="log format"):
        logs.config("xml")
