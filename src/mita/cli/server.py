"""``mita serve``, ``mita db upgrade|check``, ``mita admin create-key|list-keys|revoke-key`` and ``mita demo``.

Thin shells over :mod:`mita.vend` and :mod:`mita.api`: they parse options, call a service, print. The database URL
comes from ``--database-url`` or ``MITA_DATABASE_URL``; the default is a SQLite file in the current folder. Only
``mita db upgrade``, ``mita serve`` (which migrates first) and ``mita demo`` (its own file) make a database; the
other commands refuse one that is missing or not migrated, naming the URL they tried.
"""

from __future__ import annotations

import argparse
from typing import Any

from . import exits
from .command import command, emit, group, note, report, say
from .options import add_choice, add_database_url, add_json

ROLES = ("admin", "operator", "vendor")
LOG_FORMATS = ("text", "json")


# ---------------------------------------------------------------------- options


def add_db(parser: argparse.ArgumentParser) -> None:
    commands = group(parser)
    p = command(commands, "upgrade", db_upgrade, "Create or migrate the schema to the newest version.")
    add_database_url(p)
    add_json(p)
    p = command(commands, "check", db_check, "Compare the migrated database with the models; exit 4 and list every "
                "difference if they disagree.")  # fmt: skip
    add_database_url(p)
    add_json(p)


def add_admin(parser: argparse.ArgumentParser) -> None:
    commands = group(parser)
    p = command(commands, "create-key", create_key, "Make an API key. Its value is printed once and stored only "
                "hashed.")  # fmt: skip
    add_choice(p, "--role", values=ROLES, required=True, help="What the key may do.")
    p.add_argument("--name", default="", help="Who or what uses the key.")
    p.add_argument("--vendor", help="Vendor (channel) name; made if new. Needed for role vendor.")
    p.add_argument("--credit-limit", type=int, help="New vendor's credit limit, minor units.")
    add_database_url(p)
    add_json(p, always=True)
    p = command(commands, "list-keys", list_keys, "Every API key, revoked ones included, in id order: never a key, "
                "only its last four characters.")  # fmt: skip
    add_database_url(p)
    add_json(p)
    p = command(commands, "revoke-key", revoke_key, "Revoke an API key, audited: it stops working at once here and "
                "within 5 seconds on every server process. Revoking it again changes nothing.")  # fmt: skip
    p.add_argument("key_id", type=_key_id, metavar="ID", help="The key's id (mita admin list-keys shows them).")
    add_database_url(p)
    add_json(p)


