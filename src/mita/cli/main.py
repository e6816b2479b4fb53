"""The ``mita`` command."""

from __future__ import annotations

from typing import Annotated

import typer

from mita import __version__

from .keys import keys_app
from .meter import meter_app
from .server import admin_app, db_app, demo, serve
from .token import token_app
from .tour import tour
from .worker import worker

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Mita: STS prepayment metering.")


def _version(show: bool) -> None:
    if show:
        typer.echo(f"mita {__version__}")
        raise typer.Exit


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Mita: STS prepayment metering."""


app.add_typer(token_app, name="token")
app.add_typer(meter_app, name="meter")
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
app.add_typer(keys_app, name="keys")
app.command()(serve)
app.command()(demo)
app.command()(worker)
token_app.command()(tour)

if __name__ == "__main__":
    app()
