"""schemathesis over ``/openapi.json``, with every role's key: no server error, answers as the document says.

Each operation of the document is called with requests schemathesis generates from it, valid ones (positive) and
invalid ones (negative: wrong types, missing fields, strings past their limits), once per role (admin, operator,
vendor), against the world of :mod:`.world` (SQLite, in-process through ASGI). Every answer must pass:

===========================  ===============================================================================
check                        what it asks
===========================  ===============================================================================
not_a_server_error           no 5xx: every bad input is a typed 4xx
status_code_conformance      the status is one the operation documents
content_type_conformance     the media type is the documented one (JSON, problem+json, CSV)
response_schema_conformance  the body matches the documented schema
ignored_auth                 the same request without its key is refused: no operation forgets the gate
===========================  ===============================================================================

The loop is ours, not schemathesis' pytest plugin (whose lazy schemas cannot be parametrized by role): one
Hypothesis run per operation, mode and role, seeded (``derandomize``: the same examples every run) and small
(``MAX_EXAMPLES``); ``MITA_SCHEMATHESIS_EXAMPLES=500`` runs the soak's size by hand. The figures are printed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Annotated, Any

import pytest
import schemathesis
from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from pydantic import BaseModel
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    ignored_auth,
    response_schema_conformance,
    status_code_conformance,
)

from .world import ROLES, World, world

MAX_EXAMPLES = int(os.environ.get("MITA_SCHEMATHESIS_EXAMPLES", "5"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    ignored_auth,
]
MODES = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with world(tmp_path_factory.mktemp("schemathesis")) as w:
        yield w


def fuzz(app: Any, headers: dict[str, str]) -> tuple[list[str], dict[str, int]]:
    """Every operation x mode of ``app``'s document, with ``headers``: the failures (one line each), the counts."""
    api = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[str] = []
    counts = {"operations": 0, "requests": 0, "5xx": 0, "no_negative": 0}
    for result in api.get_all_operations():
        operation = result.ok()
        counts["operations"] += 1
        for mode in MODES:
            try:
                strategy = operation.as_strategy(generation_mode=mode)
            except Exception as exc:  # an operation with nothing to make invalid has no negative strategy
                if mode is GenerationMode.NEGATIVE:
                    continue
                raise AssertionError(f"{operation.label}: no strategy: {exc}") from exc

            @given(case=strategy)
            @settings(
                max_examples=MAX_EXAMPLES,
                derandomize=True,
                deadline=None,
                database=None,
                phases=[Phase.explicit, Phase.generate],  # a failure is reported as found, not shrunk (time)
                suppress_health_check=list(HealthCheck),
            )
            def run(case: Any) -> None:
                response = case.call_and_validate(headers=headers, checks=CHECKS)
                counts["requests"] += 1
                counts["5xx"] += response.status_code >= 500

            try:
                run()
            except Unsatisfiable:
                if mode is not GenerationMode.NEGATIVE:
                    raise
                counts["no_negative"] += 1  # nothing to send wrong: an operation without parameters or body
            except (Exception, BaseExceptionGroup) as exc:  # schemathesis' FailureGroup is an exception group
                first = str(exc).strip().splitlines()
                failures.append(f"{operation.label} ({mode.value}): {' | '.join(first[:12])}")
    return failures, counts


@pytest.mark.parametrize("role", ROLES)
def test_the_api_as_each_role(sec: World, role: str) -> None:
    started = time.perf_counter()
    failures, counts = fuzz(sec.app, sec.headers(role))
    print(
        f"\nschemathesis as {role}: {counts['operations']} operations x {len(MODES)} modes, {counts['requests']} "
        f"requests, {counts['5xx']} server errors, {len(failures)} failures, {time.perf_counter() - started:.1f}s"
    )
    assert counts["operations"] >= 70
    assert not failures, "\n\n".join(failures)


Key = Annotated[HTTPAuthorizationCredentials | None, Depends(HTTPBearer(auto_error=False))]


class Out(BaseModel):
    n: int


def canary_app() -> FastAPI:
    """An app with one defect per check: a server error, an answer off its schema, a route ignoring its key."""
    app = FastAPI()

    @app.get("/crash/{n}", response_model=Out, responses={401: {}})
    def crash(n: int, auth: Key) -> Any:
        if auth is None:
            raise HTTPException(401)
        raise RuntimeError("a bug")

    @app.get("/drift", response_model=Out, responses={401: {}})
    def drift(auth: Key) -> Any:
        if auth is None:
            raise HTTPException(401)
        return JSONResponse({"n": "not a number"})

    @app.get("/open", response_model=Out, responses={401: {}})
    def open_door(auth: Key) -> Any:
        return {"n": 1}

    return app


def test_the_fuzzing_finds_what_it_looks_for() -> None:
    """The loop above can fail: each defect of the canary app is caught."""
    failures, counts = fuzz(canary_app(), {"Authorization": "Bearer k"})
    found = "\n".join(failures)
    assert counts["operations"] == 3
    assert "GET /crash/{n}" in found and "a bug" in found, found  # the app's exception, raised through ASGI
    assert "GET /drift" in found and "schema" in found.lower(), found
    assert "GET /open" in found and "auth" in found.lower(), found
