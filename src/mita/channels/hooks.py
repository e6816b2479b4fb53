"""The secret that authenticates providers' callbacks (``/hooks/<provider>/.../<secret>``).

Daraja's and Kannel's callbacks carry no signature and no key: the path's last segment is the proof that the
caller was given Mita's callback address. It is compared in constant time, never logged (the access log shows
``/hooks/...`` routes without it), and a wrong one is answered 404, as a path that does not exist.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from mita.settings import ChannelSettings
from mita.vend.errors import VendError

MIN_LENGTH = 16


class HookSecret:
    def __init__(self, secret: str | None) -> None:
        if secret is not None and len(secret) < MIN_LENGTH:
            raise VendError("channels_misconfigured", f"the callback secret must have at least {MIN_LENGTH} characters")
        self._secret = secret

    @classmethod
    def from_settings(cls, settings: ChannelSettings) -> HookSecret:
        """``MITA_HOOK_SECRET`` or the file ``MITA_HOOK_SECRET_FILE``; neither: callbacks are off (404)."""
        text = settings.hook_secret.get_secret_value() if settings.hook_secret is not None else None
        if settings.hook_secret_file:
            if text:
                raise VendError("channels_misconfigured", "set MITA_HOOK_SECRET or MITA_HOOK_SECRET_FILE, not both")
            try:
                text = Path(settings.hook_secret_file).expanduser().read_text(encoding="utf-8").strip()
            except (OSError, UnicodeError):
                raise VendError("channels_misconfigured", "MITA_HOOK_SECRET_FILE cannot be read") from None
        return cls(text or None)

    @property
    def enabled(self) -> bool:
        return self._secret is not None

    def check(self, given: str) -> None:
        """Raise ``not_found`` unless ``given`` is the secret (or no secret is set: callbacks are off)."""
        if self._secret is None or not hmac.compare_digest(given.encode(), self._secret.encode()):
            raise VendError("not_found", "no such callback")

    def path(self, base: str, route: str) -> str:
        """The full callback URL handed to a provider: ``base`` + ``route`` + the secret."""
        if self._secret is None:
            raise VendError("channels_misconfigured", "callbacks need MITA_HOOK_SECRET (or ..._FILE)")
        return f"{base.rstrip('/')}/hooks/{route.strip('/')}/{self._secret}"
