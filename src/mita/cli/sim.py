"""``mita sim``: simulated smart STS meters over DLMS/COSEM (issue 12).

``mita sim serve STATE.json --host 127.0.0.1 --port 4059`` serves the meter file ``mita meter`` uses, so one meter
takes tokens from its keypad and over DLMS alike; every change is saved to the file as ``mita meter`` saves it, and
before each request the sim takes the file if ``mita meter`` saved it meanwhile (:mod:`mita.sim.meterfile`): a token
typed on the keypad counts once, shown in the token gateway as a manual entry. When it listens, it prints one JSON
line on standard output (``drn``, ``host``, ``port`` -- the real one with ``--port 0`` -- and the client
addresses), then serves until Ctrl-C.

The management association (client 1, LLS) needs the meter's secret, hex, from ``--secret-file`` or
``--secret-env`` (never the command line: :mod:`mita.cli.secrets`); without one only the public, read-only client
(16) can associate. Needs the optional ``dlms`` extra (gurux-dlms, GPL-2.0): ``pip install 'mita[dlms]'``.

``mita sim fleet FOLDER --secrets SECRETS.json`` serves every meter file ``FOLDER/*.json`` in one process
(:mod:`mita.sim.fleet`): one endpoint per meter, consecutive ports from ``--port-base`` (0: any free port each) on
``--host``, or one loopback address each from ``--addresses CIDR``. ``SECRETS.json`` maps each DRN to its LLS
secret, hex (a meter without one takes the public client only); like a key file it must be its owner's alone (no
group or other permission bits), else ``error[secret_exposed]``. When every meter listens it prints one JSON line,
``{"meters": N, "endpoints": {DRN: {"host", "port"}}}`` (``--endpoints-out FILE`` writes the endpoints to a file
too, before the line), then serves until SIGINT or SIGTERM.

From the vending database (``--database-url``, which must exist and be migrated: exit 3 otherwise):

* ``--from-database`` first makes the folder's missing meters: for each of the database's meters (not retired;
  the first N by id with ``--limit N``) without a file ``FOLDER/<drn>.json``, a virtual meter holding the decoder
  key the vending system derives for it (:func:`mita.vend.provision.virtual_meter`, sealed in the file as
  ``mita meter`` seals it), and for each of them without a secret in ``SECRETS.json``, a fresh random 16-octet LLS
  secret (the file is then rewritten atomically, mode 0600; made if missing). What exists is kept, so a second
  start serves the same meters with the same secrets. The JSON line adds ``"made": N`` (files made).
* ``--register``, once every meter listens, connects each served meter the database holds in the head-end's
  registry (:func:`mita.headend.registry.register_many`: its endpoint, its secret, its gateway's token encoding),
  so that ``mita worker`` delivers vends for it remotely; a file the database does not know is served, not
  registered. The JSON line adds ``"registered": N``. Stopping the fleet does *not* unregister: a stopped meter is
  an offline meter, and its commands wait for it until they expire (``mita headend unregister`` returns a meter to
  keypad-only delivery).

``mita sim mqtt PATH...`` runs MQTT-native meters instead (:mod:`mita.sim.mqttmeter`, :mod:`mita.sim.mqttfleet`;
no DLMS, no gurux): each meter file (or every ``*.json`` of a folder) its own MQTT v5 session on the broker of
``--mqtt-url`` (default ``MITA_MQTT_URL``), all in one process, on a clock ``--speed`` times faster than real time
(from ``--start``, default now). Every ``--interval`` seconds of simulated time (900) each meter draws its
customer's load (``--load loads``: :mod:`mita.sim.loads`'s shapes, seeded by ``--seed``; ``simple``: a small daily
curve) through the meter model, so credit falls and the relay opens at zero credit; it publishes a readings block
every ``--push-every`` intervals, its events as they happen, a retained status with a last will; and it executes
the head-end's commands on its ``cmd`` topic, answering an ack. ``--fault DRN=KIND[:VALUE][@FROM[-TO]]`` (hours
from the start; repeatable) injects bypass, magnetic, cover, leak, dead or clock_drift
(:func:`mita.sim.mqttload.parse_fault`). The meter files are shared with ``mita meter`` as ``serve`` shares them;
each meter's sequence counter and its last command outcomes live beside its file (``.NAME.mqtt``). When every meter
is connected it prints one JSON line (``meters``, ``broker``, ``speed``, ``interval``, ``push_every``, ``start``),
then runs until SIGINT or SIGTERM (what was published, on standard error). ``--from-database`` (one folder) first
makes the database's missing meters as ``fleet`` does (no secrets: an MQTT meter has none); ``--register``
connects each served meter the database holds in the head-end with transport ``mqtt`` (its broker's address), so
``mita worker`` publishes its vends' tokens to it.
"""

