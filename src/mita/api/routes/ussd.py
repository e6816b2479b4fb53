"""(in progress)"""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(prefix="/hooks", tags=["channels"], include_in_schema=False)
