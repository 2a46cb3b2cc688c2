"""``classzoo bench``: the trainer's step on synthetic tensors, or fed by the real loader."""

from __future__ import annotations

import argparse

from classzoo.cli.common import add_verb, print_json


def add_parser(subparsers) -> None:
    b = add_verb(
        subparsers, "bench", "training (or inference) throughput and MFU of the trainer's own step"
    )
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
        default=None,
        help="NHWC memory format (default: the device's, as training)",
    )
    b.add_argument(
        "--compile", action="store_true", help="torch.compile the network (train.compile=true)"
    )
    b.add_argument("--steps", type=int, default=10, help="timed steps")
    b.add_argument("--warmup", type=int, default=3, help="untimed steps first (compile included)")
    b.add_argument("--device", default="auto", help="auto|cpu|cuda|npu|mps")
    b.add_argument("--num-classes", type=int, default=None, help="head size (default: the model's)")
    data = b.add_argument_group("real data (instead of synthetic tensors)")
    data.add_argument(
        "--data-dir",
        default=None,
        help="ImageFolder root: time the step fed by classzoo's loader from its --split folder",
    )
    data.add_argument(
        "--split",
        default=None,
        help="the folder under --data-dir (default: train, data.train_split)",
    )
    data.add_argument(
        "--num-workers",
        type=int,
        default=None,
        help="DataLoader workers (default: 4, data.num_workers)",
    )
    data.add_argument(
        "--preset", default=None, help="timm|vgg|inception (default: the model's preprocessing)"
    )
    b.add_argument("--json", action="store_true", help="print one JSON object")


def _data_overrides(args: argparse.Namespace) -> dict:
    """The bench flags as config keys of the run the step is taken from."""
    out = {
        "data.train_split": args.split,  # None: the config's defaults (train, 4 workers)
        "data.num_workers": args.num_workers,
        "data.preset": args.preset,
        "data.image_size": args.image_size,
        "model.num_classes": args.num_classes,
        "train.amp": args.amp,
        "train.channels_last": args.channels_last,
        "train.compile": args.compile,
        "train.device": args.device,
    }
    return {k: v for k, v in out.items() if v is not None}


def check_args(args: argparse.Namespace) -> None:
    """Refuse, before torch loads, what would end in a traceback (batch 0: ZeroDivisionError,
    batch -3: RuntimeError), a meaningless figure (0 steps: "0.0 images/s") or be ignored
    silently (image size 0 ran at the model's own; loader flags without a loader)."""
    from classzoo.config import MAX_CLASSES, MAX_IMAGE_SIZE
    from classzoo.errors import UserError

    limits = [
        ("--batch-size", args.batch_size, 1, None),
        ("--steps", args.steps, 1, None),
        ("--warmup", args.warmup, 0, None),
        ("--image-size", args.image_size, 1, MAX_IMAGE_SIZE),  # data.image_size's bounds
        ("--num-classes", args.num_classes, 1, MAX_CLASSES),
        ("--num-workers", args.num_workers, 0, None),
    ]
    for flag, value, lo, hi in limits:
        if value is not None and (value < lo or (hi is not None and value > hi)):
            bound = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise UserError(f"bench {flag} {value}: must be an integer {bound}")
    if args.data_dir is None:
        for flag, value in (("--preset", args.preset), ("--num-workers", args.num_workers)):
            if value is not None:
                raise UserError(
                    f"bench {flag} needs --data-dir: synthetic tensors have no loader "
                    "or preprocessing"
                )
        if args.split is not None:
            raise UserError("bench --split needs --data-dir (the folder it names)")


def run(args: argparse.Namespace) -> int:
    check_args(args)
    from classzoo.config import DataConfig
    from classzoo.engine.threads import choose_wait_policy

    workers = DataConfig().num_workers if args.num_workers is None else args.num_workers
    # before torch loads: on synthetic tensors no loader worker shares the cores
    choose_wait_policy(workers if args.data_dir is not None else 0)
    from classzoo.bench import bench_data, bench_model
    from classzoo.errors import UserError

    if args.data_dir is not None:
        if args.mode != "train":
            raise UserError("classzoo bench --data-dir times training: drop --mode infer")
        r = bench_data(
            args.model,
            args.data_dir,
            args.batch_size,
            _data_overrides(args),
            args.steps,
            args.warmup,
        )
    else:
        r = bench_model(
            args.model,
            args.batch_size,
            args.image_size,
            args.mode,
            args.amp,
            args.channels_last,
            args.steps,
            args.warmup,
            device=args.device,
            num_classes=args.num_classes,
            compile=args.compile,
        )
    if args.json:
        print_json(r)
        return 0
    source = (
        f"{r['data']} ({r['workers']} workers), waiting for data {100 * r['data_wait']:.1f} % of "
        "the time"
        if "data" in r
        else "synthetic tensors"
    )
    print(
        f"{r['model']} {r['mode']} batch {r['batch_size']} {r['image_size']}px amp {r['amp']} "
        f"channels_last {r['channels_last']} compile {r['compile']} on {r['device']} "
        f"({r['threads']} threads: {r['thread_plan']}), {source}: "
        f"{r['images_per_sec']:.1f} images/s, "
        f"{r['tflops']:.3f} TFLOP/s = MFU {100 * r['mfu']:.1f} % of the "
        f"{r['peak_matmul_tflops']:.3f} TFLOP/s measured matmul peak; peak memory "
        f"{r['peak_memory_mb']:.0f} MiB ({r['peak_memory_kind']}); warm-up {r['warmup_s']:.1f} s; host memory: "
        f"{r['host_memory']}"
        + (f"; precision: {r['precision_note']}" if r["precision_note"] else "")
    )
    return 0
