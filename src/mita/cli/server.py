"""``mita serve``, ``mita db upgrade``, ``mita admin create-key`` and ``mita demo``.

Thin shells over :mod:`mita.vend` and :mod:`mita.api`: they parse options,
call a service, print. The database URL comes from ``--database-url`` or
``MITA_DATABASE_URL``; the default is a SQLite file in the current folder.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy.exc import DBAPIError

from mita import sts
from mita.vend import database, registry, sample
from mita.vend.errors import VendError, database_failure, is_transient
from mita.vend.schema import vendors

from .dbshell import UrlOpt, _fail, _url, refusals

console = Console(soft_wrap=True)
db_app = typer.Typer(no_args_is_help=True, help="Database schema.")
admin_app = typer.Typer(no_args_is_help=True, help="Administration.")


@db_app.command("upgrade")
def db_upgrade(database_url: UrlOpt = None) -> None:
    """Create or migrate the schema to the newest version."""
    url = _url(database_url)
    database.upgrade(url)
    console.print(f"schema up to date on {database.make_engine(url).url.render_as_string(hide_password=True)}")


@db_app.command("check")
def db_check(database_url: UrlOpt = None) -> None:
    """Compare the migrated database with the models; exit 1 and list every difference if they disagree."""
    url = _url(database_url)
    engine = database.make_engine(url)
    try:
        with refusals():
            database.check_ready(engine)
            drift = database.schema_drift(engine)
    finally:
        engine.dispose()
    shown = engine.url.render_as_string(hide_password=True)
    if drift:
        for line in drift:
            Console(stderr=True, soft_wrap=True).print(f"  {escape(line)}", highlight=False)
        _fail(VendError("schema_drift", f"{len(drift)} differences between the models and {shown}"))
    console.print(f"schema matches the models on {shown}")


@admin_app.command("create-key")
def create_key(
    role: Annotated[str, typer.Option(help="admin, operator or vendor.")],
    name: Annotated[str, typer.Option(help="Who or what uses the key.")] = "",
    vendor: Annotated[
        str | None, typer.Option(help="Vendor (channel) name; made if new. Needed for role vendor.")
    ] = None,
    credit_limit: Annotated[int | None, typer.Option(help="New vendor's credit limit, minor units.")] = None,
    database_url: UrlOpt = None,
) -> None:
    """Make an API key. Its value is printed once and stored only hashed."""
    url = _url(database_url)
    database.upgrade(url)  # a fresh database gets its schema first
    engine = database.make_engine(url)
    try:
        vendor_id = None
        if vendor:
            try:
                vendor_id = int(registry.get_by(engine, vendors, vendors.c.name, vendor, "vendor")["id"])
            except VendError:
                vendor_id = int(registry.Registry(engine).create_vendor(registry.SYSTEM, vendor, credit_limit)["id"])
        key_id, key = registry.Registry(engine).create_api_key(name or f"{role} key", role, vendor_id)
    except sts.StsError as exc:
        _fail(exc)
    typer.echo(json.dumps({"id": key_id, "role": role, "vendor_id": vendor_id, "api_key": key}))


def serve(
    database_url: UrlOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    workers: Annotated[int, typer.Option(help="Worker processes.")] = 1,
) -> None:
    """Run the vending service's HTTP API (migrating the schema first)."""
    import uvicorn

    url = _url(database_url)
    try:
        database.upgrade(url)
        database.check_durability(database.make_engine(url))
    except VendError as exc:
        _fail(exc)
    except DBAPIError as exc:
        if not is_transient(exc):
            _fail(database_failure(exc))
        shown = database.make_engine(url).url.render_as_string(hide_password=True)
        console.print(f"[yellow]database {shown} not reachable[/]: serving 503 (see /readyz) until it is")
        threading.Thread(target=_migrate_when_reachable, args=(url,), name="mita-migrate", daemon=True).start()
    os.environ["MITA_DATABASE_URL"] = url  # how the workers uvicorn starts learn it (their Settings read it)
    uvicorn.run("mita.api.app:app_from_env", factory=True, host=host, port=port, workers=workers, log_level="warning")


