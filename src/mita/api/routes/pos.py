"""(in progress)"""

from __future__ import annotations

from ..deps import v1_router

router = v1_router("channels")
