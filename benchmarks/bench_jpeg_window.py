"""JPEG decoding per training crop: the whole image (simplejpeg, the path before) vs the window
the crop reads (classzoo's data/_jpeg_region.c), per training preset, per CPU core.

    python benchmarks/bench_jpeg_window.py                 # 500x375 JPEGs, 5 rounds
    python benchmarks/bench_jpeg_window.py --size 1000x750 --rounds 3

The windows are the ones the presets ask for: each preset samples every image a few times with
the window decoder on, and each call it makes (bytes, scale, DCT, rows, columns) is recorded.
Each round then replays those calls, timed, and decodes the same files at the same scale and
DCT whole with simplejpeg, alternating which goes first; one thread (``time.process_time``).
The images: the 20 ImageNet JPEGs foolbox ships, resized and re-encoded (PIL, quality 90,
4:2:0), as bench_loader.py makes them.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import time
from pathlib import Path

import simplejpeg
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_loader import MEAN, STD, foolbox_jpegs  # noqa: E402
from classzoo.data import jpeg_region  # noqa: E402
from classzoo.data.decode import EncodedImage  # noqa: E402
from classzoo.data.tf_presets import InceptionTrain, VggTrain  # noqa: E402
from classzoo.data.transforms import EvalPreprocess, TrainAugment, build_transform  # noqa: E402


def presets() -> dict:
    timm = EvalPreprocess("timm", 224, 0.875, "bilinear", MEAN, STD)
    aug = TrainAugment(interpolation="random", color_jitter=0.4)  # gluon_resnet50_v1b
    return {
        "timm": build_transform(timm, True, aug),
        "vgg": VggTrain(),
        "inception": InceptionTrain(),
    }


def recorded_calls(preset, images: list[EncodedImage], draws: int) -> list[tuple]:
    """The window decoder's calls (data, denom, fastdct, rows, cols) while ``preset`` samples."""
    calls, real = [], jpeg_region.decode_window

    def spy(*args):
        calls.append(args)
        return real(*args)

    jpeg_region.decode_window = spy
    try:
        for k, img in enumerate(images):
            for d in range(draws):
                torch.manual_seed(1000 * d + k)
                random.seed(1000 * d + k)
                preset.sample(img)
    finally:
        jpeg_region.decode_window = real
    return calls


def window(calls: list[tuple]) -> float:
    t0 = time.process_time()
    for args in calls:
        jpeg_region.decode_window(*args)
    return (time.process_time() - t0) / len(calls)


def whole(calls: list[tuple]) -> float:
    t0 = time.process_time()
    for data, denom, fastdct, _, _ in calls:
        size = {}
        if denom > 1:
            h, w = simplejpeg.decode_jpeg_header(data)[:2]
            size = {"min_height": -(-h // denom), "min_width": -(-w // denom)}
        simplejpeg.decode_jpeg(data, "RGB", fastdct=fastdct, fastupsample=False, **size)
    return (time.process_time() - t0) / len(calls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="500x375", help="the JPEGs' WxH")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--draws", type=int, default=20, help="crops drawn per image")
    args = ap.parse_args()
    if not jpeg_region.available():
        raise SystemExit(f"the JPEG window decoder is {jpeg_region.state()}")
    torch.set_num_threads(1)
    w, h = map(int, args.size.split("x"))
    images = []
    for path in foolbox_jpegs():
        buf = io.BytesIO()
        Image.open(path).convert("RGB").resize((w, h), Image.BICUBIC).save(buf, "JPEG", quality=90)
        images.append(EncodedImage(buf.getvalue(), path.name))
    print(f"bench_jpeg_window: {jpeg_region.state()}, simplejpeg {simplejpeg.__version__}; "
          f"{args.size} JPEGs x {args.draws} crops, 1 thread, medians of {args.rounds} rounds")  # fmt: skip
    print(f"{'preset':>10} {'whole':>9} {'window':>9} {'ratio':>6} {'paired':>7}  (ms per image)")
    for name, preset in presets().items():
        calls = recorded_calls(preset, images, args.draws)
        wholes, windows = [], []
        for r in range(args.rounds):
            if r % 2:
                windows.append(window(calls))
                wholes.append(whole(calls))
            else:
                wholes.append(whole(calls))
                windows.append(window(calls))
        a, b = statistics.median(wholes), statistics.median(windows)
        paired = statistics.median(x / y for x, y in zip(wholes, windows))
        print(f"{name:>10} {a * 1e3:9.3f} {b * 1e3:9.3f} {a / b:5.2f}x {paired:6.2f}x")


if __name__ == "__main__":
    main()
