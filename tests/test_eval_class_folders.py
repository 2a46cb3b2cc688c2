"""``classzoo eval`` on an ImageFolder scores each class folder against the logit of its class,
matched by name, never by the folder's position among the folders present.

Before, a validation folder that lacked one training class, or ImageNet synset folders under
slim's 1001-logit head (background at 0), shifted every label after the gap and printed a wrong
top-1 without an error (33 % instead of 100 %); a checkpoint whose classifier had another size
was evaluated with a head left at its random initialisation. The truths: a run that scores 100 %
on its full validation folder scores 100 % on any subset of it, and a probe whose logits are
worked out by hand from each image's grey level.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from torch import nn

from classzoo.cli import main
from classzoo.data.class_index import imagenet_classes
from classzoo.errors import UserError
from classzoo.models.registry import registered_model
from conftest import write_imagefolder

LEVELS = (30, 128, 220)  # grey levels of the probe's three classes
EXIT_USER_ERROR = UserError.exit_code  # 2
SYNSETS = [imagenet_classes()[i][0] for i in (7, 400, 901)]  # sorted, as ImageFolder sorts


def _cli(capsys, argv: list[str]) -> tuple[int, str]:
    """Exit code and what the user sees (the log on stderr, the result on stdout)."""
    code = main(argv)
    seen = capsys.readouterr()
    return code, seen.err + seen.out


def _top1(err: str) -> float:
    line = next(x for x in err.splitlines() if x.startswith("top1 "))
    return float(line.split()[1])


def test_a_subset_of_the_training_classes_is_scored_by_class_name(tmp_path, capsys):
    data = tmp_path / "data"
    write_imagefolder(data / "train", dict.fromkeys("abcd", 12), seed=1)
    write_imagefolder(data / "val", dict.fromkeys("abcd", 6), seed=2)
    subset = tmp_path / "subset"
    shutil.copytree(data / "val", subset / "val")
    shutil.rmtree(subset / "val" / "b")  # c and d keep their own images, now 2nd and 3rd
    run = tmp_path / "run"
    train = ["train", "--recipe", "gluon_resnet50_v1b", "--data-dir", str(data)]
    train += ["--output-dir", str(run), "--max-steps", "30", "--batch-size", "8", "--amp", "off"]
    train += ["--device", "cpu", "--set", "model.name=resnet10t", "--set", "data.image_size=32"]
    train += ["--set", "model.num_classes=1001"]  # more logits than folders, as recipes may set
    assert main([*train, "--set", "data.num_workers=0", "--set", "train.progress=false"]) == 0
    ckpt = str(run / "checkpoints" / "ckpt-000000030.pt")
    capsys.readouterr()
    evaluate = ["eval", "--checkpoint", ckpt, "--set", "data.num_workers=0", "--data-dir"]
    code, err = _cli(capsys, [*evaluate, str(data)])
    assert code == 0 and _top1(err) == 100.0  # the truth the subset must keep
    code, err = _cli(capsys, [*evaluate, str(subset)])
    assert code == 0, err
    assert "labels 0..3 (by name, to the checkpoint's classes)" in err
    assert _top1(err) == 100.0  # by folder position: c -> b's logit, d -> c's: 33.33 %
    # the reference's evaluate mode, over the run's checkpoints folder
    mode = ["train", "--recipe", "gluon_resnet50_v1b", "--mode", "evaluate", "--device", "cpu"]
    mode += ["--data-dir", str(subset), "--set", f"model.checkpoint={run / 'checkpoints'}"]
    mode += ["--set", "model.name=resnet10t", "--set", "data.image_size=32"]
    mode += ["--set", "data.num_workers=0", "--set", "train.progress=false", "--output-dir"]
    code, err = _cli(capsys, [*mode, str(tmp_path / "ev1")])
    assert code == EXIT_USER_ERROR and not (tmp_path / "ev1").exists()
    assert "has 1001 logits, the model 3: set model.num_classes=1001" in err
    code, err = _cli(capsys, [*mode, str(tmp_path / "ev2"), "--set", "model.num_classes=1001"])
    assert code == 0, err
    assert "ckpt-000000030.pt: step 30 top1 100.000" in err
    # the record names what was evaluated (it said "weights: random init (seed 0)")
    n = len(list((run / "checkpoints").glob("ckpt-*.pt")))
    assert f"weights: each of the {n} checkpoint(s) in {run / 'checkpoints'}, loaded" in err
    # predict names the logits after the run's folders, not ImageNet's 1001 (background first)
    image = str(next((data / "val" / "c").iterdir()))
    code, out = _cli(capsys, ["predict", "--checkpoint", ckpt, image, "--format", "json"])
    assert code == 0, out
    assert json.loads(out[out.index("[") :])[0]["top"][0]["class"] == "c"  # old: "goldfish"
    (subset / "val" / "e").mkdir()
    shutil.copy(next((subset / "val" / "a").iterdir()), subset / "val" / "e")
    code, err = _cli(capsys, [*evaluate, str(subset)])
    assert code == EXIT_USER_ERROR
    assert err.strip().endswith("have no logit to be scored by")
    assert f"class folder {subset / 'val'}/e is not one of the 4 classes" in err


class _Probe(nn.Sequential):
    """Mean grey level -> logits, with timm's ``num_classes`` and ``get_classifier``."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, num_classes))
        self.num_classes = num_classes

    def get_classifier(self) -> nn.Module:
        return self[2]


