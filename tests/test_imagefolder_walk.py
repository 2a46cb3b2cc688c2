"""An ImageFolder's class folders are walked as torchvision walks them: images in subfolders
belong to their class (classzoo listed only the top level, so ``eval`` scored 5 of 9 images
and ``predict`` of the same folder, which searches recursively, saw all 9). A broken link is
one line naming it before step 1. The truth: torchvision.datasets.ImageFolder's samples.
"""

from __future__ import annotations

import os

import torchvision
from PIL import Image

from classzoo.cli import main
from classzoo.data.imagefolder import ImageFolderDataset
from classzoo.errors import UserError


def _image(path, grey: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (grey, grey, grey)).save(path)


def test_class_folders_are_walked_like_torchvision(tmp_path):
    root = tmp_path / "val"
    for rel in ("a/1.png", "a/sub/2.png", "a/sub-a/3.png", "a/sub/x/4.png", "a/sub2/5.jpg"):
        _image(root / rel, 10)
    for rel in ("b/0.png", "b/deep/er/6.png"):
        _image(root / rel, 200)
    (root / "b" / "notes.txt").write_text("not an image")
    os.symlink(root / "a" / "sub", root / "b" / "linked")  # followed, as followlinks=True
    ours = ImageFolderDataset(root)
    theirs = torchvision.datasets.ImageFolder(str(root))
    assert ours.classes == theirs.classes
    assert list(zip(ours.files, ours.targets.tolist())) == theirs.samples
    assert len(ours) == 9  # 5 + 2 + the 2 under the link


def test_a_broken_link_is_one_line_before_anything_runs(tmp_path, capsys):
    data = tmp_path / "data"
    for split, n in (("train", 4), ("val", 2)):
        for c, grey in (("a", 10), ("b", 200)):
            for i in range(n):
                _image(data / split / c / f"{i}.png", grey)
    os.symlink(tmp_path / "gone.png", data / "train" / "b" / "9.png")
    run = tmp_path / "run"
    argv = ["train", "--recipe", "quickstart", "--data-dir", str(data), "--output-dir", str(run)]
    assert main([*argv, "--set", "data.num_workers=0"]) == UserError.exit_code
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"classzoo: error: image {data / 'train' / 'b' / '9.png'} is a broken link or not a "
        "regular file"
    )
    assert not run.exists()
