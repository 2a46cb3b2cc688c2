"""Mixed precision and memory layout on this machine: images/s of fp32 (the peer), bf16 autocast
and channels_last, for the quickstart network and ResNet-50, training and inference.

    python benchmarks/bench_amp.py [--steps 10]

Prints a Markdown table with each setting's ratio to fp32 / NCHW measured in the same run.
"""

from __future__ import annotations

import argparse
import platform

import torch

from classzoo.bench import bench_model

CASES = [  # (label, model, batch, image size, num_classes)
    ("quickstart resnet10t/4, 32 px", "resnet10t", 128, 32, 10),
    ("resnet50, 224 px", "resnet50", 16, 224, 1000),
]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    args = p.parse_args()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    )
    print("\n| network | mode | setting | images/s | vs fp32 NCHW |\n|---|---|---|---:|---:|")
    for label, name, batch, size, classes in CASES:
        for mode in ("train", "infer"):
            base = None
            for amp, cl in (("off", False), ("off", True), ("bf16", False), ("bf16", True)):
                r = _bench(name, batch, size, mode, amp, cl, args.steps, classes)
                base = base or r
                setting = f"{'bf16' if amp == 'bf16' else 'fp32'}{' channels_last' if cl else ''}"
                print(f"| {label} | {mode} | {setting} | {r:.1f} | {r / base:.2f}x |")


def _bench(name, batch, size, mode, amp, cl, steps, classes) -> float:
    if name == "resnet10t":
        import timm

        from classzoo.models.registry import register_model, registry

        if "bench_quickstart_net" not in registry():
            register_model(
                "bench_quickstart_net",
                lambda **kw: timm.create_model("resnet10t", channels=(32, 64, 128, 256), **kw),
                {"input_size": (3, 32, 32)},
            )
        name = "bench_quickstart_net"
    r = bench_model(
        name, batch, size, mode, amp, cl, steps=steps, warmup=3, device="cpu", num_classes=classes
    )
    return r["images_per_sec"]


if __name__ == "__main__":
    main()