from __future__ import annotations

import argparse

from .command import command, fail, group
from .listing import positive
from .options import add_choice, add_database_url, add_key_source

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (start-up time)
if TYPE_CHECKING:
    from sqlalchemy import Engine

    from mita import compose

ENCODINGS = ("bcd", "ascii")
#: LLS secrets are octet strings; 1 to 32 octets, as hex.
SECRET_DIGITS = tuple(range(2, 65, 2))


def add_commands(parser: argparse.ArgumentParser) -> None:
    commands = group(parser)
    command(commands, "serve", serve, "Serve one meter file over DLMS/COSEM (TCP, IEC 62056-47 wrapper).",
            _serve_options)  # fmt: skip
    command(commands, "fleet", fleet, "Serve every meter file of a folder over DLMS/COSEM, one endpoint each, in "
            "one process.\n\nWith --from-database, the vending database's meters missing from the folder are made "
            "first (and their LLS secrets); with --register, the served meters are connected in the head-end, so "
            "mita worker delivers their vends remotely.", _fleet_options)  # fmt: skip
    command(commands, "mqtt", mqtt, "Run meter files as MQTT-native meters on a broker, on a clock that may run "
            "faster than real time: readings, events, a retained status with a last will, and the head-end's "
            "commands answered.\n\nNo DLMS here (no gurux needed).", _mqtt_options)  # fmt: skip


def _serve_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("state_file", help="The meter's state file (JSON), as `mita meter new` made it.")
    p.add_argument("--host", default="127.0.0.1", help="Address to listen on (default 127.0.0.1).")
    p.add_argument("--port", type=int, default=4059, help="TCP port (default 4059, the DLMS/COSEM port; 0: any).")
    add_key_source(p, "secret", "the management client's LLS secret, hex")
    add_choice(p, "--token-encoding", values=ENCODINGS, help="How enter carries the token (default: the profile's).")