@pytest.fixture
def synset_probe(tmp_path):
    """Three ImageNet synset folders of constant grey images, one grey level each."""
    defaults = {"input_size": (3, 8, 8), "crop_pct": 1.0, "mean": (0,) * 3, "std": (1,) * 3}
    with registered_model("test_synset_probe", _Probe, {**defaults, "preset": "timm"}):
        for synset, level in zip(SYNSETS, LEVELS):
            (tmp_path / "val" / synset).mkdir(parents=True)
            for i in range(4):
                pixels = np.full((8, 8, 3), level, np.uint8)
                Image.fromarray(pixels).save(tmp_path / "val" / synset / f"{i}.png")
        yield tmp_path


def _probe_file(path, num_classes: int, logits: list[int]) -> str:
    """Weights whose top-1 for grey level x (in [0, 1]) is logits[0] below 0.4, logits[1] up to
    0.6, logits[2] above (by hand: 4 - 10x, 0 and 10x - 6 over a floor of -100)."""
    model = _Probe(num_classes)
    with torch.no_grad():
        model[2].weight.zero_()
        model[2].bias.fill_(-100.0)
        for row, w, b in zip(logits, (-10.0, 0.0, 10.0), (4.0, 0.0, -6.0)):
            model[2].weight[row] = w / 3  # the pooled input holds x in each of 3 channels
            model[2].bias[row] = b
    save_file(model.state_dict(), str(path))
    return str(path)


def test_imagenet_synset_folders_are_scored_by_imagenet_index(synset_probe, capsys):
    root = synset_probe
    base = ["eval", "--model", "test_synset_probe", "--data-dir", str(root)]
    base += ["--set", "data.num_workers=0", "--checkpoint"]
    # timm's 1000 logits: synset k is logit k (folder order would give 0, 1, 2: 0 %)
    code, err = _cli(capsys, [*base, _probe_file(root / "timm.safetensors", 1000, [7, 400, 901])])
    assert code == 0, err
    assert "labels 7..901 (by name, to ImageNet-1k's synsets)" in err
    assert _top1(err) == 100.0
    # slim's 1001 logits: background at 0, synset k at k + 1
    slim = _probe_file(root / "slim.safetensors", 1001, [8, 401, 902])
    code, err = _cli(capsys, [*base, slim])
    assert code == EXIT_USER_ERROR  # the probe's own head has 1000 logits
    assert "set model.num_classes=1001 to use it" in err.strip().splitlines()[-1]
    code, err = _cli(capsys, [*base, slim, "--set", "model.num_classes=1001"])
    assert code == 0, err
    assert "labels 8..902 (by name, to ImageNet-1k's synsets (slim: background at 0))" in err
    assert _top1(err) == 100.0


