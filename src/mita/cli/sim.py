"""``mita sim``: simulated smart STS meters over DLMS/COSEM (issue 12).

``mita sim serve STATE.json --host 127.0.0.1 --port 4059`` serves the meter file ``mita meter`` uses, so one meter
takes tokens from its keypad and over DLMS alike; every change is saved to the file as ``mita meter`` saves it. When
it listens, it prints one JSON line on standard output (``drn``, ``host``, ``port`` -- the real one with
``--port 0`` -- and the client addresses), then serves until Ctrl-C.

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
"""

from __future__ import annotations

import argparse

from .command import command, fail, group
from .options import add_choice, add_key_source

ENCODINGS = ("bcd", "ascii")
#: LLS secrets are octet strings; 1 to 32 octets, as hex.
SECRET_DIGITS = tuple(range(2, 65, 2))


def add_commands(parser: argparse.ArgumentParser) -> None:
    commands = group(parser)
    command(commands, "serve", serve, "Serve one meter file over DLMS/COSEM (TCP, IEC 62056-47 wrapper).",
            _serve_options)  # fmt: skip
    command(commands, "fleet", fleet, "Serve every meter file of a folder over DLMS/COSEM, one endpoint each, in "
            "one process.", _fleet_options)  # fmt: skip


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

    from mita.meter import storage

    from . import exits, secrets

    try:
        from mita.sim.objects import MeterObjects
        from mita.sim.server import MANAGEMENT_CLIENT, PUBLIC_CLIENT, MeterServer
        from mita.sim.server import serve as listen
    except ImportError:
        fail("dlms_missing", "mita sim needs the dlms extra (gurux-dlms): pip install 'mita[dlms]'")

    source = secrets.KeySource("secret", args.secret_file, args.secret_env)
    secret_hex = secrets.read_key(source, what="the LLS secret", digits=SECRET_DIGITS, required=False)
    meter = storage.load(args.state_file)
    objects = MeterObjects(meter, lambda m: storage.save(m, args.state_file), args.token_encoding)

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

    from mita.meter import storage
    from mita.meter.errors import MeterError

    from . import exits

    try:
        from mita.sim.fleet import FleetError, start_fleet
    except ImportError:
        fail("dlms_missing", "mita sim needs the dlms extra (gurux-dlms): pip install 'mita[dlms]'")

    secrets = read_secrets(args.secrets)
    if not os.path.isdir(args.folder):
        fail("no_folder", f"{args.folder!r} is not a folder")
    skip = {os.path.realpath(p) for p in (args.secrets, args.endpoints_out) if p}
    paths = [p for p in sorted(glob.glob(os.path.join(args.folder, "*.json"))) if os.path.realpath(p) not in skip]
    if not paths:
        fail("no_meters", f"no meter files (*.json) in {args.folder!r}")
    meters = []
    for path in paths:
        try:
            meter = storage.load(path)
        except MeterError as exc:
            fail(exc.code, f"{path}: {exc}")
        meters.append((meter, path, secrets.get(meter.state.drn, b"")))

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
                meters, args.host, args.port_base, addresses=args.addresses, encoding=args.token_encoding
            )
        except FleetError as exc:
            fail(exc.code, exc.message)
        finally:
            gc.freeze()
            gc.enable()
        endpoints = {drn: {"host": e.host, "port": e.port} for drn, e in served.endpoints.items()}
        if args.endpoints_out:
            with open(args.endpoints_out, "w") as f:
                json.dump(endpoints, f)
        sys.stdout.write(json.dumps({"meters": len(served), "endpoints": endpoints}) + "\n")
        sys.stdout.flush()
        await stop.wait()
        await served.stop()

    asyncio.run(run())
    return exits.OK