def serve(args: argparse.Namespace) -> int:
    import asyncio
    import datetime
    import json
    import sys

    from . import exits, secrets

    try:
        from mita.sim.meterfile import MeterFile
        from mita.sim.objects import MeterObjects
        from mita.sim.server import MANAGEMENT_CLIENT, PUBLIC_CLIENT, MeterServer
        from mita.sim.server import serve as listen
    except ImportError:
        fail("dlms_missing", "mita sim needs the dlms extra (gurux-dlms): pip install 'mita[dlms]'")

    source = secrets.KeySource("secret", args.secret_file, args.secret_env)
    secret_hex = secrets.read_key(source, what="the LLS secret", digits=SECRET_DIGITS, required=False)
    file = MeterFile(args.state_file)  # shared with `mita meter`: the keypad's changes are taken before each request
    meter = file.load()
    objects = MeterObjects(meter, file, args.token_encoding)

    def clock() -> datetime.datetime:
        return datetime.datetime.now().replace(microsecond=0)

    server = MeterServer(objects, bytes.fromhex(secret_hex or ""), clock)

    async def run() -> None:
        try:
            listening = await listen(server, args.host, args.port)
        except OSError as exc:
            fail("listen_failed", f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
        host, port = listening.sockets[0].getsockname()[:2]
        clients = {"public": PUBLIC_CLIENT, "management": MANAGEMENT_CLIENT if secret_hex else None}
        info = {"drn": meter.state.drn, "host": host, "port": port, "clients": clients, "token": objects.encoding}
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()
        async with listening:
            await listening.serve_forever()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        return exits.OK
    return exits.OK


def _fleet_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", help="Folder of meter files (*.json), as `mita meter new` made them.")
    p.add_argument(
        "--secrets",
        metavar="FILE",
        required=True,
        help="JSON object: DRN -> the meter's LLS secret, hex. Readable by its owner only.",
    )
    p.add_argument("--host", default="127.0.0.1", help="Address every meter listens on (default 127.0.0.1).")
    p.add_argument(
        "--port-base",
        type=int,
        default=0,
        help="First port; meter i listens on PORT_BASE + i (default 0: any free port each). With "
        "--addresses: every meter's port (default 4059).",
    )
    p.add_argument(
        "--addresses",
        metavar="CIDR",
        help="One address per meter from this block (e.g. 127.0.1.0/22) instead of one port each.",
    )
    p.add_argument("--endpoints-out", metavar="FILE", help="Also write the endpoints (JSON) to FILE.")
    add_choice(p, "--token-encoding", values=ENCODINGS, help="How enter carries the token (default: each profile's).")
    p.add_argument(
        "--no-sync",
        action="store_true",
        help="Save meter files without fsync (still atomic; a machine crash may lose the last saves): for load "
        "tests, where 1,000 meters' fsyncs would queue in the one event loop and measure the disk.",
    )
    p.add_argument(
        "--from-database",
        action="store_true",
        help="First make a meter file FOLDER/<drn>.json for each of the database's meters that has none (and an LLS "
        "secret in --secrets, made 0600 if missing, for each without one); existing files and secrets are kept.",
    )
    p.add_argument(
        "--limit",
        type=positive,
        metavar="N",
        help="With --from-database: only the database's first N meters (by id).",
    )
    p.add_argument(
        "--register",
        action="store_true",
        help="Once every meter listens, register each one the database holds in the head-end (its endpoint, secret "
        "and token encoding), so mita worker delivers its vends remotely. Stopping does not unregister: a stopped "
        "meter is offline, and its commands wait until they expire.",
    )
    add_database_url(p)


def read_secrets(path: str) -> dict[str, bytes]:
    """DRN -> LLS secret from a JSON file only its owner may read or write. Errors are
    :class:`mita.cli.secrets.SecretError`; a message names the file and a DRN, never a secret."""
    import json
    import os
    import stat

    from .secrets import SecretError

    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise SecretError("secret_unreadable", f"--secrets {path!r}: cannot read it ({exc.strerror})") from None
    with os.fdopen(fd, "rb") as f:
        mode = os.fstat(f.fileno()).st_mode
        if stat.S_IMODE(mode) & 0o077:
            raise SecretError(
                "secret_exposed",
                f"--secrets {path!r} is open to its group or others (mode {stat.S_IMODE(mode):04o}): "
                f"chmod 600 it (the secrets may already be known)",
            )
        raw = f.read()
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise SecretError("invalid_key", f"--secrets {path!r} is not JSON") from None
    if not isinstance(data, dict):
        raise SecretError("invalid_key", f"--secrets {path!r} must be a JSON object: DRN -> secret, hex")
    out: dict[str, bytes] = {}
    for drn, value in data.items():
        if not (drn.isdigit() and len(drn) in (11, 13)):  # a secret pasted as the name is not echoed
            raise SecretError("invalid_key", f"--secrets {path!r}: a name is not a meter number (11 or 13 digits)")
        digits = len(value) if isinstance(value, str) else 0
        try:
            secret = bytes.fromhex(value) if digits in SECRET_DIGITS else None
        except ValueError:
            secret = None
        if secret is None:
            raise SecretError(
                "invalid_key", f"--secrets {path!r}: the secret of {drn!r} must be 2 to 64 hex digits, an even count"
            )
        out[str(drn)] = secret
    return out


def fleet(args: argparse.Namespace) -> int:
    import asyncio
    import gc
    import glob
    import json
    import os
    import resource
    import signal
    import sys

    from mita.meter.errors import MeterError

    from . import exits

    try:
        from mita.sim.fleet import FleetError, start_fleet
        from mita.sim.meterfile import MeterFile
    except ImportError:
        fail("dlms_missing", "mita sim needs the dlms extra (gurux-dlms): pip install 'mita[dlms]'")

    if args.limit is not None and not args.from_database:
        fail("usage", "--limit goes with --from-database")
    if args.register and args.addresses is None and _unspecified(args.host):
        fail("usage", f"--register needs an address the head-end can reach, not --host {args.host}")
    runtime = _database(args.database_url) if args.from_database or args.register else None
    made = None
    if runtime is not None and args.from_database:
        lls = read_secrets(args.secrets) if os.path.exists(args.secrets) else {}
        made = make_meters(runtime.engine, args.folder, lls, args.secrets, args.limit)
    else:
        lls = read_secrets(args.secrets)
    if not os.path.isdir(args.folder):
        fail("no_folder", f"{args.folder!r} is not a folder")
    skip = {os.path.realpath(p) for p in (args.secrets, args.endpoints_out) if p}
    paths = [p for p in sorted(glob.glob(os.path.join(args.folder, "*.json"))) if os.path.realpath(p) not in skip]
    if not paths:
        fail("no_meters", f"no meter files (*.json) in {args.folder!r}")
    meters = []
    for path in paths:
        file = MeterFile(path, sync=not args.no_sync)  # shared with `mita meter`: its changes are taken
        try:
            meter = file.load()
        except MeterError as exc:
            fail(exc.code, f"{path}: {exc}")
        meters.append((meter, file, lls.get(meter.state.drn, b"")))

    # one socket per meter and per open connection: the soft limit (often 1,024) up to the hard one
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        gc.disable()  # start_fleet leaves it as it finds it: frozen below, the fleet is never collected at all
        try:
            served = await start_fleet(
                meters, args.host, args.port_base, addresses=args.addresses, encoding=args.token_encoding,
                sync=not args.no_sync,
            )  # fmt: skip
        except FleetError as exc:
            fail(exc.code, exc.message)
        finally:
            gc.freeze()
            gc.enable()
        endpoints = {drn: {"host": e.host, "port": e.port} for drn, e in served.endpoints.items()}
        line: dict[str, object] = {"meters": len(served), "endpoints": endpoints}
        if made is not None:
            line["made"] = made
        if runtime is not None and args.register:
            places: dict[str, tuple[str, int, str]] = {
                drn: (e.host, e.port, served.servers[drn].objects.encoding) for drn, e in served.endpoints.items()
            }
            try:  # in a thread: the meters answer meanwhile
                line["registered"] = await asyncio.to_thread(register_meters, runtime, places, lls)
            except BaseException:
                await served.stop()
                raise
        if args.endpoints_out:
            with open(args.endpoints_out, "w") as f:
                json.dump(endpoints, f)
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        await stop.wait()
        await served.stop()

    try:
        asyncio.run(run())
    finally:
        if runtime is not None:
            runtime.close()
    return exits.OK


def _unspecified(host: str) -> bool:
    """0.0.0.0 or ::: every address of the machine, where no head-end can connect to."""
    import ipaddress

    try:
        return ipaddress.ip_address(host).is_unspecified
    except ValueError:
        return False  # a name


def _database(url: str | None) -> compose.Runtime:
    from . import dbshell

    return dbshell.runtime(url)


#: ``--from-database`` says how far it got every this many meter files made (on standard error).
PROGRESS_EVERY = 500


def make_meters(engine: Engine, folder: str, lls: dict[str, bytes], secrets_path: str | None, limit: int | None) -> int:
    """``--from-database``: a meter file for each of the database's meters (not retired; the first ``limit`` by id)
    that has none in ``folder``, and a fresh 16-octet LLS secret in ``lls`` for each without one (``secrets_path``
    then rewritten: :func:`write_secrets`; None: no secrets, for MQTT meters). Returns how many files were made;
    what exists is left as it is."""
    import os
    import secrets

    from sqlalchemy import select

    from mita.meter import storage
    from mita.vend import provision
    from mita.vend.errors import VendError
    from mita.vend.keyring import KeyRing
    from mita.vend.lifecycles import MeterStatus
    from mita.vend.schema import meters

    from .command import note
    from .dbshell import refusals

    query = select(meters.c.drn).where(meters.c.status != MeterStatus.RETIRED.value).order_by(meters.c.id)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        fail("no_folder", f"cannot make the folder {folder!r}: {exc.strerror or exc}")
    keyring = KeyRing()  # the supply groups' vending keys, opened once each
    with refusals():
        with engine.connect() as conn:
            drns = list(conn.execute(query.limit(limit) if limit else query).scalars())
        missing = [drn for drn in drns if not os.path.exists(os.path.join(folder, f"{drn}.json"))]
        for i, drn in enumerate(missing, 1):
            try:
                meter = provision.virtual_meter(engine, drn, keyring=keyring)
            except VendError as exc:  # e.g. its supply group's key destroyed: say which meter
                raise VendError(exc.code, f"meter {drn}: {exc}") from None
            storage.save(meter, os.path.join(folder, f"{drn}.json"))
            if i % PROGRESS_EVERY == 0 and i < len(missing):
                note(f"made {i} of {len(missing)} meter files")
    if secrets_path is None:
        return len(missing)
    fresh = [drn for drn in drns if drn not in lls]
    for drn in fresh:
        lls[drn] = secrets.token_bytes(16)
    if fresh or not os.path.exists(secrets_path):
        write_secrets(secrets_path, lls)
    return len(missing)


def write_secrets(path: str, lls: dict[str, bytes]) -> None:
    """The secrets file, replaced atomically (a temporary file beside it, then ``os.replace``), mode 0600 from the
    start: never a moment when it is half-written or open to others."""
    import contextlib
    import json
    import os
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    data = json.dumps({drn: secret.hex() for drn, secret in lls.items()}, indent=1).encode()
    try:
        fd, temporary = tempfile.mkstemp(prefix=".secrets-", suffix=".tmp", dir=folder)  # mode 0600
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise
    except OSError as exc:
        fail("secret_unwritable", f"--secrets {path!r}: cannot write it ({exc.strerror or exc})")


def register_meters(runtime: compose.Runtime, places: dict[str, tuple[str, int, str]], lls: dict[str, bytes]) -> int:
    """``--register``: each served meter the database holds (DRN -> host, port, token encoding) connected in the
    head-end's registry with its secret (none: the public client only), in one transaction; how many."""
    from sqlalchemy import select

    from mita.headend import registry
    from mita.vend.registry import SYSTEM
    from mita.vend.schema import meters

    from .dbshell import refusals

    served = sorted(places)
    known: set[str] = set()
    with refusals():
        with runtime.engine.connect() as conn:
            for i in range(0, len(served), 500):  # bound the IN list
                chunk = served[i : i + 500]
                known.update(conn.execute(select(meters.c.drn).where(meters.c.drn.in_(chunk))).scalars())
        endpoints = [
            {"drn": drn, "host": host, "port": port, "secret": lls.get(drn), "token_encoding": encoding}
            for drn, (host, port, encoding) in places.items()
            if drn in known
        ]
        return registry.register_many(runtime.engine, SYSTEM, endpoints, runtime.clock())


# ---------------------------------------------------------------------- mita sim mqtt


def _mqtt_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", metavar="PATH", help="Meter files (JSON, as `mita meter new` made them), or "
                   "folders of them (*.json).")  # fmt: skip
    p.add_argument("--mqtt-url", metavar="URL", help="The broker, mqtt://[user[:password]@]host:port (default "
                   "MITA_MQTT_URL).")  # fmt: skip
    p.add_argument("--speed", type=_positive_float, default=1.0, metavar="N",
                   help="Simulated seconds per real second (default 1; 900: an interval a second).")  # fmt: skip
    p.add_argument("--interval", type=positive, default=900, metavar="SECONDS",
                   help="The meters' integration period (default 900; a minute or more, dividing a day).")  # fmt: skip
    p.add_argument("--push-every", type=positive, default=1, metavar="K",
                   help="Intervals per readings message (default 1; 4: an hour of 15-minute readings).")  # fmt: skip
    p.add_argument("--start", metavar="TIME", help="Simulated start, ISO 8601 (local time when no offset), or "
                   "Unix seconds (default now).")  # fmt: skip
    add_choice(p, "--load", values=("loads", "simple"), default="loads",
               help="The customers' load: loads (realistic shapes, seeded) or simple (a daily curve).")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="Seed of the load shapes (default 0).")
    p.add_argument("--fault", action="append", default=[], metavar="DRN=KIND[:VALUE][@FROM[-TO]]",
                   help="Inject a fault (bypass, magnetic, cover, leak, dead, clock_drift), FROM/TO hours after the "
                        "start; repeatable.")  # fmt: skip
    p.add_argument("--no-sync", action="store_true", help="Save meter files without fsync (load tests).")
    p.add_argument("--from-database", action="store_true", help="First make a meter file in the (one) folder for "
                   "each of the database's meters that has none.")  # fmt: skip
    p.add_argument("--limit", type=positive, metavar="N", help="With --from-database: the first N meters only.")
    p.add_argument("--register", action="store_true", help="Once connected, register each served meter the "
                   "database holds in the head-end with transport mqtt.")  # fmt: skip
    add_database_url(p)


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive (got {text})")
    return value


