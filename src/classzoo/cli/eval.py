"""``classzoo eval``: top-1, top-5 and loss of a checkpoint over every image once."""

from __future__ import annotations

import argparse
import os

from classzoo.cli.common import add_set_flag, add_verb, print_json


def add_parser(subparsers) -> None:
    e = add_verb(
        subparsers, "eval", "evaluate a checkpoint: top-1, top-5, loss over every image once"
    )
    e.add_argument(
        "--checkpoint",
        required=True,
        help="classzoo .pt, .safetensors or TF checkpoint, or a run folder (its newest checkpoint)",
    )
    e.add_argument("--data-dir", required=True, help="dataset folder")
    e.add_argument(
        "--recipe",
        default=None,
        help="recipe name[:variant] or YAML file (default: the checkpoint's config)",
    )
    e.add_argument(
        "--model", default=None, help="model name, for checkpoints without a stored config"
    )
    e.add_argument(
        "--split",
        default=None,
        help="split folder / shard prefix (default: the recipe's val split)",
    )
    e.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="per device (data.batch_size; default: the config's)",
    )
    e.add_argument("--device", default="auto", help="auto|cpu|cuda|npu|mps")
    add_set_flag(e)
    e.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object {top1, top5, loss, count, skipped, checkpoint, weights, "
        "precision} (non-finite numbers as null; skipped: unreadable images left out of the "
        "metrics under data.skip_corrupt; checkpoint: the file evaluated; weights: ema or model, "
        "which of its weights were scored; precision: fp32, bf16 or fp16, as eval.amp resolved)",
    )


def run(args: argparse.Namespace) -> int:
    from classzoo.engine.inference import eval_checkpoint

    result = eval_checkpoint(
        args.checkpoint,
        args.data_dir,
        args.recipe,
        args.model,
        args.batch_size,
        args.split,
        args.overrides,
        args.device,
        quiet=args.json,
    )
    if not _rank0():  # under torchrun every rank holds the same all-reduced numbers
        return 0
    if args.json:
        print_json(result)
    else:
        print(
            f"top1 {result['top1']:.3f}  top5 {result['top5']:.3f}  loss {result['loss']:.4f}  "
            f"count {result['count']}"
            + (f"  skipped {result['skipped']}" if result.get("skipped") else "")
        )
    return 0


def _rank0() -> bool:
    """This process prints the result: rank 0 of torchrun's group (its RANK, which
    engine.distributed.init_distributed joins by), or the only process."""
    return os.environ.get("RANK", "0") == "0"
