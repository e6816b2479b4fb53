"""(in progress)"""

from __future__ import annotations

import argparse

from .command import group


def add_commands(parser: argparse.ArgumentParser) -> None:
    group(parser)
