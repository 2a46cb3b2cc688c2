"""``classzoo quickstart``: train and evaluate a small ResNet on Fashion-MNIST."""

from __future__ import annotations

import argparse
from pathlib import Path

from classzoo.cli.common import add_set_flag, add_verb


def add_parser(subparsers) -> None:
    q = add_verb(
        subparsers,
        "quickstart",
        "train and evaluate a small ResNet on Fashion-MNIST (minutes, CPU)",
    )
    q.add_argument("--output-dir", default="runs/quickstart", help="run folder")
    q.add_argument(
        "--data-dir",
        default=None,
        help="folder with the Fashion-MNIST *-ubyte.gz files (default: the system's copy)",
    )
    add_set_flag(q)


def run(args: argparse.Namespace) -> int:
    from classzoo.quickstart import quickstart

    quickstart(
        Path(args.output_dir), Path(args.data_dir) if args.data_dir else None, args.overrides
    )
    return 0
