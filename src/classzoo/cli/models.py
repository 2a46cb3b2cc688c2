"""``classzoo models``: the model names classzoo can build."""

from __future__ import annotations

import argparse

from classzoo.cli.common import add_verb


def add_parser(subparsers) -> None:
    m = add_verb(subparsers, "models", "list model names (classzoo's slim layouts and timm's)")
    m.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'resnet*'")


def run(args: argparse.Namespace) -> int:
    import fnmatch

    import timm

    from classzoo.models.registry import registry

    for name in sorted(registry()):
        if fnmatch.fnmatch(name, args.pattern):
            print(f"{name}  (classzoo)")
    for name in timm.list_models(args.pattern):
        print(name)
    return 0
