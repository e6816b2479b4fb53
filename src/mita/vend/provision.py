"""A meter as its maker programs it: a virtual meter (:mod:`mita.meter`) holding the decoder key the vending
system derives for one of its meters.

For simulated fleets (``mita sim fleet --database``), demonstrations and tests: a real meter gets its decoder key
in the factory or by a key change, never from a file. The key leaves this module only inside the meter model,
which its storage seals under the master key.
"""

from __future__ import annotations

from sqlalchemy import Engine, select

from mita import sts
from mita.meter import Meter
from mita.meter.profiles import PROFILES

from .desk import Desk
from .errors import VendError
from .keyring import KeyRing
from .schema import meters, supply_groups

#: The profile a meter gets by default, by its algorithm and utility.
DEFAULT_PROFILES = {(7, "electricity"): "legacy-ea07", (11, "electricity"): "edition2-ea11"}


def default_profile(ea: int, utility: str) -> str:
    if utility == "water":
        return "water-valve"
    return DEFAULT_PROFILES.get((ea, utility), "edition2-ea11")


def virtual_meter(engine: Engine, drn: str, profile: str | None = None, keyring: KeyRing | None = None) -> Meter:
    """A new virtual meter for the database's meter ``drn``, with its current (confirmed) key configuration."""
    number = sts.MeterNumber.parse(drn).drn
    with engine.connect() as conn:
        meter = conn.execute(select(meters).where(meters.c.drn == number)).first()
        if meter is None:
            raise VendError("not_found", f"no meter {number}")
        group = conn.execute(select(supply_groups).where(supply_groups.c.id == meter.supply_group_id)).one()
        cfg = Desk.current_config(meter, group)
        key = (keyring or KeyRing()).decoder_key(conn, cfg, meter.drn, meter.iin)
    chosen = profile or default_profile(cfg.ea, meter.utility)
    if chosen not in PROFILES:
        raise VendError("invalid_request", f"profile must be one of {', '.join(PROFILES)}")
    return Meter.create(
        drn=meter.drn, iin=meter.iin, ea=cfg.ea, decoder_key=key, sgc=cfg.sgc, ti=cfg.ti, krn=cfg.krn, kt=cfg.kt,
        ken=cfg.ken, profile=chosen,
    )  # fmt: skip