def test_a_plain_state_dict_of_other_classes_is_refused(synset_probe, capsys):
    root = synset_probe
    for synset, name in zip(SYNSETS, "xyz"):
        (root / "val" / synset).rename(root / "val" / name)  # no longer ImageNet's names
    ckpt = _probe_file(root / "four.safetensors", 4, [0, 1, 3])
    base = ["eval", "--model", "test_synset_probe", "--data-dir", str(root), "--checkpoint", ckpt]
    code, err = _cli(capsys, [*base, "--set", "data.num_workers=0"])
    assert code == EXIT_USER_ERROR  # 3 folders: a 3-logit model; a 4-logit head left at init
    assert "set model.num_classes=4 to use it" in err.strip().splitlines()[-1]
    code, err = _cli(capsys, [*base, "--set", "data.num_workers=0", "--set", "model.num_classes=4"])
    assert code == EXIT_USER_ERROR
    assert "has 3 class folders and the model 4 logits" in err.strip().splitlines()[-1]


def test_training_on_imagenet_synset_folders_keeps_a_pretrained_1001_head(synset_probe, capsys):
    """Fine-tuning slim's 1001-logit head on ImageNet synset folders: the folders are labelled
    with their ImageNet logit (background at 0), not their position. By hand: the probe's
    pretrained head scores each grey level's synset k at logit k + 1, so one step at the warm-up
    lr evaluates at 100 %; labelled by folder position (0, 1, 2) it scored 0 %."""
    root = synset_probe
    shutil.copytree(root / "val", root / "train")
    slim = _probe_file(root / "slim.safetensors", 1001, [8, 401, 902])
    run = root / "run"
    args = ["train", "--recipe", "gluon_resnet50_v1b", "--data-dir", str(root), "--max-steps", "1"]
    args += ["--output-dir", str(run), "--batch-size", "4", "--amp", "off", "--device", "cpu"]
    for o in ("model.name=test_synset_probe", "model.num_classes=1001", f"model.checkpoint={slim}",
              "data.num_workers=0", "train.progress=false"):  # fmt: skip
        args += ["--set", o]
    code, err = _cli(capsys, args)
    assert code == 0, err
    assert "labels 8..902 (by name, to ImageNet-1k's synsets (slim: background at 0))" in err
    assert "top1 100.00" in err
    record = (run / "resolved.yaml").read_text()
    assert "- background\n- n01440764\n" in record  # the logits' names, kept in the checkpoint
    ckpt = str(run / "checkpoints" / "ckpt-000000001.pt")
    code, err = _cli(capsys, ["eval", "--checkpoint", ckpt, "--data-dir", str(root)])
    assert code == 0 and _top1(err) == 100.0, err


def test_weights_without_class_names_need_the_order_where_timm_and_torchvision_differ(
    tmp_path, capsys
):
    """Folders c2, c3, c10: torchvision's ImageFolder numbers them c10, c2, c3 (sorted names),
    timm's ImageDataset c2, c3, c10 (natural order). Weights trained by timm scored 0 % where
    timm scores 100 %, without an error. The truth: timm's own reader's class_to_idx."""
    from timm.data.readers.reader_image_folder import find_images_and_targets

    defaults = {"input_size": (3, 8, 8), "crop_pct": 1.0, "mean": (0,) * 3, "std": (1,) * 3}
    for name, level in zip(("c2", "c3", "c10"), LEVELS):  # level k: logit k (_probe_file)
        (tmp_path / "val" / name).mkdir(parents=True)
        for i in range(4):
            pixels = np.full((8, 8, 3), level, np.uint8)
            Image.fromarray(pixels).save(tmp_path / "val" / name / f"{i}.png")
    _, timm_index = find_images_and_targets(str(tmp_path / "val"))
    assert timm_index == {"c2": 0, "c3": 1, "c10": 2}  # the order the weights were trained in
    with registered_model("test_order_probe", _Probe, {**defaults, "preset": "timm"}):
        weights = _probe_file(tmp_path / "w.safetensors", 3, [0, 1, 2])
        evaluate = ["eval", "--checkpoint", weights, "--model", "test_order_probe"]
        evaluate += ["--set", "model.num_classes=3", "--data-dir", str(tmp_path)]
        evaluate += ["--set", "data.num_workers=0", "--device", "cpu"]
        code, err = _cli(capsys, evaluate)
        assert code == EXIT_USER_ERROR
        assert "logit 0 is folder 'c10' in torchvision's sorted order but 'c2' in timm's" in err
        code, err = _cli(capsys, [*evaluate, "--set", "data.class_order=natural"])
        assert code == 0 and _top1(err) == 100.0, err
        assert "natural order 0..N-1 (timm's ImageDataset)" in err
        code, err = _cli(capsys, [*evaluate, "--set", "data.class_order=sorted"])
        assert code == 0 and _top1(err) == 0.0  # what the user asked for, said in the log
        assert "sorted folder names 0..N-1 (torchvision's rule)" in err


