"""The recipes hold the references' hyper-parameters, and their lr schedules are the references'.

Schedules are computed without training: ``build_optimizer`` + ``build_scheduler`` + ``lr_at``
with the real ImageNet train size and each recipe's global batch, compared at five points with
the reference's own formula written out here:

* InceptionV4 (Ascend TF reference): ``0.045 * 0.5 * (1 + cos(pi * epoch / T_max))``, T_max 100.
  Its log shows the value per whole epoch (``lr:0.04411`` all through epoch 9.x, ``lr:0.04390``
  from epoch 10.0), so the points are epoch boundaries, where classzoo's per-step cosine and the
  reference's per-epoch one coincide.
* Gluon ResNet50_v1b (timm train.py, per epoch): warmup ``warmup_lr + e * (lr - warmup_lr) / 3``
  for e < 3, then ``min_lr + 0.5 * (lr - min_lr) * (1 + cos(pi * e / 90))`` (timm's
  CosineLRScheduler without warmup_prefix: the cosine counts from epoch 0).
* ResNet-152 fine-tune: constant 1e-4. From scratch: ``0.1 * 0.1 ** (epoch // 30)``.
"""

from __future__ import annotations

import inspect
import math

import pytest
from torch import nn

from classzoo.config import load_recipe
from classzoo.engine.loop import steps_per_epoch
from classzoo.engine.optim import build_optimizer, build_scheduler, lr_at, scaled_lr
from classzoo.models.registry import registry
from classzoo.models.slim_inception_v4 import SlimInceptionV4

IMAGENET_TRAIN = 1_281_167  # ILSVRC-2012 train images


def schedule(recipe: str, world_size: int):
    """(lr of step s, steps per epoch) for ``recipe`` on ``world_size`` devices."""
    cfg = load_recipe(recipe)
    global_batch = cfg.data.batch_size * world_size
    # classzoo keeps the last, smaller batch of an epoch (data/sampling.py): ceil, not floor
    spe = math.ceil(IMAGENET_TRAIN / global_batch)
    assert steps_per_epoch(IMAGENET_TRAIN, cfg.data.batch_size, world_size, 1) == spe
    opt = build_optimizer(nn.Linear(2, 2), cfg.optim, scaled_lr(cfg.optim, global_batch))
    sched = build_scheduler(opt, cfg.sched, cfg.train.epochs, spe)
    return (lambda step: lr_at(sched, opt, step)), spe


def inception_reference(epoch: float) -> float:
    return 0.045 * 0.5 * (1 + math.cos(math.pi * epoch / 100))


@pytest.mark.parametrize(
    ("recipe", "world_size", "spe"), [("inception_v4", 1, 10010), ("inception_v4:8p", 8, 2503)]
)
def test_inception_v4_cosine(recipe, world_size, spe):
    lr, got_spe = schedule(recipe, world_size)
    assert got_spe == spe  # 128 x 1 and 64 x 8: 0.045 either way (no scaling rule)
    for epoch in (0, 1, 9, 10, 50, 99):
        assert lr(epoch * spe) == pytest.approx(inception_reference(epoch), rel=1e-9, abs=1e-12)
    # the values the reference logged (5 digits): epoch 1.2 -> 0.04499, 9.6 -> 0.04411, 10.0 -> 0.04390
    assert [round(lr(e * spe), 5) for e in (1, 9, 10)] == [0.04499, 0.04411, 0.04390]
    assert lr(100 * spe) == 0.0  # T_max = 100 epochs = the whole run


def gluon_reference(epoch: int, base: float) -> float:
    warmup_lr, min_lr, warmup = 1e-4, 1e-5, 3  # timm train.py defaults of the reference's era
    if epoch < warmup:
        return warmup_lr + epoch * (base - warmup_lr) / warmup
    return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * epoch / 90))


@pytest.mark.parametrize(("world_size", "base", "spe"), [(8, 1.6, 626), (1, 0.2, 5005)])
def test_gluon_resnet50_v1b_warmup_cosine(world_size, base, spe):
    lr, got_spe = schedule("gluon_resnet50_v1b", world_size)
    assert got_spe == spe  # 256 per device
    for epoch in (0, 1, 3, 45, 89):
        assert lr(epoch * spe) == pytest.approx(gluon_reference(epoch, base), rel=1e-9)
    assert lr(90 * spe) == pytest.approx(1e-5)  # no cooldown: min lr only after the 90 epochs


def test_resnet152_finetune_constant():
    lr, spe = schedule("resnet152_slim_finetune", 1)
    assert spe == 10010  # batch 128 on one device
    for step in (0, 1, spe, 2 * spe + 5, 4 * spe - 1):
        assert lr(step) == 1e-4


