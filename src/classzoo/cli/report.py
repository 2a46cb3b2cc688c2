"""``classzoo report``: Markdown tables and plots from run folders."""

from __future__ import annotations

import argparse

from classzoo.cli.common import add_verb


def add_parser(subparsers) -> None:
    r = add_verb(subparsers, "report", "Markdown tables and plots from run folders")
    r.add_argument("run_dirs", nargs="+", help="run folders")
    r.add_argument(
        "--output", default=None, help="folder for report.md and the PNG plots (default: print)"
    )


def run(args: argparse.Namespace) -> int:
    from classzoo.report import main_report

    return main_report(args.run_dirs, args.output)
