"""``classzoo predict``: top-k classes of images with a checkpoint."""

from __future__ import annotations

import argparse

from classzoo.cli.common import add_verb, print_json


def add_parser(subparsers) -> None:
    pr = add_verb(subparsers, "predict", "top-k classes of images with a checkpoint")
    pr.add_argument("--checkpoint", required=True, help="classzoo .pt checkpoint")
    pr.add_argument("images", nargs="+", help="image files")
    pr.add_argument("--recipe", default=None, help="recipe, for checkpoints without a config")
    pr.add_argument("--model", default=None, help="model name, for checkpoints without a config")
    pr.add_argument("--top-k", type=int, default=5, help="classes shown per image")
    pr.add_argument("--json", action="store_true", help="print one JSON list")


def run(args: argparse.Namespace) -> int:
    from classzoo.predict import predict

    results = predict(args.checkpoint, args.images, args.recipe, args.model, args.top_k)
    if args.json:
        print_json(results)
        return 0
    for r in results:
        tops = ", ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in r["top"])
        print(f"{r['image']}: {tops}")
    return 0