def test_resnet152_scratch_step_decay():
    lr, spe = schedule("resnet152_slim_scratch", 8)
    assert spe == 5005  # 32 x 8 = 256, the paper's batch: lr 0.1
    for step in (0, 30 * spe - 1, 30 * spe, 60 * spe, 89 * spe):
        assert lr(step) == pytest.approx(0.1 * 0.1 ** (step // (30 * spe)), rel=1e-12)


# ---- every hyper-parameter of reference/recipes.md is in the recipe ------------------------

RECIPE_FACTS = {
    "resnet152_slim_finetune": {
        "model.name": "resnet_v1_152",  # TF-slim resnet_v1_152
        "model.num_classes": 1000,  # 1000 classes
        "data.label_offset": 1,  # TFRecord labels 1..1000 -> logit label-1
        "data.source": "tfrecord",  # a folder of TFRecord shards
        "data.preset": "vgg",  # slim's own eval preprocessing (the reference's gap)
        "data.batch_size": 128,  # reference run: batch 128
        "optim.lr": 1e-4,  # lr 1e-4
        "optim.momentum": 0.0,  # run_resnet.py: GradientDescentOptimizer
        "optim.weight_decay": 0.0,  # no regularization losses in its loss
        "optim.lr_base_batch": None,
        "sched.name": "const",
        "train.epochs": 4.0,  # 4 epochs
    },
    "resnet152_slim_scratch": {  # He et al. 2016 sec. 3.4
        "model.name": "resnet_v1_152",
        "model.num_classes": 1000,
        "data.label_offset": 1,
        "optim.name": "momentum",
        "optim.momentum": 0.9,
        "optim.lr": 0.1,
        "optim.lr_base_batch": 256,
        "optim.weight_decay": 1e-4,
        "sched.name": "step",
        "sched.decay_epochs": 30.0,
        "sched.decay_rate": 0.1,
        "train.epochs": 90.0,
    },
    "inception_v4": {
        "model.name": "inception_v4",
        "model.num_classes": 1001,  # 0 = background
        "model.drop_rate": None,  # -> the model's 0.2 (dropout keep 0.8), checked below
        "data.label_offset": 0,
        "data.source": "tfrecord",
        "data.train_split": "train",  # train-00000-of-01024 ...
        "data.val_split": "validation",  # validation-00000-of-00128 ...
        "data.preset": "inception",
        "data.image_size": None,  # -> the model's 299, checked below
        "optim.name": "rmsproptf",  # TF RMSProp semantics
        "optim.alpha": 0.9,  # decay 0.9
        "optim.momentum": 0.9,
        "optim.eps": 1.0,
        "optim.nesterov": None,  # rmsproptf has no Nesterov form
        "optim.lr": 0.045,
        "optim.lr_base_batch": None,
        "optim.weight_decay": 1e-5,
        "sched.name": "cosine",
        "sched.t_max": 100.0,
        "train.label_smoothing": 0.1,
        "train.aux_loss_weight": 0.4,  # aux logits on Mixed_6h, slim's trainer weight
        "data.batch_size": 128,  # one device
        "train.epochs": 100.0,
        "train.amp": "auto",  # mixed precision
        "train.mode": "train_and_evaluate",
        "train.ckpt_every_steps": None,  # a checkpoint each epoch
        "train.keep_max": 5,  # keep 5
    },
    "inception_v4:8p": {"data.batch_size": 64, "optim.lr": 0.045},  # 64 x 8
    "gluon_resnet50_v1b": {
        "model.name": "resnet50",  # timm resnet50 = gluon_resnet50_v1b's layout
        "data.source": "imagefolder",
        "data.train_split": "train",
        "data.val_split": "val",
        "data.batch_size": 256,  # per device, 1p and 8p
        "optim.lr": 1.6,  # at 8 x 256
        "optim.lr_base_batch": 2048,
        "sched.name": "cosine",
        "sched.cooldown_epochs": 0.0,
        "train.epochs": 90.0,
        "train.amp": "auto",  # AMP (the reference's apex O2: see docs/recipes.md)
        # "log interval 1" is the launch scripts' --log-interval 1 (test_reference_scripts.py);
        # the recipe logs every 50 steps by default.
    },
}


@pytest.mark.parametrize("recipe", list(RECIPE_FACTS))
def test_recipe_holds_the_reference_hyper_parameters(recipe):
    cfg = load_recipe(recipe)
    for key, want in RECIPE_FACTS[recipe].items():
        section, name = key.split(".")
        assert getattr(getattr(cfg, section), name) == want, key


def test_inception_v4_model_decides_299_px_and_dropout_keep_0_8():
    entry = registry()["inception_v4"]
    assert entry.defaults["input_size"][-1] == 299 and entry.defaults["crop_pct"] == 0.875
    init = inspect.signature(SlimInceptionV4.__init__)
    assert init.parameters["drop_rate"].default == pytest.approx(1 - 0.8)


@pytest.mark.parametrize(
    "recipe",
    ["resnet152_slim_finetune", "resnet152_slim_scratch", "inception_v4", "gluon_resnet50_v1b"],
)
def test_smoke_variant_loads(recipe):
    cfg = load_recipe(f"{recipe}:smoke")
    assert cfg.recipe == f"{recipe}:smoke"
    assert cfg.data.source == "synthetic" and cfg.train.max_steps is not None
    assert cfg.train.max_steps <= 3


def test_performance_variant_is_a_short_training_run():
    cfg = load_recipe("gluon_resnet50_v1b:performance")
    assert (cfg.train.mode, cfg.train.max_steps) == ("train", 500)


def test_the_logged_lr_is_the_one_each_step_used(tmp_path, small_imagefolder):
    """train.log / metrics.jsonl give each step's lr as timm's train.py logs it (read before
    ``step_update``): the first step of a warmup uses warmup_lr, 1e-4 (the recipe's, timm's
    default); the log showed the next step's lr, so the warmup's start never appeared."""
    import json

    from classzoo.cli import main

    run = tmp_path / "run"
    argv = ["train", "--recipe", "gluon_resnet50_v1b", "--data-dir", str(small_imagefolder)]
    argv += ["--output-dir", str(run), "--max-steps", "3", "--batch-size", "4", "--amp", "off"]
    argv += ["--device", "cpu", "--set", "model.name=resnet10t", "--set", "data.image_size=32"]
    argv += ["--set", "data.num_workers=0", "--set", "train.progress=false"]
    assert main([*argv, "--set", "train.log_every=1", "--set", "train.eval_every=0"]) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if r.get("kind") == "train"]
    assert len(lrs) == 3
    assert lrs[0] == pytest.approx(1e-4, rel=1e-12)
    assert lrs[0] < lrs[1] < lrs[2] < 1.6 * 4 / 2048 * 1.0001  # warming up toward the scaled lr
    assert f"lr:{lrs[0]:.6g}" in (run / "train.log").read_text().splitlines()[0]


def test_the_record_states_the_cosine_period_the_steps_use(tmp_path, small_imagefolder):
    """A cosine with sched.t_max (the InceptionV4 reference's --T_max) spans t_max epochs
    whatever the run's length: the record says so, and each step's lr is the hand formula
    min_lr + (lr - min_lr) (1 + cos(pi k / period)) / 2 over that period (40 images / batch 4 =
    10 steps per epoch; t_max 0.5 -> 5 steps), not over the run's epochs."""
    import json

    import yaml

    from classzoo.cli import main

    run = tmp_path / "run"
    argv = ["train", "--recipe", "gluon_resnet50_v1b", "--data-dir", str(small_imagefolder)]
    argv += ["--output-dir", str(run), "--max-steps", "4", "--batch-size", "4", "--amp", "off"]
    argv += ["--device", "cpu", "--set", "model.name=resnet10t", "--set", "data.image_size=32"]
    argv += ["--set", "data.num_workers=0", "--set", "train.progress=false", "--epochs", "3"]
    argv += ["--set", "sched.warmup_epochs=0", "--set", "sched.t_max=0.5"]
    assert main([*argv, "--set", "train.log_every=1", "--set", "train.eval_every=0"]) == 0
    shape = yaml.safe_load((run / "resolved.yaml").read_text())["schedule"]["lr_shape"]
    assert shape == "cosine to 1e-05 over 0.5 epochs (sched.t_max)"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    lrs = [r["lr"] for r in rows if r.get("kind") == "train"]
    lr, low = 1.6 * 4 / 2048, 1e-5
    expected = [low + (lr - low) * (1 + math.cos(math.pi * k / 5)) / 2 for k in range(4)]
    assert lrs == pytest.approx(expected, rel=1e-6)
    assert f"lr schedule: {shape}" in (run / "console.log").read_text()


def test_a_warmup_of_the_constant_schedule_is_refused(tmp_path, capsys):
    """The const schedule has no scheduler (engine/optim.py build_scheduler), so a warmup asked
    of it was recorded and never ran: refused before the run folder exists."""
    from classzoo.cli import main

    out = tmp_path / "run"
    argv = ["train", "--recipe", "resnet152_slim_finetune:smoke", "--output-dir", str(out)]
    assert main([*argv, "--set", "sched.warmup_epochs=1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("classzoo: error: sched.warmup_epochs=1 has no effect")
    assert not out.exists()
