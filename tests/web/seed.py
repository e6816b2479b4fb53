"""The utility the console's browser tests look at, set up the way an operator would, through the registry.

Two supply groups: ``123456`` ("Test town", the STS compliance suites' public test key) where the vending happens,
and ``600727`` ("Rollover town") whose supply group already rotated to KRN 2, so a key change campaign has meters to
move. Twenty meters in two areas (north and south) in the first group, six in the second; customers with names the
tests search for; a vendor; vends made now (the dashboard's "today"), one meter with more vends than a meter
remembers TIDs (so its first token is ``old``); open alarms (one for the acknowledge test, others that stay open).

The tests share one server for the session, so each test that changes something has a meter or an alarm of its
own here (:class:`Seeded` names them) and never depends on another test having run first.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field

from sqlalchemy import Engine, select

from mita import sts
from mita.headend import alarms
from mita.headend.alarms import Raised
from mita.vend import keyring, registry, sample
from mita.vend.callers import local_now
from mita.vend.lifecycles import AlarmSeverity
from mita.vend.schema import alarms as alarm_rows
from mita.vend.schema import meters
from mita.vend.service import VendingService

SGC = "123456"
VENDING_KEY_HEX = sample.TEST_VENDING_KEY  # public test key (STS 531 compliance suites)
ROLLOVER_SGC = "600727"
ROLLOVER_KEYS = ("0123456789abcdef", "fedcba9876543210")  # KRN 1, KRN 2 of the rollover group (test keys)
AREAS = ("north", "south")
#: how many vends the doctor's meter gets: more than any profile remembers TIDs (legacy-ea07: 50)
DOCTOR_VENDS = 55


def make_drn(prefix: str, i: int) -> str:
    """A valid 11-digit meter number (Luhn check digit) from a two-digit prefix and a serial."""
    return str(sample.meter_number(f"{prefix}{10000000 + i:08d}"))


@dataclass
class Seeded:
    """What the seed made, by the role each thing plays in the tests."""

    meters: list[str]  # the first group's meters, in creation order
    areas: dict[str, str]  # DRN -> area
    customers: dict[str, str]  # DRN -> customer name
    rollover_meters: list[str]
    vend_meter: str  # the vend, receipt and reversal test's meter
    engineering_meter: str  # the clear-tamper test's meter
    doctor_meter: str  # many vends: its first token is old, its last is the latest
    doctor_tokens: list[str]  # the doctor meter's credit tokens, oldest first
    search_meter: str  # the find-a-meter test's meter (its customer has a unique name)
    search_customer: str
    ack_alarm: int  # the alarm the acknowledge test acknowledges
    open_alarms: list[int]  # alarms no test touches
    vend_ids: list[str] = field(default_factory=list)  # every vend the seed made


CUSTOMER_NAMES = [
    "Thandi Nkosi", "Sipho Dlamini", "Lerato Mokoena", "Pieter van Wyk", "Ayanda Zulu", "Nomsa Khumalo",
    "Johan Botha", "Zanele Mthembu", "Kagiso Molefe", "Naledi Sithole", "Bongani Ndlovu", "Refilwe Mahlangu",
]  # fmt: skip


def seed(engine: Engine) -> Seeded:
    """Set the utility up on a migrated, empty database (the master key in the environment)."""
    system = registry.SYSTEM
    reg = registry.Registry(engine)
    reg.create_supply_group(system, sgc=SGC, name="Test town", vending_key=VENDING_KEY_HEX, base_date=2014)
    reg.create_tariff(
        system, name="domestic", currency="ZAR", spec=sample.DOMESTIC_TARIFF, effective_from=dt.datetime(2020, 1, 1)
    )
    drns, areas, names = [], {}, {}
    for i in range(20):
        drn = make_drn("47", i)
        area = AREAS[i % 2]
        customer = None
        if i < len(CUSTOMER_NAMES):
            customer = f"C-{i + 1:03d}"
            names[drn] = CUSTOMER_NAMES[i]
            reg.create_customer(
                system, account=customer, name=CUSTOMER_NAMES[i], phone=f"+2782555{i:04d}", fbe_eligible=i % 3 == 0
            )
        reg.create_meter(
            system, drn=drn, sgc=SGC, customer=customer, tariff="domestic", area=area,
            manufacturer=("Alpha", "Beta")[i % 2],
        )  # fmt: skip
        drns.append(drn)
        areas[drn] = area
    rollover = _rollover_group(engine)
    vendor = reg.create_vendor(system, "Corner shop")
    _, vendor_key = reg.create_api_key("console tests' till", "vendor", int(vendor["id"]))
    till = registry.authenticate(engine, vendor_key)
    svc = VendingService(engine)
    keys = (f"seed-{n}" for n in itertools.count())
    vend_ids = []
    for drn, amount in zip(drns[:8], (5000, 5000, 10000, 3500, 7500, 3000, 15000, 4000), strict=True):
        vend_ids.append(str(svc.vend(till, next(keys), {"meter": drn, "amount": amount}).body["id"]))
    doctor = drns[9]
    tokens = []
    for n in range(DOCTOR_VENDS):  # the first covers the month's fixed charge
        body = svc.vend(till, next(keys), {"meter": doctor, "amount": 5000 if n == 0 else 1000}).body
        vend_ids.append(str(body["id"]))
        tokens += [t["digits"] for t in body["tokens"] if t.get("kind", "credit") == "credit"]
    ack, *others = _alarms(engine, drns)
    return Seeded(
        meters=drns, areas=areas, customers=names, rollover_meters=rollover,
        vend_meter=drns[10], engineering_meter=drns[11], doctor_meter=doctor, doctor_tokens=tokens,
        search_meter=drns[4], search_customer=CUSTOMER_NAMES[4], ack_alarm=ack, open_alarms=others,
        vend_ids=vend_ids,
    )  # fmt: skip


def secrets_of(seeded: Seeded) -> dict[str, str]:
    """What no console page may show, by label: the vending keys and the meters' decoder keys (as hex)."""
    found = {"the vending key of 123456": VENDING_KEY_HEX}
    found |= {f"the KRN {n} vending key of {ROLLOVER_SGC}": k for n, k in enumerate(ROLLOVER_KEYS, 1)}
    for drn in seeded.meters:
        key = sts.dkga02(bytes.fromhex(VENDING_KEY_HEX), sts.MeterNumber.parse(drn), 2, SGC, 1, 1)
        found[f"the decoder key of {drn}"] = f"{key:016x}"
    return found


