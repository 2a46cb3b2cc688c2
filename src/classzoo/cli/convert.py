"""``classzoo convert slim``: TF-slim checkpoint -> classzoo .pt / .safetensors."""

from __future__ import annotations

import argparse

from classzoo.cli.common import HelpFormatter, add_verb
from classzoo.errors import UserError


def add_parser(subparsers) -> None:
    c = add_verb(subparsers, "convert", "convert checkpoints")
    csub = c.add_subparsers(dest="convert_kind", required=True)
    cs = csub.add_parser(
        "slim",
        help="TF-slim checkpoint (V1 file or V2 prefix) -> classzoo .pt / .safetensors",
        formatter_class=HelpFormatter,
    )
    cs.add_argument(
        "--model", required=True, help="resnet_v1_50|resnet_v1_101|resnet_v1_152|inception_v4"
    )
    cs.add_argument("--checkpoint", required=True, help="TF checkpoint: V1 file or V2 prefix")
    cs.add_argument("--output", default=None, help="OUT.pt (with config) or OUT.safetensors")
    cs.add_argument(
        "--exclude", nargs="*", default=[], help="slim scopes left at init, e.g. Logits AuxLogits"
    )
    cs.add_argument(
        "--num-classes", type=int, default=None, help="head size (default: the checkpoint's)"
    )
    cs.add_argument(
        "--use-ema", action="store_true", help="take the ExponentialMovingAverage shadows"
    )
    cs.add_argument("--list", action="store_true", help="only list the checkpoint's variables")


def run(args: argparse.Namespace) -> int:
    from classzoo.convert_slim import convert_slim, list_checkpoint

    if args.list:
        print(list_checkpoint(args.checkpoint))
        return 0
    if args.output is None:
        raise UserError("convert slim: --output is required (or --list)")
    from classzoo.engine.logs import setup_console_logging

    setup_console_logging(True)
    convert_slim(
        args.model, args.checkpoint, args.output, args.exclude, args.num_classes, args.use_ema
    )
    return 0
