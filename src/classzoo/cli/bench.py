"""``classzoo bench``: model throughput on synthetic tensors."""

from __future__ import annotations

import argparse

from classzoo.cli.common import add_verb, print_json


def add_parser(subparsers) -> None:
    b = add_verb(subparsers, "bench", "model throughput on synthetic tensors")
    b.add_argument("--model", required=True, help="model name (`classzoo models`)")
    b.add_argument("--batch-size", type=int, default=32, help="images per step")
    b.add_argument(
        "--image-size", type=int, default=None, help="pixels (default: the model's input size)"
    )
    b.add_argument("--mode", choices=["train", "infer"], default="train", help="what to time")
    b.add_argument("--amp", default="auto", help="auto|off|bf16|fp16 (training's default)")
    b.add_argument(
        "--channels-last",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="NHWC memory format (training's default)",
    )
    b.add_argument("--steps", type=int, default=10, help="timed steps")
    b.add_argument("--device", default="auto", help="auto|cpu|cuda|npu|mps")
    b.add_argument("--num-classes", type=int, default=None, help="head size (default: the model's)")
    b.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from classzoo.bench import bench_model

    r = bench_model(
        args.model,
        args.batch_size,
        args.image_size,
        args.mode,
        args.amp,
        args.channels_last,
        args.steps,
        device=args.device,
        num_classes=args.num_classes,
    )
    if args.json:
        print_json(r)
        return 0
    print(
        f"{r['model']} {r['mode']} batch {r['batch_size']} {r['image_size']}px amp {r['amp']} "
        f"channels_last {r['channels_last']} on {r['device']} ({r['threads']} threads): "
        f"{r['images_per_sec']:.1f} images/s, {r['tflops']:.3f} TFLOP/s = MFU {100 * r['mfu']:.1f} % "
        f"of the {r['peak_matmul_tflops']:.3f} TFLOP/s measured matmul peak; peak memory "
        f"{r['peak_memory_mb']:.0f} MiB"
    )
    return 0
