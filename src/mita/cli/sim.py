"""``mita sim``: simulated smart STS meters over DLMS/COSEM (issue 12).

``mita sim serve STATE.json --host 127.0.0.1 --port 4059`` serves the meter file ``mita meter`` uses, so one meter
takes tokens from its keypad and over DLMS alike; every change is saved to the file as ``mita meter`` saves it. When
it listens, it prints one JSON line on standard output (``drn``, ``host``, ``port`` -- the real one with
``--port 0`` -- and the client addresses), then serves until Ctrl-C.

The management association (client 1, LLS) needs the meter's secret, hex, from ``--secret-file`` or
``--secret-env`` (never the command line: :mod:`mita.cli.secrets`); without one only the public, read-only client
(16) can associate. Needs the optional ``dlms`` extra (gurux-dlms, GPL-2.0): ``pip install 'mita[dlms]'``.
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
