"""``classzoo data``: write and inspect slim-schema TFRecord shards."""

from __future__ import annotations

import argparse
from pathlib import Path

from classzoo.cli.common import HelpFormatter, add_verb, print_json


def add_parser(subparsers) -> None:
    d = add_verb(subparsers, "data", "dataset tools")
    dsub = d.add_subparsers(dest="data_kind", required=True)
    dt = dsub.add_parser(
        "to-tfrecord",
        help="ImageFolder -> slim-schema TFRecord shards",
        formatter_class=HelpFormatter,
    )
    dt.add_argument("imagefolder", help="folder of class folders of images")
    dt.add_argument("out_dir", help="folder the shards are written to")
    dt.add_argument("--shards", type=int, required=True, help="number of shard files")
    dt.add_argument(
        "--split",
        help="shard name prefix: train, validation, ... (default: train, except for a folder "
        "named like another split, which must say)",
    )
    dt.add_argument("--workers", type=int, default=2, help="encoding processes")
    di = dsub.add_parser(
        "inspect",
        help="records, classes, label range, image sizes, corrupt records",
        formatter_class=HelpFormatter,
    )
    di.add_argument("path", help="a TFRecord file or a folder of shards")
    di.add_argument("--json", action="store_true", help="print one JSON object")


def _default_split(folder: Path) -> str:
    """``train``, unless the folder is named like another split: a ``val`` folder converted
    without ``--split`` became training shards, which a run would train on."""
    from classzoo.errors import UserError

    if folder.resolve().name.lower() in ("val", "validation", "valid", "test", "eval"):
        raise UserError(
            f"{folder} is named like a held-out split but --split defaults to train: give "
            "--split validation (or test), or --split train to write it as training shards"
        )
    return "train"


def run(args: argparse.Namespace) -> int:
    from classzoo.data import tfrecord_tools

    if args.data_kind == "to-tfrecord":
        split = args.split or _default_split(Path(args.imagefolder))
        info = tfrecord_tools.imagefolder_to_tfrecord(
            Path(args.imagefolder),
            Path(args.out_dir),
            args.shards,
            workers=args.workers,
            split=split,
        )
        print(
            f"wrote {info['records']} records of {info['classes']} classes to "
            f"{info['shards']} '{split}' shards in {info['output']}"
            + (
                f"; {info['reencoded']} re-encoded as JPEG quality 100 (not JPEG, or CMYK),"
                " as slim's build_imagenet_data.py does"
                if info["reencoded"]
                else ""
            )
        )
        return 0
    info = tfrecord_tools.inspect_tfrecords(args.path)
    if args.json:
        print_json(info)
    else:
        print(tfrecord_tools.format_inspect(info))
    return 0
