"""Who calls the vending service, with which role; and the clock it runs on."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from .errors import VendError
from .lifecycles import Role

ROLES = tuple(Role)


@dataclass(frozen=True)
class Caller:
    api_key_id: int | None  # None: the system itself (the CLI, the demo)
    name: str
    role: str
    vendor_id: int | None = None

    def require(self, *roles: str) -> None:
        if self.role not in roles:
            raise VendError("forbidden", f"this needs the role {' or '.join(roles)}; the key has {self.role}")


def local_now() -> dt.datetime:
    """Vending runs on the utility's wall clock, like its meters' TIDs (no time zone)."""
    return dt.datetime.now().replace(microsecond=0)
