"""``classzoo predict``: top-k classes of image files and folders with a checkpoint."""

from __future__ import annotations

import argparse

from classzoo.cli.common import add_set_flag, add_verb, only_on_rank_zero, print_json


def add_parser(subparsers) -> None:
    pr = add_verb(subparsers, "predict", "top-k classes of images with a checkpoint")
    pr.add_argument(
        "--checkpoint",
        required=True,
        help="classzoo .pt, .safetensors or TF checkpoint, or a run folder (its newest checkpoint)",
    )
    pr.add_argument("images", nargs="+", help="image files and folders (searched recursively)")
    pr.add_argument("--recipe", default=None, help="recipe, for checkpoints without a config")
    pr.add_argument("--model", default=None, help="model name, for checkpoints without a config")
    pr.add_argument("--top-k", type=int, default=5, help="classes shown per image")
    pr.add_argument(
        "--format", choices=["text", "csv", "json"], default="text", help="output format"
    )
    pr.add_argument("--json", action="store_true", help="same as --format json")
    add_set_flag(pr)


def run(args: argparse.Namespace) -> int:
    from classzoo.predict import format_results, predict

    if only_on_rank_zero("predict"):
        return 0
    results = predict(
        args.checkpoint, args.images, args.recipe, args.model, args.top_k, args.overrides
    )
    if args.json or args.format == "json":
        print_json(results)
    elif results:
        print(format_results(results, args.format))
    return 0
