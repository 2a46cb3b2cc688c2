"""``classzoo recipes``: the recipes shipped with classzoo."""

from __future__ import annotations

import argparse

from classzoo.cli.common import add_verb


def add_parser(subparsers) -> None:
    add_verb(subparsers, "recipes", "list the recipes shipped with classzoo")


def run(args: argparse.Namespace) -> int:
    from classzoo.config import list_recipes

    for name, line in list_recipes().items():
        print(f"{name:32s} {line}")
    return 0
