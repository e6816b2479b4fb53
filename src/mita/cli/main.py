"""The ``mita`` command."""

from __future__ import annotations

import typer

from .demo import demo
from .meter import meter_app
from .token import token_app

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Mita: STS prepayment metering.")
app.add_typer(token_app, name="token")
app.add_typer(meter_app, name="meter")
app.command()(demo)

if __name__ == "__main__":
    app()
