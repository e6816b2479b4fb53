"""Errors of the meter model's set-up (never of token entry: a rejected token is a result)."""

from __future__ import annotations

from mita.sts import StsError


class MeterError(StsError):
    """Bad meter set-up or a corrupt saved state; ``code`` is stable."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