def test_fine_tuning_a_kept_head_needs_the_order_where_the_two_differ(tmp_path, capsys):
    """A timm head trained on c1, c2, c10 (timm's order) was fine-tuned with the folders in
    torchvision's order (c1, c10, c2) without a word: every logit after the first permuted."""
    write_imagefolder(tmp_path / "data" / "train", dict.fromkeys(("c1", "c2", "c10"), 2), seed=1)
    write_imagefolder(tmp_path / "data" / "val", dict.fromkeys(("c1", "c2", "c10"), 1), seed=2)
    weights = tmp_path / "timm3.pth"
    torch.save(timm.create_model("resnet10t", num_classes=3).state_dict(), weights)
    argv = ["train", "--recipe", "gluon_resnet50_v1b", "--data-dir", str(tmp_path / "data")]
    argv += ["--max-steps", "1", "--batch-size", "2", "--amp", "off", "--device", "cpu"]
    argv += ["--set", "model.name=resnet10t", "--set", "data.image_size=32"]
    argv += ["--set", f"model.checkpoint={weights}", "--set", "data.num_workers=0"]
    code, err = _cli(capsys, [*argv, "--output-dir", str(tmp_path / "r1")])
    assert code == EXIT_USER_ERROR and not (tmp_path / "r1").exists()
    assert "the weights' classifier is kept" in err and "data.class_order" in err
    code, err = _cli(capsys, [*argv, "--output-dir", str(tmp_path / "r2"), "--set", "data.class_order=natural"])  # fmt: skip
    assert code == 0, err
    assert "classes c1, c2, c10" in err


def test_fine_tuning_a_kept_head_follows_the_class_names_its_checkpoint_stores(tmp_path, capsys):
    """A classzoo checkpoint names the class of each logit. Fine-tuned with its head kept on
    folders of other names, or in another order, every label was scored against another class's
    logit without a word. The truth: the names run A recorded for its logits."""
    names = ("c1", "c2", "c10")
    write_imagefolder(tmp_path / "a" / "train", dict.fromkeys(names, 2), seed=1)
    write_imagefolder(tmp_path / "b" / "train", dict.fromkeys(("x", "y", "z"), 2), seed=1)
    base = ["train", "--recipe", "gluon_resnet50_v1b", "--max-steps", "1", "--batch-size", "2"]
    base += ["--amp", "off", "--device", "cpu", "--set", "model.name=resnet10t"]
    base += ["--set", "data.image_size=32", "--set", "data.num_workers=0"]
    base += ["--set", "train.mode=train", "--set", "train.progress=false"]
    run_a = ["--data-dir", str(tmp_path / "a"), "--set", "data.class_order=natural"]
    assert main([*base, *run_a, "--output-dir", str(tmp_path / "runa")]) == 0
    ckpt = str(tmp_path / "runa" / "checkpoints" / "ckpt-000000001.pt")
    capsys.readouterr()
    tune = [*base, "--set", f"model.checkpoint={ckpt}", "--output-dir"]
    code, err = _cli(capsys, [*tune, str(tmp_path / "r1"), "--data-dir", str(tmp_path / "b")])
    assert code == EXIT_USER_ERROR and not (tmp_path / "r1").exists(), err
    assert f"checkpoint {ckpt}: its classifier was trained on classes c1, c2, c10" in err
    assert "'x'" in err and "model.exclude=fc" in err
    # another layer left at init keeps the classifier: the same refusal (it trained on before)
    again = [*tune, str(tmp_path / "r6"), "--data-dir", str(tmp_path / "b")]
    code, err = _cli(capsys, [*again, "--set", "model.exclude=layer4"])
    assert code == EXIT_USER_ERROR and not (tmp_path / "r6").exists(), err
    assert "its classifier was trained on classes c1, c2, c10" in err
    code, err = _cli(capsys, [*tune, str(tmp_path / "r2"), *run_a[:2], "--set", "data.class_order=sorted"])  # fmt: skip
    assert code == EXIT_USER_ERROR and not (tmp_path / "r2").exists(), err
    assert "logit 1 is 'c2' there and 'c10' here: set data.class_order=natural" in err
    code, err = _cli(capsys, [*tune, str(tmp_path / "r3"), *run_a])  # the same classes, in order
    assert code == 0, err
    write_imagefolder(tmp_path / "c" / "train", dict.fromkeys(("c1", "c2"), 2), seed=1)
    first_two = ["--data-dir", str(tmp_path / "c"), "--set", "data.class_order=natural"]
    first_two += ["--set", "model.num_classes=3"]  # folder k is still logit k: c10's is spare
    code, err = _cli(capsys, [*tune, str(tmp_path / "r5"), *first_two])
    assert code == 0, err
    code, err = _cli(capsys, [*tune, str(tmp_path / "r4"), "--data-dir", str(tmp_path / "b"), "--set", "model.exclude=fc"])  # fmt: skip
    assert code == 0, err  # a new classifier, left at its initialisation, as asked


