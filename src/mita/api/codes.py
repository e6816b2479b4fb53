"""Every error code Mita answers with, its HTTP status and its title: the one table the HTTP shell reads.

The services raise typed errors with a stable ``code`` and know nothing of HTTP; this table says what each
code means on the wire. A code missing here answers 422 (a refused request) — and a test fails, since every
code the services raise must be listed (tests/test_error_codes.py).
"""

from __future__ import annotations

from typing import NamedTuple


class Answer(NamedTuple):
    status: int
    title: str


CODES: dict[str, Answer] = {
    # the request itself
    "invalid_request": Answer(422, "The request is not valid"),
    "invalid_fault": Answer(422, "A simulated fault not valid"),
    "invalid_json": Answer(400, "The request body is not valid JSON"),
    "bad_request": Answer(400, "Bad request"),
    "payload_too_large": Answer(413, "Request body too large"),
    "unsupported_media_type": Answer(415, "The request body is not of the media type this route takes"),
    "method_not_allowed": Answer(405, "Method not allowed"),
    "not_acceptable": Answer(406, "Not acceptable"),
    "http_error": Answer(400, "HTTP error"),
    "invalid_idempotency_key": Answer(422, "Idempotency-Key header missing or not valid"),
    "idempotency_conflict": Answer(422, "Idempotency-Key reused with a different request"),
    "invalid_amount": Answer(422, "Amount not valid"),
    "amount_too_small": Answer(422, "Amount too small for this purchase"),
    "invalid_tariff": Answer(422, "Tariff not valid"),
    "invalid_currency": Answer(422, "Currency not valid"),
    "invalid_debt_rate": Answer(422, "Debt rate not valid"),
    "invalid_vat_rate": Answer(422, "VAT rate not valid (a fraction from 0 to 1)"),
    "invalid_cursor": Answer(422, "Page cursor not valid"),
    "invalid_period": Answer(422, "Time period not valid"),
    "invalid_csv": Answer(400, "The request body is not readable CSV"),
    "import_refused": Answer(422, "Rows of the import are not valid: nothing was imported"),
    "invalid_role": Answer(422, "Role not valid"),
    "invalid_status": Answer(422, "Status not valid"),
    "invalid_severity": Answer(422, "Severity not valid"),
    "invalid_utility": Answer(422, "Utility not valid"),
    "invalid_kind": Answer(422, "Kind not valid"),
    "invalid_key_change": Answer(422, "The meter cannot follow this key change"),
    "invalid_dkga": Answer(422, "Decoder key generation algorithm not valid here"),
    "invalid_key_file": Answer(422, "Key file not valid"),
    "invalid_decoder_key": Answer(422, "Decoder key not valid for its algorithm"),
    "kcv_mismatch": Answer(422, "The key does not match its key check value"),
    "unknown_keystore": Answer(422, "Unknown keystore"),
    "keystore_unsupported": Answer(422, "The keystore cannot hold this key"),
    # the token engine's (mita.sts)
    "format_error": Answer(422, "Input not shaped as expected"),
    "range_error": Answer(422, "Value out of range"),
    "check_digit_error": Answer(422, "Meter number check digit is wrong"),
    "crc_error": Answer(422, "Token CRC does not match"),
    "unsupported": Answer(422, "Not supported"),
    "tid_out_of_range": Answer(422, "Issue time outside the base date's range"),
    "sts_error": Answer(422, "Token engine error"),
    # who may do what
    "unauthorized": Answer(401, "API key missing or not valid"),
    "forbidden": Answer(403, "Not allowed for this API key's role"),
    "login_failed": Answer(401, "Name or password wrong, or the account locked for a while"),
    "invalid_password": Answer(422, "Password not acceptable"),
    # what is there
    "not_found": Answer(404, "Not found"),
    "no_tariff": Answer(422, "The meter has no tariff in force"),
    "no_vending_key": Answer(422, "No usable vending key"),
    "key_not_found": Answer(500, "The keystore lost a vending key"),
    "key_ambiguous": Answer(500, "The keystore holds several keys under one name"),
    "key_mismatch": Answer(500, "The keystore's key does not match its key check value"),
    "key_unprotected": Answer(500, "The keystore's key is extractable or not sensitive"),
    "wrong_keystore": Answer(500, "The key is kept by another keystore"),
    # the state of things
    "conflict": Answer(409, "Conflict with the current state"),
    "key_exists": Answer(409, "The keystore already holds this key"),
    "in_progress": Answer(409, "The same request is still being processed"),
    "key_change_required": Answer(409, "The meter needs a key change first"),
    "key_change_superseded": Answer(409, "Another key change is pending"),
    "no_pending_key": Answer(409, "No key change pending"),
    "key_expired": Answer(409, "The vending key is past its issue date"),
    "key_not_active": Answer(409, "The vending key is not active"),
    "meter_blocked": Answer(409, "The meter is blocked or retired"),
    "reversal_window_closed": Answer(409, "Too late to reverse"),
    "already_reversed": Answer(409, "Already reversed"),
    "not_reversible": Answer(409, "Not reversible"),
    "reversed": Answer(409, "The vend was reversed"),
    "invalid_transition": Answer(409, "Not allowed from the current state"),
    "not_connected": Answer(409, "The meter has no communication endpoint (keypad only)"),
    "alarm_closed": Answer(409, "The alarm is closed"),
    "already_acknowledged": Answer(409, "The alarm is acknowledged already"),
    # retail tills (PUSI: a 400 is final for the till)
    "duplicate_record": Answer(400, "The request id was used before: retry it, or use a new id"),
    "reversal_refused": Answer(400, "The purchase cannot be reversed: reprint its tokens"),
    "credit_limit": Answer(402, "Vendor credit limit reached"),
    "key_credit_limit": Answer(402, "Vending key credit limit reached"),
    # the server and its database
    "retry": Answer(503, "Outcome unknown: retry with the same Idempotency-Key"),
    "database_unavailable": Answer(503, "Database not available"),
    "unsafe_database": Answer(503, "Database settings could lose a confirmed vend"),
    "schema_outdated": Answer(503, "Database schema not migrated"),
    "disk_full": Answer(503, "The database's disk is full: retry once the operator has made room"),
    "clock_skew": Answer(503, "The server's clock is not the database's: no sale, no console until it is right"),
    "database_missing": Answer(503, "No database there"),
    "schema_drift": Answer(500, "Database schema differs from the models"),
    "database_refused": Answer(500, "Database refused the operation"),
    "database_error": Answer(500, "Database error"),
    "hsm_unavailable": Answer(503, "HSM not available"),
    "hsm_not_configured": Answer(503, "No HSM configured"),
    "hsm_error": Answer(500, "HSM error"),
    "key_unreadable": Answer(500, "A stored vending key cannot be opened"),
    "bad_master_key": Answer(500, "The master key is not usable"),
    "outbox_misconfigured": Answer(500, "Outbox sender misconfigured"),
    "channels_misconfigured": Answer(500, "Payment or message channel misconfigured"),
    "mpesa_bad_message": Answer(400, "Not a Daraja message"),
    "mpesa_busy": Answer(503, "M-Pesa is busy: try again later"),
    "mpesa_refused": Answer(502, "M-Pesa refused the request"),
    "mpesa_unavailable": Answer(502, "M-Pesa did not answer"),
    "internal_error": Answer(500, "Internal error"),
}

#: Codes a keystore raises that are about the server, not the request: their detail is not shown to clients.
SERVER_SIDE = frozenset(code for code, answer in CODES.items() if answer.status >= 500)


def answer(code: str) -> Answer:
    """The status and title of ``code``; an unlisted code is a refused request (422)."""
    return CODES.get(code) or Answer(422, code.replace("_", " ").capitalize())


#: The code of an HTTP error raised by the framework itself (a 404 route, a 405 method).
BY_STATUS = {a.status: code for code, a in reversed(CODES.items()) if code in {
    "bad_request", "unauthorized", "forbidden", "not_found", "method_not_allowed", "not_acceptable",
    "payload_too_large", "unsupported_media_type",
}}  # fmt: skip
