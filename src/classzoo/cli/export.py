"""``classzoo export``: a checkpoint as ONNX (dynamic batch, preprocessing metadata)."""

from __future__ import annotations

import argparse

from classzoo.cli.common import add_verb


def add_parser(subparsers) -> None:
    ex = add_verb(subparsers, "export", "export a checkpoint (ONNX, dynamic batch)")
    ex.add_argument("--checkpoint", required=True, help="classzoo .pt checkpoint")
    ex.add_argument("--format", choices=["onnx"], default="onnx", help="output format")
    ex.add_argument("output", help="output file")
    ex.add_argument("--recipe", default=None, help="recipe, for checkpoints without a config")
    ex.add_argument("--model", default=None, help="model name, for checkpoints without a config")


def run(args: argparse.Namespace) -> int:
    from classzoo.export import export_onnx

    print(f"wrote {export_onnx(args.checkpoint, args.output, args.recipe, args.model)}")
    return 0
