"""The OpenAPI document (``/openapi.json``): what FastAPI derives from the routes, plus what it cannot see.

FastAPI builds the document from the routes' signatures; a route that parses its own body (``POST /v1/vends``
reads :class:`~mita.api.models.VendIn` itself, for speed) leaves a ``$ref`` with nothing behind it. This module
puts those models where their references point.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from . import models as m


def install(app: FastAPI) -> None:
    """Wrap ``app.openapi`` so that the document holds the models the routes parse by hand."""
    default_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        # POST /v1/vends parses its own body: put its model where the $ref points
        spec = default_openapi()
        spec.setdefault("components", {}).setdefault("schemas", {})["VendIn"] = m.VendIn.model_json_schema(
            ref_template="#/components/schemas/{model}"
        )
        return spec

    app.openapi = openapi  # type: ignore[method-assign]