def _migrate_when_reachable(url: str, first_wait: float = 1.0, longest_wait: float = 30.0) -> None:
    """Migrate as soon as the database answers; the workers serve once the schema is current."""
    wait = first_wait
    while True:
        time.sleep(wait)
        try:
            database.upgrade(url)
        except DBAPIError as exc:
            if is_transient(exc):
                wait = min(wait * 2, longest_wait)
                continue
            console.print(f"[bold red]error[/] [{database_failure(exc).code}] the schema could not be migrated")
            return
        console.print("database reachable: schema up to date")
        return


DEMO_URL = "sqlite:///mita-demo.db"

DEMO_METERS = (  # (DRN body without its check digit, virtual meter profile, utility, customer)
    ("4750015023", "legacy-ea07", "electricity", "DEMO-001"),
    ("4750015024", "edition2-ea11", "electricity", "DEMO-002"),
    ("4750015025", "water-valve", "water", "DEMO-003"),
)


def demo(
    database_url: UrlOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8000,
    no_serve: Annotated[
        bool, typer.Option("--no-serve", help="Set up and print, but do not start the server.")
    ] = False,
) -> None:
    """Set up a demo utility on SQLite (supply group, tariffs, customers, meters, keys) and serve it."""
    from mita.meter import Meter, storage

    url = database_url or DEMO_URL  # never MITA_DATABASE_URL: the demo's public test key stays out of a real one
    database.upgrade(url)
    engine = database.make_engine(url)
    admin = registry.SYSTEM
    try:
        registry.get_supply_group(engine, sample.SGC)
    except VendError:
        sample.create_group_and_tariff(engine, "Demo town")
        start = dt.datetime(2020, 1, 1)
        flat = {"blocks": [{"up_to": None, "price": "28.50"}], "vat_rate": "0.15"}
        registry.Registry(engine).create_tariff(admin, name="water", currency="ZAR", spec=flat, effective_from=start)
        for body, profile, utility, account in DEMO_METERS:
            registry.Registry(engine).create_customer(
                admin,
                account=account,
                name=f"Demo customer {account[-1]}",
                fbe_eligible=account == "DEMO-001",
                debt=5000 if account == "DEMO-002" else 0,
                debt_rate="0.2",
            )
            registry.Registry(engine).create_meter(
                admin,
                drn=sample.meter_number(body),
                sgc=sample.SGC,
                customer=account,
                manufacturer=profile,
                utility=utility,
                tariff="water" if utility == "water" else "domestic",
            )
    keys = {role: registry.Registry(engine).create_api_key(f"demo {role}", role)[1] for role in ("admin", "operator")}
    try:
        vendor_id = int(registry.Registry(engine).create_vendor(admin, "Demo shop", 10_000_000)["id"])
    except VendError:
        vendor_id = int(registry.get_by(engine, vendors, vendors.c.name, "Demo shop", "vendor")["id"])
    keys["vendor"] = registry.Registry(engine).create_api_key("demo shop till", "vendor", vendor_id)[1]

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

    base = f"http://{host}:{port}/v1"
    first = sample.meter_number(DEMO_METERS[0][0])
    console.print(f"[bold]Mita demo utility[/] on {url} (its own database: MITA_DATABASE_URL is not used)")
    console.print("API keys (printed once, stored hashed):")
    for role, key in keys.items():
        console.print(f"  {role:<9} {key}")
    console.print(
        f"Virtual meters in {folder}/ (one per profile): {', '.join(p.name for p in sorted(folder.glob('*.json')))}"
    )
    console.print("\nTry:")
    console.print(
        f"  curl -s {base}/quotes -H 'Authorization: Bearer {keys['vendor']}' "
        f'-H \'Content-Type: application/json\' -d \'{{"meter":"{first}","amount":10000}}\''
    )
    console.print(
        f"  curl -s {base}/vends -H 'Authorization: Bearer {keys['vendor']}' -H 'Idempotency-Key: try-1' "
        f'-H \'Content-Type: application/json\' -d \'{{"meter":"{first}","amount":10000}}\''
    )
    console.print(f"  .venv/bin/mita meter enter {folder}/{first}.json <a token from the vend>")
    console.print(f"  open http://{host}:{port}/docs for the API, Ctrl-C to stop")
    if not no_serve:
        serve(url, host, port, 1)