def _rollover_group(engine: Engine) -> list[str]:
    """The second group: six meters on KRN 1, the group rotated to KRN 2 (their key change is due)."""
    system = registry.SYSTEM
    reg = registry.Registry(engine)
    reg.create_supply_group(
        system, sgc=ROLLOVER_SGC, name="Rollover town", vending_key=ROLLOVER_KEYS[0], base_date=2014
    )
    drns = []
    for i in range(6):
        drn = make_drn("48", i)
        reg.create_meter(system, drn=drn, sgc=ROLLOVER_SGC, tariff="domestic", area=AREAS[i % 2], manufacturer="Alpha")
        drns.append(drn)
    now = local_now()
    keyring.add_key(engine, system, sgc=ROLLOVER_SGC, krn=2, dkga=2, key_hex=ROLLOVER_KEYS[1], at=now)
    keyring.activate_key(engine, system, sgc=ROLLOVER_SGC, krn=2, at=now)
    return drns


def _alarms(engine: Engine, drns: list[str]) -> list[int]:
    """Open alarms on three meters; their ids, in the order raised."""
    now = local_now()
    specs: list[tuple[str, str, AlarmSeverity, str]] = [
        (drns[12], "cover", AlarmSeverity.HIGH, "terminal cover opened"),
        (drns[13], "magnetic", AlarmSeverity.MEDIUM, "magnetic field detected"),
        (drns[14], "low_credit", AlarmSeverity.LOW, "credit runs out within a day"),
    ]
    with engine.begin() as conn:
        ids = {d: int(conn.execute(select(meters.c.id).where(meters.c.drn == d)).scalar_one()) for d, *_ in specs}
        raised = [
            Raised(ids[d], rule, sev, summary, {"seen": 1}, now - dt.timedelta(minutes=30 - n))
            for n, (d, rule, sev, summary) in enumerate(specs)
        ]
        alarms.raise_alarms(conn, raised, now)
    with engine.connect() as conn:
        return [int(i) for i in conn.execute(select(alarm_rows.c.id).order_by(alarm_rows.c.id)).scalars()]
