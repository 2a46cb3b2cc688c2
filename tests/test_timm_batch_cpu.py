"""timm's batch stage on a CPU (timm_pipeline.jitter_normalize_cpu: one image at a time, in
place, channels_last out): bit for bit the vectorised batch stage an accelerator runs, and
torchvision's own ColorJitter + Normalize per image (the outside truth)."""

from __future__ import annotations

import torch
from torchvision.transforms import ColorJitter
from torchvision.transforms import functional as F

from classzoo.data.timm_pipeline import color_jitter, jitter_normalize_cpu, normalize, to_unit

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _batch(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(seed)
    images = torch.randint(0, 256, (n, 40, 48, 3), dtype=torch.uint8)
    rows = []
    for _ in range(n):  # timm's draws: ColorJitter(0.4, 0.4, 0.4), no hue
        idx, b, c, s, _ = ColorJitter.get_params((0.6, 1.4), (0.6, 1.4), (0.6, 1.4), None)
        rows.append(torch.tensor([*idx.tolist(), b, c, s], dtype=torch.float32))
    return images, torch.stack(rows)


def test_cpu_batch_stage_equals_vectorised_bit_for_bit():
    images, params = _batch()
    want = normalize(color_jitter(to_unit(images), params, vectorised=True), MEAN, STD)
    got = jitter_normalize_cpu(images.clone(), params, MEAN, STD)
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_cpu_batch_stage_equals_torchvision_per_image():
    images, params = _batch(seed=1)
    got = jitter_normalize_cpu(images, params, MEAN, STD)
    fns = (F.adjust_brightness, F.adjust_contrast, F.adjust_saturation)
    for i in range(len(images)):
        ref = images[i].permute(2, 0, 1).float() / 255
        for op in params[i, :4].long().tolist():
            if op < 3:  # 3 is hue: timm's jitter leaves it off
                ref = fns[op](ref, float(params[i, 4 + op]))
        ref = F.normalize(ref, MEAN, STD)
        torch.testing.assert_close(got[i], ref, rtol=0, atol=1e-6)
