"""The detection rules' one error: input that is not a window (a stable ``code``, a message naming the field)."""

from __future__ import annotations


class DetectError(ValueError):
    """Malformed input to a rule or a window: ``bad_interval``, ``bad_medium``, ``bad_rows``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"
