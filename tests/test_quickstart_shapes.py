"""The quickstart recipe's ``data.train_crop: none`` (resize + flip for small centred images)
takes images of any shape: Resize(int) sets the short side only, so one 20x16 image in the
folder stopped training with torch's "stack expects each tensor to be equal size" traceback.
Square images are unchanged by the centre crop added (the truth: torchvision's Resize alone).
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision.transforms as T
from PIL import Image

from classzoo.cli import main
from classzoo.data.transforms import EvalPreprocess, TrainAugment, _timm_train


def test_quickstart_trains_on_images_that_are_not_square(tmp_path):
    data = tmp_path / "data"
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for c in "ab":
            (data / split / c).mkdir(parents=True)
            for i in range(n):
                size = (20, 16) if (split, c, i) == ("train", "a", 0) else (28, 28)
                pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
                Image.fromarray(pixels).save(data / split / c / f"{i}.png")
    argv = ["train", "--recipe", "quickstart", "--data-dir", str(data), "--output-dir"]
    argv += [str(tmp_path / "run"), "--set", "train.epochs=1", "--set", "data.batch_size=4"]
    assert main([*argv, "--set", "data.num_workers=0", "--set", "train.progress=false"]) == 0


def test_square_images_are_only_resized():
    mean = std = (0.5, 0.5, 0.5)
    pre = EvalPreprocess("timm", 32, 1.0, "bilinear", mean, std)
    stage = _timm_train(pre, TrainAugment(train_crop="none", hflip=0.0))
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (28, 28, 3), dtype=np.uint8))
    ours = stage.sample(img)  # HWC uint8, as the workers hand it to the batch stage
    truth = torch.from_numpy(np.asarray(T.Resize(32)(img)))
    assert torch.equal(ours, truth)
