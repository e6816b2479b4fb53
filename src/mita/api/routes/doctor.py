"""The token doctor: why a meter would accept or reject a token, in plain words (admin, operator).

``POST /v1/tokens/doctor`` takes the token as typed and either a meter of the database (its history says which
tokens it took, its key changes which keys it held, and the vend that issued the token is found) or a decoder key
with its algorithm (a fresh meter holding it; the key is used for this answer and kept nowhere). The answer is
a diagnosis, 200 whatever the meter would do: the refusals are of the request (a meter that does not exist, a
decoder key of the wrong length). A POST, not a GET: a decoder key must never be in a URL (access logs keep URLs).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from .. import models as m
from ..deps import Svc, Who, v1_router
from ..problems import responses

router = v1_router("token doctor")

VERDICTS = "accepted, used, old, key_expired, wrong_key, crc_error, format_error or refused"


class DoctorIn(m.Body):
    model_config = m._example(token="5127 2356 9771 3006 1374", meter="47500150231")

    token: Annotated[str, Field(min_length=1, max_length=64, pattern=m.PRINTABLE)] = Field(
        description="the token as typed: 20 digits, spaces and dashes allowed (a digit wrong, missing or extra is "
        "what the doctor looks for)"
    )
    meter: m.Drn | None = Field(default=None, description="a meter of the database (DRN); or give decoder_key and ea")
    decoder_key: SecretStr | None = Field(
        default=None,
        max_length=64,
        description="hex: 16 digits (EA07) or 32 (EA11), for a meter not in the database; used for this answer only, "
        "never stored nor returned",
    )
    ea: m.Ea | None = Field(default=None, description="with decoder_key: its encryption algorithm, 7 or 11")
    base_date: m.BaseDate | None = Field(
        default=None, description="with decoder_key: the base date TIDs count from (default: the one in use now)"
    )


class TokenFactsOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    class_: int = Field(alias="class", description="STS token class (0 credit, 1 meter test, 2 management)")
    subclass: int = Field(description="STS token subclass")
    kind: str = Field(description="what the token is, for people: electricity credit, clear tamper token...")
    tid: int | None = Field(description="token ID: minutes from the base date; null for tokens without one")
    base_date: int | None = Field(description="the base date the TID counts from")
    issued_at: m.Timestamp | None = Field(description="RFC 3339: the TID as the meter's wall-clock time")
    units: int | None = Field(description="credit tokens: base units (see unit); null for others")
    unit: str | None = Field(description="what one unit is: 0.1 kWh, 0.1 m³, 0.1 minute or 0.00001 currency")
    values: dict[str, int] = Field(
        description="the token's other fields (a power limit, a key change's KRN, KT, RO...); never key material"
    )


class IssuedOut(BaseModel):
    vend: str | None = Field(description="the UUID of the vend that issued the token; null: a campaign's")
    at: m.Timestamp = Field(description="RFC 3339: when it was issued")
    kind: str = Field(description="the token's kind: credit, fbe, engineering or key_change")
    vend_kind: str | None = Field(description="the vend's kind: purchase, engineering or key_change")
    amount: int | None = Field(description="the vend's amount, minor units of the tariff's currency (cents)")
    units: int = Field(description="base units the token credits: 0.1 kWh or 0.1 m³; 0 for others")
    vendor: str | None = Field(description="the vendor's name; null: staff or the system")
    reversed: bool = Field(description="the vend was reversed: its tokens must not be entered")
    campaign: int | None = Field(description="the key change campaign that issued the token, if one did")


class FixOut(BaseModel):
    how: str = Field(description="digit (one wrong), swap (two adjacent swapped), missing or extra")
    position: int = Field(description="the digit to fix, counted from 1 (a swap: the first of the two)")
    should: str = Field(description="what the digit (or the swapped pair) should be; empty for an extra digit")
    suggested: str = Field(description="the 20 digits with the fix")
    issued: bool = Field(description="the fixed token was issued to this meter")


class DoctorOut(BaseModel):
    verdict: str = Field(description=f"the doctor's verdict: {VERDICTS}")
    words: str = Field(description="why, in plain English, with what to do")
    typed: str = Field(description="the digits as typed, spaces and dashes removed")
    meter_result: str | None = Field(
        description="what the meter itself answers to the typed digits (as mita meter enter: accept, used, "
        "crc_error...)"
    )
    display: str | None = Field(description="what the meter would show")
    position: int | None = Field(description="the digit to fix, counted from 1, when one fix explains the token")
    suggested: str | None = Field(description="the 20 digits with that fix")
    fix: str | None = Field(description="how: digit, swap, missing or extra")
    candidates: list[FixOut] = Field(description="more than one fix decodes: each of them (check the receipt)")
    corrected_verdict: str | None = Field(description="what the meter would do with the suggested digits")
    key: str | None = Field(description="the key the (fixed) token decodes under: current, previous or pending")
    key_label: str | None = Field(description="that key, for people (SGC, KRN, base date; never the key)")
    token: TokenFactsOut | None = Field(description="what the (fixed) token says, when it decodes")
    issued: IssuedOut | None = Field(description="the vend that issued the (fixed) token, if the meter was issued it")
    if_not_entered: str | None = Field(
        description="a used token: what the meter would answer had it not been entered (accept, old)"
    )
    meter: str | None = Field(description="the meter (DRN); null when asked by decoder key")
    meter_key: m.KeyConfigOut | None = Field(description="the meter's current key configuration (never the key)")


@router.post("/tokens/doctor", response_model=DoctorOut, responses=responses(404))
def doctor(body: DoctorIn, caller: Who, svc: Svc) -> Any:
    """Why a meter would accept or reject a token (admin, operator): decoded, the vend that issued it found, the
    mistyped digit named. Give ``meter``, or ``decoder_key`` with ``ea``. Writes nothing."""
    key = None if body.decoder_key is None else body.decoder_key.get_secret_value()
    return svc.doctor(caller, body.token, drn=body.meter, decoder_key=key, ea=body.ea, base_date=body.base_date)
