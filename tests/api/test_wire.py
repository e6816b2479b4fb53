"""mita.api.wire: a response's head and body leave in one write, and what is written is uvicorn's own."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.server import ServerState

from mita.api.wire import JoinedProtocol


class Wire:
    """A transport that records each write (uvicorn's protocol asks it little else)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 50000)}.get(name, default)

    def pause_reading(self) -> None: ...

    def resume_reading(self) -> None: ...

    def set_protocol(self, protocol: Any) -> None: ...


async def _vend(request: Any) -> Response:
    return JSONResponse({"id": "v1", "tokens": ["1234"]}, status_code=201, headers={"Location": "/v1/vends/v1"})


async def _stream(request: Any) -> Response:
    async def parts() -> Any:
        yield b"one,"
        await asyncio.sleep(0)
        yield b"two"

    return StreamingResponse(parts(), media_type="text/plain")


async def _broken(request: Any) -> Response:
    raise RuntimeError("boom")


APP = Starlette(routes=[Route("/vend", _vend, methods=["POST"]), Route("/stream", _stream), Route("/broken", _broken)])


def _serve(protocol_class: type[HttpToolsProtocol], requests: bytes) -> Wire:
    """Feed ``requests`` to a connection of ``protocol_class`` and let its tasks finish."""

    async def run() -> Wire:
        config = Config(APP, http=protocol_class, log_config=None, access_log=False, lifespan="off")
        config.load()
        wire = Wire()
        protocol = protocol_class(config=config, server_state=ServerState(), app_state={})
        protocol.connection_made(wire)  # type: ignore[arg-type]
        protocol.data_received(requests)
        for _ in range(50):
            await asyncio.sleep(0)
        return wire

    return asyncio.run(run())


VEND = b"POST /vend HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


def _dated(data: bytes) -> bytes:
    """Without the Date header, which the two runs may see a second apart."""
    return b"\r\n".join(line for line in data.split(b"\r\n") if not line.startswith(b"date: "))


def test_a_response_is_one_write_of_exactly_what_uvicorn_writes_in_two() -> None:
    plain, joined = _serve(HttpToolsProtocol, VEND), _serve(JoinedProtocol, VEND)
    assert len(plain.writes) == 2  # uvicorn's own: the head, then the body
    assert len(joined.writes) == 1
    assert _dated(joined.writes[0]) == _dated(b"".join(plain.writes))
    assert joined.writes[0].startswith(b"HTTP/1.1 201 Created\r\n")
    assert joined.writes[0].endswith(b'\r\n\r\n{"id":"v1","tokens":["1234"]}')


def test_pipelined_requests_each_answered_in_one_write_in_order() -> None:
    wire = _serve(JoinedProtocol, VEND * 3)
    assert len(wire.writes) == 3
    assert all(w.startswith(b"HTTP/1.1 201 Created") and w.endswith(b'["1234"]}') for w in wire.writes)


def test_a_streamed_response_sends_its_head_with_its_first_part_then_the_rest() -> None:
    plain = _serve(HttpToolsProtocol, b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    wire = _serve(JoinedProtocol, b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    assert _dated(b"".join(wire.writes)) == _dated(b"".join(plain.writes))
    assert len(wire.writes) == len(plain.writes) - 1
    assert wire.writes[0].startswith(b"HTTP/1.1 200 OK") and wire.writes[0].endswith(b"4\r\none,\r\n")


@pytest.mark.parametrize("request_line", [b"HEAD /stream HTTP/1.1", b"GET /broken HTTP/1.1"])
def test_a_head_without_a_body_still_goes_out(request_line: bytes) -> None:
    plain = _serve(HttpToolsProtocol, request_line + b"\r\nHost: x\r\n\r\n")
    wire = _serve(JoinedProtocol, request_line + b"\r\nHost: x\r\n\r\n")
    assert wire.writes and _dated(b"".join(wire.writes)) == _dated(b"".join(plain.writes))
    assert len(wire.writes) == 1
