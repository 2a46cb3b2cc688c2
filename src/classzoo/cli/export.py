"""``classzoo export``: a checkpoint as ONNX (dynamic batch, preprocessing metadata), verified
with onnxruntime against PyTorch."""

from __future__ import annotations

import argparse

from classzoo.cli.common import add_set_flag, add_verb, only_on_rank_zero


def add_parser(subparsers) -> None:
    ex = add_verb(
        subparsers,
        "export",
        "export a checkpoint as ONNX (dynamic batch), checked with onnxruntime against PyTorch",
    )
    ex.add_argument(
        "--checkpoint",
        required=True,
        help="classzoo .pt, .safetensors or TF checkpoint, or a run folder (its newest checkpoint)",
    )
    ex.add_argument("--format", choices=["onnx"], default="onnx", help="output format")
    ex.add_argument("output", help="output file")
    ex.add_argument("--recipe", default=None, help="recipe, for checkpoints without a config")
    ex.add_argument("--model", default=None, help="model name, for checkpoints without a config")
    add_set_flag(ex)


def run(args: argparse.Namespace) -> int:
    from classzoo.export import CHECK_BATCH, MAX_DIFF, export_onnx

    if only_on_rank_zero("export"):
        return 0
    r = export_onnx(args.checkpoint, args.output, args.recipe, args.model, args.overrides)
    print(f"wrote {r.path}")
    print(
        f"onnxruntime check (fp32, batch {CHECK_BATCH}): max |diff| {r.max_abs_diff:.3g}, "
        f"max |logit| {r.max_abs_logit:.3g}, relative {r.max_abs_diff / max(1.0, r.max_abs_logit):.3g} "
        f"(limit {MAX_DIFF:g} x max(1, max |logit|))"
    )
    return 0
