"""``mita`` with the server's application swapped for a patched one: how the test-only servers (``canary_app``,
``clock_app``, ``hsm_app``) run ``mita serve`` and its workers unchanged but for their patch."""

from __future__ import annotations


def run_mita(app: str, argv: list[str]) -> int:
    """``mita *argv``, its workers built by ``app`` (``module:function``) instead of the product's factory."""
    from mita.api import launch
    from mita.cli.main import main as mita

    launch.APP = app
    return int(mita(argv))