def _start_time(text: str | None) -> float:
    import datetime
    import time

    if text is None:
        return time.time()
    try:
        return float(text) if text.replace(".", "", 1).isdigit() else datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        fail("usage", f"--start {text!r} is neither ISO 8601 nor Unix seconds")


def mqtt(args: argparse.Namespace) -> int:
    import asyncio
    import gc
    import json
    import resource
    import signal
    import sys

    from mita.meter.errors import MeterError
    from mita.sim import mqttload
    from mita.sim.faults import Fault
    from mita.sim.meterfile import MeterFile
    from mita.sim.mqttfleet import MqttFleet, SimClock, parse_broker
    from mita.sim.mqttmeter import MeterSim, SideFile, SimError, meter_files

    from . import exits
    from .command import note

    if args.limit is not None and not args.from_database:
        fail("usage", "--limit goes with --from-database")
    url = args.mqtt_url
    if url is None:
        from mita.settings import Settings

        url = Settings().mqtt_url
    try:
        broker = parse_broker(url)
    except SimError as exc:
        fail(exc.code, exc.message)
    start = _start_time(args.start)
    runtime = _database(args.database_url) if args.from_database or args.register else None
    if runtime is not None and args.from_database:
        if len(args.paths) != 1:
            fail("usage", "--from-database makes the meters in one folder: give one PATH")
        make_meters(runtime.engine, args.paths[0], {}, None, args.limit)
    faults: dict[str, list[Fault]] = {}
    for text in args.fault:
        try:
            drn, fault = mqttload.parse_fault(text, int(start))
        except mqttload.FaultError as exc:
            fail(exc.code, str(exc))
        faults.setdefault(drn, []).append(fault)
    paths = meter_files(args.paths)
    if not paths:
        fail("no_meters", "no meter files (*.json) in " + ", ".join(repr(p) for p in args.paths))
    sims = []
    for path in paths:
        file = MeterFile(path, sync=not args.no_sync)
        try:
            meter = file.load()
            load = mqttload.make(meter.state.drn, meter.profile.utility, args.interval,
                                 faults.pop(meter.state.drn, []), shape=args.load, seed=args.seed)  # fmt: skip
            side = SideFile.beside(path, meter.state.drn, sync=not args.no_sync)
            sims.append(MeterSim(meter, load, push_every=args.push_every, file=file, side=side))
        except MeterError as exc:
            fail(exc.code, f"{path}: {exc}")
        except SimError as exc:
            fail(exc.code, f"{path}: {exc.message}")
        except ValueError as exc:
            fail("usage", f"{path}: {exc}")
    if faults:
        fail("invalid_fault", f"--fault for meters not served: {', '.join(sorted(faults))}")

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # a socket per meter
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        fleet = MqttFleet(sims, url, clock=SimClock(start, args.speed))
        try:
            await fleet.start()
        except SimError as exc:
            fail(exc.code, exc.message)
        gc.freeze()  # the meters live as long as the process: the collector need not walk them
        line: dict[str, object] = {
            "meters": len(sims), "broker": broker.shown(), "speed": args.speed, "interval": args.interval,
            "push_every": args.push_every, "start": int(start),
        }  # fmt: skip
        if runtime is not None and args.register:
            try:  # in a thread: the meters go on meanwhile
                line["registered"] = await asyncio.to_thread(
                    register_mqtt_meters, runtime, [s.drn for s in sims], broker.host, broker.port
                )
            except BaseException:
                await fleet.stop(flush=False)
                raise
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()
        await stop.wait()
        await fleet.stop()
        note(json.dumps({"published": fleet.counts}))

    try:
        asyncio.run(run())
    finally:
        if runtime is not None:
            runtime.close()
    return exits.OK


def register_mqtt_meters(runtime: compose.Runtime, drns: list[str], host: str, port: int) -> int:
    """``mita sim mqtt --register``: each served meter the database holds connected in the head-end's registry with
    transport ``mqtt`` (the broker's host and port), in one transaction; how many."""
    from sqlalchemy import select

    from mita.headend import registry
    from mita.vend.registry import SYSTEM
    from mita.vend.schema import meters

    from .dbshell import refusals

    known: set[str] = set()
    with refusals():
        with runtime.engine.connect() as conn:
            for i in range(0, len(drns), 500):  # bound the IN list
                known.update(conn.execute(select(meters.c.drn).where(meters.c.drn.in_(drns[i : i + 500]))).scalars())
        endpoints = [
            {"drn": drn, "host": host, "port": port, "secret": None, "transport": "mqtt"}
            for drn in drns
            if drn in known
        ]
        return registry.register_many(runtime.engine, SYSTEM, endpoints, runtime.clock())