def test_tfrecord_labels_are_checked_against_the_class_names_the_checkpoint_stores(
    tmp_path, capsys
):
    """`data to-tfrecord` numbers the folders it is given in sorted order: a val subset of
    classes a, c was written as 1:a, 2:c, and scored 50 % against the logits of a, b (100 % as
    an ImageFolder) without a word. The truth: the class names run A stored for its logits."""
    write_imagefolder(tmp_path / "d" / "train", dict.fromkeys("abc", 4), seed=1)
    write_imagefolder(tmp_path / "d" / "val", dict.fromkeys("abc", 2), seed=2)
    write_imagefolder(tmp_path / "sub" / "val", dict.fromkeys("ac", 2), seed=2)
    train = ["train", "--recipe", "quickstart", "--data-dir", str(tmp_path / "d"), "--device"]
    train += ["cpu", "--set", "train.max_steps=1", "--set", "data.batch_size=4"]
    train += ["--set", "data.num_workers=0", "--set", "train.progress=false", "--output-dir"]
    assert main([*train, str(tmp_path / "run")]) == 0
    for src, out in (("sub", "t_sub"), ("d", "t_all")):
        argv = ["data", "to-tfrecord", str(tmp_path / src / "val"), str(tmp_path / out)]
        assert main([*argv, "--shards", "1", "--split", "validation"]) == 0
    capsys.readouterr()
    ev = ["eval", "--checkpoint", str(tmp_path / "run"), "--device", "cpu", "--set"]
    ev += ["data.source=tfrecord", "--set", "data.label_offset=1", "--data-dir"]
    code, err = _cli(capsys, [*ev, str(tmp_path / "t_sub")])
    assert code == EXIT_USER_ERROR, err
    assert "labels.txt gives 'c' label 2 (logit 1 under label_offset 1), but the checkpoint's " in err  # fmt: skip
    assert "logit 1 is 'b' (its 'c' is logit 2)" in err
    code, err = _cli(capsys, [*ev, str(tmp_path / "t_all")])  # numbered as the run was
    assert code == 0 and "count 6" in err, err
    folder = ["eval", "--checkpoint", str(tmp_path / "run"), "--device", "cpu", "--data-dir"]
    code, same = _cli(capsys, [*folder, str(tmp_path / "d")])  # the same images, by name
    assert code == 0 and _top1(same) == _top1(err)
    no_offset = [*ev[:7], "--data-dir"]  # data.source=tfrecord, label_offset left at 0
    code, err = _cli(capsys, [*no_offset, str(tmp_path / "t_all")])
    assert code == EXIT_USER_ERROR and "label k + 1: set data.label_offset=1" in err, err
    # slim's imagenet.get_split writes its own labels.txt (human-readable names) beside the
    # shards: another naming, which says nothing about these logits
    (tmp_path / "t_all" / "labels.txt").write_text("0:background\n1:tench, Tinca tinca\n")
    code, err = _cli(capsys, [*ev, str(tmp_path / "t_all")])
    assert code == 0 and _top1(same) == _top1(err), err
