"""Every live answer of the HTTP API against its documented response: a status the route lists, a body whose
fields its model declares (a field the API sends and the OpenAPI document leaves out is a contract it never made),
and for a refusal, a code the document lists for that status (``x-error-codes``).

:func:`checker` gives an httpx response hook; the API test modules install it on their client, so every answer
of those suites is checked.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, TypeAdapter

from mita.api.problems import Problem
from mita.api.routes import ROUTERS


def documented(route: APIRoute) -> dict[int, Any]:
    """status → the model (or type) the route documents for it."""
    out: dict[int, Any] = {}
    for status, entry in route.responses.items():
        if isinstance(entry, dict) and "model" in entry:
            out[int(status)] = entry["model"]
    if route.response_model is not None:
        out[route.status_code or 200] = route.response_model
    return out


def undeclared(model: Any, data: Any, where: str = "") -> list[str]:
    """Fields of ``data`` that ``model`` does not declare, recursively (models, lists, optional, dicts)."""
    origin = typing.get_origin(model)
    if origin in (typing.Union, types.UnionType):
        arms = [a for a in typing.get_args(model) if a is not type(None)]
        return min((undeclared(a, data, where) for a in arms), key=len) if arms and data is not None else []
    if origin is list and isinstance(data, list):
        (item,) = typing.get_args(model) or (Any,)
        return [x for i, d in enumerate(data) for x in undeclared(item, d, f"{where}[{i}]")]
    if isinstance(model, type) and issubclass(model, BaseModel) and isinstance(data, dict):
        names = {f.alias or n for n, f in model.model_fields.items()} | set(model.model_fields)
        found = [f"{where}.{k}" for k in data if k not in names]
        for name, field in model.model_fields.items():
            key = field.alias or name
            if key in data:
                found += undeclared(field.annotation, data[key], f"{where}.{key}")
        return found
    return []


def checker(app: FastAPI) -> Callable[[httpx.Response], None]:
    routes = [r for router in ROUTERS for r in router.routes if isinstance(r, APIRoute)]
    assert len(routes) > 40

    def check(response: httpx.Response) -> None:
        response.read()
        request = response.request
        path = request.url.path
        route = next((r for r in routes if r.path_regex.match(path) and request.method in r.methods), None)
        if route is None or response.headers.get("content-type", "").split(";")[0] not in (
            "application/json",
            "application/problem+json",
        ):
            return  # an unknown path (a 404 of the framework) or a CSV export
        status = response.status_code
        listed = app.openapi()["paths"][route.path][request.method.lower()]["responses"]
        assert str(status) in listed, f"{request.method} {route.path} answered {status}, not in {sorted(listed)}"
        body = response.json()
        if status >= 400:  # the code must be one the document lists for this answer (mita.api.openapi)
            codes = listed[str(status)].get("x-error-codes", [])
            code = body.get("code")
            assert code in codes, f"{request.method} {route.path} {status} answered {code!r}, not in {codes}"
        model = Problem if status >= 400 else documented(route).get(status)
        if model is None:
            return  # documented without a model
        TypeAdapter(model).validate_python(body)
        extra = undeclared(model, body)
        assert not extra, f"{request.method} {route.path} {status} sends undocumented fields {extra}"

    return check