def _key_id(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a key id: {text!r} (a whole number from 1)")
    return value


def _listen(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
    p.add_argument("--port", type=int, default=8000, help="Port (default 8000).")


def add_serve(parser: argparse.ArgumentParser) -> None:
    add_database_url(parser)
    _listen(parser)
    parser.add_argument("--workers", type=int, default=1, help="Worker processes (default 1).")
    add_choice(parser, "--log-format", values=LOG_FORMATS, default="text",
               help="Start-up line and access log as text or JSON lines (default text).")  # fmt: skip
    parser.set_defaults(handler=serve)


def add_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url", metavar="URL", help=f"Default {DEMO_URL}: never MITA_DATABASE_URL (the demo's keys are "
        "public test keys; they stay out of a real database)."
    )  # fmt: skip
    _listen(parser)
    parser.add_argument("--no-serve", action="store_true", help="Set up and print, but do not start the server.")
    parser.add_argument(
        "--no-story", action="store_true", help="Serve without first showing a purchase by M-Pesa, SMS and meter."
    )
    parser.add_argument(
        "--show-and-exit", action="store_true", help="Show the purchase, then stop (exit 1 if it did not end well)."
    )
    parser.set_defaults(handler=demo)


# ---------------------------------------------------------------------- the database


def db_upgrade(args: argparse.Namespace) -> None:
    from mita.vend import database

    from . import dbshell

    url = dbshell.url(args.database_url)
    with dbshell.refusals(url):
        database.upgrade(url)
    if args.json:
        emit({"database": dbshell.shown(url), "revision": database.schema_head()})
    else:
        say(f"schema up to date on {dbshell.shown(url)}")


def db_check(args: argparse.Namespace) -> int:
    from mita.vend import database

    from . import dbshell

    url = dbshell.url(args.database_url)
    with dbshell.refusals(url):
        engine = database.make_engine(url)
    try:
        with dbshell.refusals(url):
            database.check_existing(engine)
            drift = database.schema_drift(engine)
    finally:
        engine.dispose()
    shown = dbshell.shown(url)
    if args.json:
        emit({"database": shown, "matches": not drift, "differences": drift})
    elif not drift:
        say(f"schema matches the models on {shown}")
    if not drift:
        return exits.OK
    for line in drift:
        note(f"  {line}")
    report("schema_drift", f"{len(drift)} differences between the models and {shown}", json_mode=False)
    return exits.CHECK_FAILED


# ---------------------------------------------------------------------- administration


def create_key(args: argparse.Namespace) -> None:
    from mita.vend import registry
    from mita.vend.errors import VendError
    from mita.vend.schema import vendors

    from . import dbshell

    with dbshell.refusals():
        engine = dbshell.runtime(args.database_url).engine
        vendor_id = None
        if args.vendor:
            try:
                vendor_id = int(registry.get_by(engine, vendors, vendors.c.name, args.vendor, "vendor")["id"])
            except VendError:
                made = registry.Registry(engine).create_vendor(registry.SYSTEM, args.vendor, args.credit_limit)
                vendor_id = int(made["id"])
        key_id, key = registry.Registry(engine).create_api_key(args.name or f"{args.role} key", args.role, vendor_id)
    emit({"id": key_id, "role": args.role, "vendor_id": vendor_id, "api_key": key}, indent=None)


KEY_COLUMNS = ("id", "role", "vendor_id", "name", "last4", "created_at", "revoked_at")


def list_keys(args: argparse.Namespace) -> None:
    from mita.vend import apikeys, registry

    from . import dbshell
    from .listing import every_page, show_table

    engine = dbshell.runtime(args.database_url).engine
    with dbshell.refusals():
        out = every_page(lambda after: apikeys.list_api_keys(engine, registry.SYSTEM, 500, after))
    if args.json:
        emit(out)
    elif not out["items"]:
        say("no API keys: make one with mita admin create-key")
    else:
        rows = [[k[c][:19] if c.endswith("_at") and k[c] else k[c] for c in KEY_COLUMNS] for k in out["items"]]
        show_table(KEY_COLUMNS, rows, right=("id", "vendor_id"))


def revoke_key(args: argparse.Namespace) -> None:
    from mita.vend import registry

    from . import dbshell

    runtime = dbshell.runtime(args.database_url)
    with dbshell.refusals():
        out = runtime.services.registry.revoke_api_key(registry.SYSTEM, args.key_id)
    if args.json:
        emit(out)
    elif out["already_revoked"]:
        say(f"API key {out['id']} ({out['name']}, {out['role']}) was already revoked, at {out['revoked_at']}")
    else:
        say(f"revoked API key {out['id']} ({out['name']}, {out['role']}) at {out['revoked_at']}")


# ---------------------------------------------------------------------- serving


def serve(args: argparse.Namespace) -> None:
    from . import dbshell

    url = dbshell.url(args.database_url)
    _serve(url, args.host, args.port, args.workers, args.log_format)


def _serve(url: str, host: str, port: int, workers: int, log_format: str) -> None:
    """Migrate (or, if the database is not reachable yet, keep trying in the background), then serve."""
    import threading

    from sqlalchemy.exc import DBAPIError

    from mita.api import launch
    from mita.vend import database
    from mita.vend.errors import database_failure, is_transient

    from . import dbshell

    try:
        database.upgrade(url)
        database.check_durability(database.make_engine(url))
    except DBAPIError as exc:
        if not is_transient(exc):
            raise database_failure(exc) from None
        note(f"database {dbshell.shown(url)} not reachable: serving 503 (see /readyz) until it is")
        threading.Thread(target=_migrate_when_reachable, args=(url,), name="mita-migrate", daemon=True).start()
    launch.run(host=host, port=port, workers=workers, log_format=log_format, database_url=url)


def _migrate_when_reachable(url: str, first_wait: float = 1.0, longest_wait: float = 30.0) -> None:
    """Migrate as soon as the database answers; the workers serve once the schema is current."""
    import time

    from sqlalchemy.exc import DBAPIError

    from mita.vend import database
    from mita.vend.errors import database_failure, is_transient

    wait = first_wait
    while True:
        time.sleep(wait)
        try:
            database.upgrade(url)
        except DBAPIError as exc:
            if is_transient(exc):
                wait = min(wait * 2, longest_wait)
                continue
            report(database_failure(exc).code, "the schema could not be migrated", json_mode=False)
            return
        note("database reachable: schema up to date")
        return


# ---------------------------------------------------------------------- the demo

DEMO_URL = "sqlite:///mita-demo.db"

DEMO_METERS = (  # (DRN body without its check digit, virtual meter profile, utility, customer)
    ("4750015023", "legacy-ea07", "electricity", "DEMO-001"),
    ("4750015024", "edition2-ea11", "electricity", "DEMO-002"),
    ("4750015025", "water-valve", "water", "DEMO-003"),
)


def _demo_operator(engine: Any) -> str:
    """The demo's console operator ``demo`` (admin), with a new random password each run (printed once)."""
    import secrets

    from mita.vend.errors import VendError
    from mita.vend.operators import Operators
    from mita.vend.registry import SYSTEM

    password = secrets.token_urlsafe(9)
    operators = Operators(engine)
    try:
        operators.create(SYSTEM, "demo", "admin", password)
    except VendError:
        operators.set_password(SYSTEM, "demo", password)
    return password


def demo(args: argparse.Namespace) -> None:
    """Set up a demo utility on SQLite (supply group, tariffs, customers, meters, keys) and serve it."""
    import datetime as dt
    from pathlib import Path

    from mita import sts
    from mita.meter import Meter, storage
    from mita.vend import database, registry, sample
    from mita.vend.errors import VendError
    from mita.vend.schema import vendors

    from . import dbshell

    url = args.database_url or DEMO_URL  # never MITA_DATABASE_URL: the demo's public test key stays out of a real one
    dbshell.url(url)  # a password on the command line is refused here too
    with dbshell.refusals(url):
        database.upgrade(url)
        engine = database.make_engine(url)
        admin = registry.SYSTEM
        try:
            registry.get_supply_group(engine, sample.SGC)
        except VendError:
            sample.create_group_and_tariff(engine, "Demo town")
            start = dt.datetime(2020, 1, 1)
            flat = {"blocks": [{"up_to": None, "price": "28.50"}], "vat_rate": "0.15"}
            registry.Registry(engine).create_tariff(admin, name="water", currency="ZAR", spec=flat,
                                                    effective_from=start)  # fmt: skip
            for body, profile, utility, account in DEMO_METERS:
                registry.Registry(engine).create_customer(
                    admin, account=account, name=f"Demo customer {account[-1]}", fbe_eligible=account == "DEMO-001",
                    debt=5000 if account == "DEMO-002" else 0, debt_rate="0.2",
                )  # fmt: skip
                registry.Registry(engine).create_meter(
                    admin, drn=sample.meter_number(body), sgc=sample.SGC, customer=account, manufacturer=profile,
                    utility=utility, tariff="water" if utility == "water" else "domestic",
                )  # fmt: skip
        keys = {
            role: registry.Registry(engine).create_api_key(f"demo {role}", role)[1] for role in ("admin", "operator")
        }
        try:
            vendor_id = int(registry.Registry(engine).create_vendor(admin, "Demo shop", 10_000_000)["id"])
        except VendError:
            vendor_id = int(registry.get_by(engine, vendors, vendors.c.name, "Demo shop", "vendor")["id"])
        keys["vendor"] = registry.Registry(engine).create_api_key("demo shop till", "vendor", vendor_id)[1]
        console_password = _demo_operator(engine)

    folder = Path("demo-meters")
    folder.mkdir(exist_ok=True)
    vk = bytes.fromhex(sample.TEST_VENDING_KEY)
    for body, profile, _, _ in DEMO_METERS:
        drn = sample.meter_number(body)
        path = folder / f"{drn}.json"
        if not path.exists():
            decoder_key = sts.dkga02(vk, sts.MeterNumber.parse(drn), 2, sample.SGC, 1, 1)
            meter = Meter.create(
                drn=drn, ea=7, decoder_key=decoder_key, sgc=sample.SGC, ti=1, krn=1, kt=2, profile=profile
            )
            storage.save(meter, path)

    base = f"http://{args.host}:{args.port}/v1"
    first = sample.meter_number(DEMO_METERS[0][0])
    say(f"Mita demo utility on {url} (its own database: MITA_DATABASE_URL is not used)")
    say("API keys (printed once, stored hashed):")
    for role, key in keys.items():
        say(f"  {role:<9} {key}")
    say(f"Virtual meters in {folder}/ (one per profile): {', '.join(p.name for p in sorted(folder.glob('*.json')))}")
    say("\nTry:")
    say(
        f"  curl -s {base}/quotes -H 'Authorization: Bearer {keys['vendor']}' "
        f'-H \'Content-Type: application/json\' -d \'{{"meter":"{first}","amount":10000}}\''
    )
    say(
        f"  curl -s {base}/vends -H 'Authorization: Bearer {keys['vendor']}' -H 'Idempotency-Key: try-1' "
        f'-H \'Content-Type: application/json\' -d \'{{"meter":"{first}","amount":10000}}\''
    )
    say(f"  .venv/bin/mita meter enter {folder}/{first}.json <a token from the vend>")
    say(f"  open http://{args.host}:{args.port}/console and sign in as demo / {console_password} (the console)")
    say(f"  open http://{args.host}:{args.port}/docs for the API, Ctrl-C to stop")
    if args.no_serve:
        return
    import sys

    sys.stdout.flush()
    if args.no_story:
        _serve(url, args.host, args.port, 1, "text")
        return
    import os
    import signal

    from sqlalchemy import update

    from mita.vend.schema import customers

    from . import demo_story

    with engine.begin() as conn:  # the story's customer gets the token by SMS
        conn.execute(update(customers).where(customers.c.account == "DEMO-001").values(phone=demo_story.PHONE))
    story = demo_story.prepare(url, args.host, args.port, folder / f"{first}.json", first)
    on_end = (lambda: os.kill(os.getpid(), signal.SIGINT)) if args.show_and_exit else None
    demo_story.tell(story, on_end)
    try:
        _serve(url, args.host, args.port, 1, "text")
    finally:
        story.stop()
    if args.show_and_exit and not story.ok:
        raise SystemExit(1)
