"""The convolutions whose weight gradient a CPU computes wrongly under bf16 autocast.

Measured on this machine (torch 2.14.1, oneDNN 3.12, AMX Xeon; the same NaN was seen on an
AVX512-BF16 EPYC without AMX): under ``torch.autocast("cpu", torch.bfloat16)`` the weight
gradient of a ``Conv2d`` whose input is **1 pixel wide**, with kernel width > 1 and stride
width > 1 (a padded 3x3 stride-2 convolution on a 1x1 map, e.g. ResNet's layer4 at 16 px),
holds uninitialised memory in the taps that only ever see padding, which must be 0: of 30
trials, 23 gave finite garbage (15 of them from 0.26 to 6e37), 6 NaN or inf, 1 was right. The
forward and the input gradient are right; so is the same convolution on an input 2 pixels wide,
1 pixel high, or with a stride-1 width. fp32 is right everywhere. A finite garbage
gradient trains silently on a wrong update, so such a layer must not train in bf16 on a CPU.

Which layers see such an input depends on the image size, so it is found by one forward pass
at the training size (two black images, training mode, no gradient), before step 1; the
model's buffers and the random streams are left as they were.
"""

from __future__ import annotations

import logging

import torch
from timm.layers import Conv2dSame, get_same_padding
from torch import nn

from classzoo.engine.precision import resolve_amp

log = logging.getLogger("classzoo")


def wrong_bf16_weight_grad(conv: nn.Conv2d, x: torch.Tensor) -> bool:
    """True for a convolution and input of the shape above, grouped and depthwise ones
    included (a depthwise 3x3/2 on a 1x1 map: wrong in 16 of 40 trials on one thread, right in
    40 of 40 on two). timm's ``Conv2dSame`` pads its input itself before convolving, so the
    width that counts is the padded one (right in 40 of 40 on one thread)."""
    width = x.shape[-1]
    # Conv2dSame; StdConv2dSame and ScaledStdConv2dSame (nfnets, vit hybrids) with same_pad
    if isinstance(conv, Conv2dSame) or getattr(conv, "same_pad", False) is True:
        width += get_same_padding(width, conv.kernel_size[1], conv.stride[1], conv.dilation[1])
    return width == 1 and conv.kernel_size[1] > 1 and conv.stride[1] > 1


def convs_wrong_in_cpu_bf16(model: nn.Module, image_size: int) -> list[str]:
    """Names of the Conv2d layers of ``model`` that would train on a wrong weight gradient in
    bf16 on a CPU at ``image_size`` px (RGB inputs, as every loader gives). [] if the probing
    forward fails: the first training step then reports why."""
    found: list[str] = []
    hooks = [
        m.register_forward_pre_hook(
            lambda mod, args, name=name: (
                found.append(name) if wrong_bf16_weight_grad(mod, args[0]) else None
            )
        )
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
    ]
    saved = [b.detach().clone() for b in model.buffers()]  # batch norm's running statistics
    was_training = model.training
    try:  # batch 2: batch norm in training mode needs 2 values per channel on a 1x1 map
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            model.train()(torch.zeros(2, 3, image_size, image_size))
    except Exception as exc:  # noqa: BLE001 - a probe; training's own forward reports it
        log.warning("could not check the network's bf16 gradients at %d px: %s", image_size, exc)
        return []
    finally:
        for h in hooks:
            h.remove()
        with torch.no_grad():
            for b, value in zip(model.buffers(), saved):
                b.copy_(value)
        model.train(was_training)
    return found


def cpu_training_check(model: nn.Module, amp: str, device: torch.device, size: int) -> list[str]:
    """:func:`convs_wrong_in_cpu_bf16` where ``amp`` trains in bf16 on a CPU, else []."""
    if device.type != "cpu" or resolve_amp(amp, device) != torch.bfloat16:
        return []
    return convs_wrong_in_cpu_bf16(model, size)
