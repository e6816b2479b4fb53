"""How long stored text may be, stated once.

The schema's columns, the registry's checks and the API's request models all take their sizes from here,
so a value the API accepts always fits its column (a name one character too long for its column was a
500 on PostgreSQL, which enforces ``VARCHAR(n)``; SQLite does not).
"""

from __future__ import annotations

NAME = 100  # tariffs, vendors, supply groups, campaigns, API keys (and so the audit's actor)
PERSON = 200  # a customer's name
ACCOUNT = 40  # a customer's account number
PHONE = 30
LABEL = 40  # a meter's manufacturer and area
HOST = 255  # a meter's network address: a DNS name or an IP address
DRN = 13  # a stored meter number (IIN-less, with its check digit)
DRN_INPUT = 32  # a meter number as typed (the parser strips spaces and dashes)
VEND_ID = 36  # a UUID
IDEMPOTENCY_KEY = 200
REASON = 500  # a reversal's reason (kept in the audit entry's detail)

#: The audit log names any entity by its identifier: the widest of them must fit.
ENTITY_ID = max(NAME, ACCOUNT, DRN, VEND_ID)
