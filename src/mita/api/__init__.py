"""mita.api: the vending service over HTTP (FastAPI). ``create_app(url)`` builds it; see :mod:`mita.api.app`."""

from .app import app_from_env, create_app

__all__ = ["app_from_env", "create_app"]
