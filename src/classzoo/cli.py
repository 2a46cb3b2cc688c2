"""Command line: parses arguments and dispatches to the modules; no logic of its own.

Every :class:`UserError` ends the program with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from classzoo.errors import UserError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="classzoo", description=__import__("classzoo").__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    q = sub.add_parser(
        "quickstart", help="train and evaluate a small ResNet on Fashion-MNIST (minutes, CPU)"
    )
    q.add_argument("--output-dir", default="runs/quickstart")
    q.add_argument(
        "--data-dir", default=None, help="folder with the Fashion-MNIST *-ubyte.gz files"
    )
    q.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    t = sub.add_parser("train", help="train / fine-tune / evaluate a recipe")
    t.add_argument(
        "--recipe", required=True, help="recipe name[:variant] or YAML file (`classzoo recipes`)"
    )
    t.add_argument("--data-dir", default=None)
    t.add_argument("--output-dir", default=None, help="run folder (default runs/<recipe>)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    t.add_argument(
        "--resume", default=None, help="'auto' (newest good checkpoint of the run folder) or a file"
    )
    t.add_argument("--mode", choices=["train", "train_and_evaluate", "evaluate"], default=None)
    t.add_argument("--device", default=None, help="auto|cpu|cuda|npu|mps")
    t.add_argument("--amp", default=None, help="auto|off|bf16|fp16")
    t.add_argument("--epochs", type=float, default=None)
    t.add_argument("--batch-size", type=int, default=None, help="per device")
    t.add_argument("--max-steps", type=int, default=None)
    t.add_argument("--grad-accum-steps", type=int, default=None)
    t.add_argument(
        "--nproc-per-node", type=int, default=None, help="launch this many processes via torchrun"
    )

    e = sub.add_parser(
        "eval", help="evaluate a checkpoint: top-1, top-5, loss over every image once"
    )
    e.add_argument("--checkpoint", required=True)
    e.add_argument("--data-dir", required=True)
    e.add_argument("--recipe", default=None)
    e.add_argument(
        "--model", default=None, help="model name, for checkpoints without a stored config"
    )
    e.add_argument(
        "--split",
        default=None,
        help="split folder / shard prefix (default: the recipe's val split)",
    )
    e.add_argument("--batch-size", type=int, default=None)
    e.add_argument("--device", default="auto")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    e.add_argument(
        "--json", action="store_true", help="print one JSON object {top1, top5, loss, count}"
    )

    c = sub.add_parser("convert", help="convert checkpoints")
    csub = c.add_subparsers(dest="convert_kind", required=True)
    cs = csub.add_parser(
        "slim", help="TF-slim checkpoint (V1 file or V2 prefix) -> classzoo .pt / .safetensors"
    )
    cs.add_argument(
        "--model", required=True, help="resnet_v1_50|resnet_v1_101|resnet_v1_152|inception_v4"
    )
    cs.add_argument("--checkpoint", required=True)
    cs.add_argument("--output", default=None, help="OUT.pt (with config) or OUT.safetensors")
    cs.add_argument(
        "--exclude", nargs="*", default=[], help="slim scopes left at init, e.g. Logits AuxLogits"
    )
    cs.add_argument("--num-classes", type=int, default=None)
    cs.add_argument(
        "--use-ema", action="store_true", help="take the ExponentialMovingAverage shadows"
    )
    cs.add_argument("--list", action="store_true", help="only list the checkpoint's variables")

    d = sub.add_parser("data", help="dataset tools")
    dsub = d.add_subparsers(dest="data_kind", required=True)
    dt = dsub.add_parser("to-tfrecord", help="ImageFolder -> slim-schema TFRecord shards")
    dt.add_argument("imagefolder")
    dt.add_argument("out_dir")
    dt.add_argument("--shards", type=int, required=True)
    dt.add_argument("--split", default="train", help="shard name prefix: train, validation, ...")
    dt.add_argument("--workers", type=int, default=2)
    di = dsub.add_parser(
        "inspect", help="records, classes, label range, image sizes, corrupt records"
    )
    di.add_argument("path")
    di.add_argument("--json", action="store_true")

    b = sub.add_parser("bench", help="model throughput on synthetic tensors")
    b.add_argument("--model", required=True)
    b.add_argument("--batch-size", type=int, default=32)
    b.add_argument("--image-size", type=int, default=None)
    b.add_argument("--mode", choices=["train", "infer"], default="train")
    b.add_argument("--amp", default="off", help="off|bf16|fp16|auto")
    b.add_argument("--channels-last", action="store_true")
    b.add_argument("--steps", type=int, default=10)
    b.add_argument("--device", default="auto")
    b.add_argument("--num-classes", type=int, default=None)
    b.add_argument("--json", action="store_true")

    pr = sub.add_parser("predict", help="top-k classes of images with a checkpoint")
    pr.add_argument("--checkpoint", required=True)
    pr.add_argument("images", nargs="+")
    pr.add_argument("--recipe", default=None)
    pr.add_argument("--model", default=None)
    pr.add_argument("--top-k", type=int, default=5)
    pr.add_argument("--json", action="store_true")

    ex = sub.add_parser("export", help="export a checkpoint (ONNX, dynamic batch)")
    ex.add_argument("--checkpoint", required=True)
    ex.add_argument("--format", choices=["onnx"], default="onnx")
    ex.add_argument("output")
    ex.add_argument("--recipe", default=None)
    ex.add_argument("--model", default=None)

    sub.add_parser("recipes", help="list the recipes shipped with classzoo")
    r = sub.add_parser("report", help="Markdown tables and plots from run folders")
    r.add_argument("run_dirs", nargs="+")
    r.add_argument("--output", default=None, help="folder for report.md and the PNG plots")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _dispatch(args)
    except UserError as exc:
        print(f"classzoo: error: {_one_line(exc)}", file=sys.stderr)
        return UserError.exit_code
    except KeyboardInterrupt:
        print("classzoo: interrupted", file=sys.stderr)
        return 130


def _one_line(exc: Exception) -> str:
    """The user's line, also when a DataLoader worker wrapped the error in its traceback text."""
    text = str(exc)
    marker = "classzoo.errors.UserError: "
    if marker in text:
        text = text.rsplit(marker, 1)[1]
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "quickstart":
        from classzoo.quickstart import quickstart

        quickstart(
            Path(args.output_dir), Path(args.data_dir) if args.data_dir else None, args.overrides
        )
        return 0
    if args.command == "train":
        return _train(args)
    if args.command == "eval":
        from classzoo.engine.eval_checkpoint import eval_checkpoint

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
        if args.json:
            print(json.dumps(result))
        else:
            print(
                f"top1 {result['top1']:.3f}  top5 {result['top5']:.3f}  loss {result['loss']:.4f}  "
                f"count {result['count']}"
            )
        return 0
    if args.command == "convert":
        from classzoo.convert.command import convert_slim, list_checkpoint

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
    if args.command == "data":
        from classzoo.data import tfrecord_tools

        if args.data_kind == "to-tfrecord":
            info = tfrecord_tools.imagefolder_to_tfrecord(
                Path(args.imagefolder),
                Path(args.out_dir),
                args.shards,
                workers=args.workers,
                split=args.split,
            )
            print(
                f"wrote {info['records']} records of {info['classes']} classes to {info['shards']} shards in "
                f"{info['output']}"
            )
            return 0
        info = tfrecord_tools.inspect_tfrecords(args.path)
        print(json.dumps(info, default=str) if args.json else tfrecord_tools.format_inspect(info))
        return 0
    if args.command == "bench":
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
        print(
            json.dumps(r)
            if args.json
            else f"{r['model']} {r['mode']} batch {r['batch_size']} {r['image_size']}px amp {r['amp']} "
            f"channels_last {r['channels_last']} on {r['device']} ({r['threads']} threads): "
            f"{r['images_per_sec']:.1f} images/s"
        )
        return 0
    if args.command == "predict":
        from classzoo.predict import predict

        results = predict(args.checkpoint, args.images, args.recipe, args.model, args.top_k)
        if args.json:
            print(json.dumps(results))
        for r in [] if args.json else results:
            tops = ", ".join(f"{t['class']} {100 * t['prob']:.1f}%" for t in r["top"])
            print(f"{r['image']}: {tops}")
        return 0
    if args.command == "export":
        from classzoo.export import export_onnx

        print(f"wrote {export_onnx(args.checkpoint, args.output, args.recipe, args.model)}")
        return 0
    if args.command == "recipes":
        from classzoo.config import list_recipes

        for name, line in list_recipes().items():
            print(f"{name:32s} {line}")
        return 0
    if args.command == "report":
        from classzoo.report import main_report

        return main_report(args.run_dirs, args.output)
    raise AssertionError(args.command)


def _train(args: argparse.Namespace) -> int:
    if args.nproc_per_node and "LOCAL_RANK" not in os.environ:
        from classzoo.engine.launch import relaunch_with_torchrun

        return relaunch_with_torchrun(args.nproc_per_node, sys.argv[1:])
    from classzoo.config import load_recipe, set_value
    from classzoo.engine.run import run

    cfg = load_recipe(args.recipe, [])
    flags = {
        "data.dir": args.data_dir,
        "train.mode": args.mode,
        "train.device": args.device,
        "train.amp": args.amp,
        "train.epochs": args.epochs,
        "data.batch_size": args.batch_size,
        "train.max_steps": args.max_steps,
        "train.grad_accum_steps": args.grad_accum_steps,
    }
    for key, value in flags.items():
        if value is not None:
            set_value(cfg, key, value, source="command line")
    from classzoo.config import apply_overrides

    apply_overrides(cfg, args.overrides)
    out = (
        Path(args.output_dir)
        if args.output_dir
        else Path("runs") / (cfg.recipe or "run").replace(":", "-")
    )
    run(cfg, out, resume=args.resume)
    return 0
