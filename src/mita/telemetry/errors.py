"""The one error a malformed topic or payload raises, with a stable code (the ingest counts and logs them)."""

from __future__ import annotations


class TelemetryError(ValueError):
    """A topic or payload that is not the format's: ``code`` is stable, the message names the field."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
