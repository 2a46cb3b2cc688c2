"""Every key of the config schema reaches the object it configures (or is refused loudly).

Each entry sets one key to a value other than its default on a small run and probes the object
built from it: the Resolved record, the model, the datasets and their transforms, the optimizer,
the schedule, the checkpoint manager or the loop. A key added to the schema without an entry here
fails ``test_every_key_has_a_probe``, so no key can silently do nothing.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from classzoo.cli import main
from classzoo.config import Config, with_values
from classzoo.data.imagefolder import SyntheticDataset
from classzoo.engine import build
from classzoo.engine.distributed import DistEnv
from classzoo.engine.run import loop_config, training_state
from classzoo.engine.run_dir import claim_run_dir
from classzoo.engine.setup import set_up
from classzoo.errors import UserError
from classzoo.models import create_model
from conftest import write_imagefolder

CPU = DistEnv()


def _base(data: Path) -> dict:
    return {
        "model.name": "resnet10t",
        "data.dir": str(data),
        "data.image_size": 32,
        "data.batch_size": 4,
        "data.num_workers": 0,
        "train.epochs": 2,
        "train.amp": "off",
        "train.progress": False,
    }


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("keys")
    write_imagefolder(root / "train", dict.fromkeys("abcd", 6), seed=1)
    write_imagefolder(root / "val", dict.fromkeys("abcd", 3), seed=2)
    write_imagefolder(root / "other", dict.fromkeys("xyz", 2), seed=3)
    save_file(create_model("resnet10t", num_classes=4).state_dict(), str(root / "w.safetensors"))
    tf = root / "tf"  # slim-schema shards: labels 1..4 (0 = background)
    for split, folder in (("train", "train"), ("validation", "val")):
        args = ["data", "to-tfrecord", str(root / folder), str(tf), "--shards", "2"]
        assert main([*args, "--split", split]) == 0
    return root


def built(cfg: Config, tmp: Path, env: DistEnv = CPU) -> SimpleNamespace:
    """Everything a training run builds from ``cfg``, without training."""
    s = set_up(cfg, env, need_train=True, need_val=True)
    state, ckpts = training_state(cfg, s, env, tmp / "run", None)
    loader, sampler = build.train_loader(
        s.train.dataset,
        cfg.data.batch_size,
        cfg.data.num_workers,
        env,
        cfg.train.seed,
        s.resolved.loader,
    )
    d = cfg.data
    val_loader = build.eval_loader(s.val.dataset, d.eval_batch_size or d.batch_size, 0, env)
    return SimpleNamespace(
        r=s.resolved,
        model=state.model,
        train=s.train.dataset,
        val=s.val.dataset,
        opt=state.optimizer,
        group=state.optimizer.param_groups[0],
        sched=state.scheduler,
        ema=state.ema,
        ckpts=ckpts,
        loop=loop_config(cfg, s.resolved),
        loader=loader,
        sampler=sampler,
        val_loader=val_loader,
    )


def transform_text(ds) -> str:
    """What the worker stage of a train pipeline holds (timm's ops and their arguments)."""
    stage = ds.transform.fn.__self__  # the dataset holds the pipeline's per-image stage
    return repr(vars(stage))


# key -> (value, probe(objects, value) -> bool) or (value, "error text" expected)
PROBES = {
    "recipe": ("my-recipe", "RUN_DIR"),
    "model.name": ("resnet18", lambda o, v: o.r.model == v and len(o.model.layer1) == 2),
    "model.num_classes": (6, lambda o, v: o.model.num_classes == v == o.r.num_classes),
    "model.checkpoint": ("W", lambda o, v: o.r.weights["source"].endswith("w.safetensors")),
    "model.exclude": (["fc"], lambda o, v: "fc" in o.r.weights["excluded"]),
    "model.pretrained": (True, "pretrained"),
    "model.drop_rate": (0.3, lambda o, v: o.model.drop_rate == v),
    "model.drop_path_rate": (
        0.1,
        # timm's stochastic depth: rates rise linearly over the blocks to drop_path_rate
        lambda o, v: max(getattr(m, "drop_prob", 0) for m in o.model.modules()) == pytest.approx(v),
    ),
    "model.kwargs": ({"global_pool": "max"}, lambda o, v: o.model.global_pool.pool_type == "max"),
    "data.source": ("synthetic", lambda o, v: isinstance(o.train, SyntheticDataset)),
    "data.dir": ("OTHER", lambda o, v: o.r.data["train"].location.startswith(v)),
    "data.train_split": ("other", "OTHER_SPLIT"),
    "data.val_split": ("other", "differ from the training classes"),
    "data.train_pattern": ("train-*", "TFRECORD"),
    "data.val_pattern": ("validation-*", "TFRECORD"),
    "data.image_key": ("jpeg", "TFRECORD"),
    "data.label_key": ("cls", "TFRECORD"),
    "data.batch_size": (3, lambda o, v: o.sampler.batch_size == v == o.r.schedule.global_batch),
    "data.eval_batch_size": (2, lambda o, v: o.val_loader.batch_sampler.batch_size == v),
    "data.num_workers": (1, lambda o, v: o.loader.num_workers == v),
    "data.preset": ("vgg", lambda o, v: o.r.preprocess.preset == v == "vgg"),
    "data.image_size": (48, lambda o, v: o.r.preprocess.image_size == v),
    "data.crop_pct": (0.5, lambda o, v: o.r.preprocess.crop_pct == v),
    "data.interpolation": ("bicubic", lambda o, v: o.r.preprocess.interpolation == v),
    "data.mean": ([0.1, 0.2, 0.3], lambda o, v: list(o.r.preprocess.mean) == v),
    "data.std": ([0.5, 0.6, 0.7], lambda o, v: list(o.r.preprocess.std) == v),
    "data.label_offset": (1, "TFRECORD"),
    "data.crop_mode": ("squash", lambda o, v: o.r.preprocess.crop_mode == v),
    "data.class_order": ("natural", lambda o, v: "natural order" in o.r.data["train"].labels_by),
    "data.train_interpolation": ("nearest", lambda o, v: "nearest" in transform_text(o.train)),
    "data.train_crop": ("none", lambda o, v: "Resize(size=32" in transform_text(o.train)),
    "data.scale": ([0.5, 1.0], lambda o, v: "(0.5, 1.0)" in transform_text(o.train)),
    "data.ratio": ([0.9, 1.1], lambda o, v: "(0.9, 1.1)" in transform_text(o.train)),
    "data.hflip": (0.0, lambda o, v: "'hflip': 0.0" in transform_text(o.train)),
    "data.color_jitter": (0.0, lambda o, v: "'jitter': None" in transform_text(o.train)),
    "data.auto_augment": ("rand-m9-mstd0.5", lambda o, v: "RandAug" in transform_text(o.train)),
    "data.re_prob": (0.25, lambda o, v: "RandomErasing" in transform_text(o.train)),
    "data.skip_corrupt": (True, lambda o, v: o.train.skip_corrupt is True),
    "data.loader": ("dali", "DALI"),
    "data.synthetic_size": (7, "SYNTH"),
    "optim.name": ("rmsproptf", lambda o, v: type(o.opt).__name__ == "RMSpropTF"),
    "optim.lr": (0.5, lambda o, v: o.r.schedule.lr == v),
    "optim.lr_base_batch": (2, lambda o, v: o.r.schedule.lr == pytest.approx(0.1 * 4 / 2)),
    "optim.momentum": (0.5, lambda o, v: o.group["momentum"] == v),
    "optim.weight_decay": (0.01, lambda o, v: v in [g["weight_decay"] for g in o.opt.param_groups]),
    "optim.eps": (0.5, "OPT_ADAMW"),
    "optim.alpha": (0.5, "OPT_RMSPROP"),
    "optim.nesterov": (False, lambda o, v: o.group["nesterov"] is False),  # timm's sgd: True
    "optim.filter_bias_and_bn": (False, lambda o, v: len(o.opt.param_groups) == 1),
    "optim.clip_grad": (1.5, lambda o, v: o.loop.step.clip_grad == v),
    # the CPU's default is fused (engine/devices.py): false reaches the optimizer as the loop
    "optim.fused": (False, lambda o, v: not o.group["fused"] and o.r.fused_optimizer is False),
    "sched.name": ("step", lambda o, v: type(o.sched).__name__ == "StepLRScheduler"),
    "sched.warmup_epochs": (1.0, lambda o, v: o.sched.warmup_t == o.r.schedule.steps_per_epoch),
    "sched.warmup_lr": (0.01, lambda o, v: o.sched.warmup_lr_init == v),
    "sched.min_lr": (0.001, lambda o, v: o.sched.lr_min == v),
    "sched.cooldown_epochs": (1.0, lambda o, v: o.sched.t_initial == o.r.schedule.steps_per_epoch),
    "sched.t_max": (1.0, lambda o, v: o.sched.t_initial == o.r.schedule.steps_per_epoch),
    "sched.decay_epochs": (1.0, "SCHED_STEP"),
    "sched.decay_rate": (0.5, "SCHED_STEP"),
    "train.mode": ("evaluate", "mode evaluate needs a checkpoint"),
    "train.epochs": (
        3.0,
        lambda o, v: o.r.schedule.total_steps == 3 * o.r.schedule.steps_per_epoch,
    ),
    "train.max_steps": (2, lambda o, v: o.r.schedule.total_steps == v == o.loop.total_steps),
    "train.eval_every": (2, lambda o, v: o.loop.eval_every == v),
    "train.label_smoothing": (0.1, lambda o, v: o.loop.step.label_smoothing == v),
    "train.aux_loss_weight": (0.3, lambda o, v: o.loop.step.aux_loss_weight == v),
    "train.amp": ("bf16", lambda o, v: o.r.train_precision == v == "bf16"),
    "train.channels_last": (
        False,
        lambda o, v: (
            not o.r.channels_last
            and o.model.conv1[0].weight.is_contiguous(memory_format=torch.contiguous_format)
        ),
    ),
    "train.compile": (True, lambda o, v: o.r.compile == "default"),
    "train.compile_mode": ("max-autotune", "COMPILE"),
    "train.ema": (True, lambda o, v: o.ema is not None),
    "train.ema_decay": (0.5, "EMA"),
    "train.seed": (7, lambda o, v: o.sampler.seed == v == o.r.seed),
    "train.grad_accum_steps": (2, lambda o, v: o.loop.grad_accum == v == o.r.schedule.grad_accum),
    "train.sync_bn": (True, "SYNC_BN"),
    "train.log_every": (3, lambda o, v: o.loop.log_every == v),
    "train.ckpt_every_steps": (5, lambda o, v: o.loop.ckpt_every == v),
    "train.keep_max": (2, lambda o, v: o.ckpts.keep_last == v),
    "train.keep_best": (3, lambda o, v: o.ckpts.keep_best == v),
    "train.best_metric": ("loss", lambda o, v: o.ckpts.metric == v),
    "train.device": ("mps", "device 'mps' requested"),
    "train.progress": (True, lambda o, v: o.loop.progress is True),
    "eval.amp": ("bf16", lambda o, v: o.r.eval_precision == v),
    "eval.periodic_amp": ("train", "PERIODIC"),
}


def schema_keys() -> list[str]:
    keys = []
    for f in dataclasses.fields(Config):
        value = getattr(Config(), f.name)
        if dataclasses.is_dataclass(value):
            keys += [f"{f.name}.{g.name}" for g in dataclasses.fields(value)]
        else:
            keys.append(f.name)
    return keys


def test_every_key_has_a_probe():
    assert sorted(schema_keys()) == sorted(PROBES)


def _special(key: str, value, cfg: Config, tmp: Path, data: Path) -> bool:
    """Keys whose effect needs another setting or another object than ``built``."""
    set_ = lambda extra: with_values(cfg, extra, "test")  # noqa: E731
    if key == "recipe":
        return claim_run_dir(None, value, None, False, CPU).name.startswith("my-recipe-")
    if key == "data.train_split":  # another class set: the val split must follow
        o = built(set_({"data.val_split": "other"}), tmp)
        return o.r.data["train"].location.endswith("other") and o.r.classes == ("x", "y", "z")
    if key == "data.synthetic_size":
        o = built(set_({"data.source": "synthetic"}), tmp)
        return len(o.train) == value
    if key == "optim.eps":
        return built(set_({"optim.name": "adamw"}), tmp).group["eps"] == value
    if key == "optim.alpha":
        return built(set_({"optim.name": "rmsproptf"}), tmp).group["alpha"] == value
    if key in ("sched.decay_epochs", "sched.decay_rate"):
        o = built(set_({"sched.name": "step"}), tmp)
        spe = o.r.schedule.steps_per_epoch
        return (o.sched.decay_t, o.sched.decay_rate) == (
            (spe, 0.1) if key == "sched.decay_epochs" else (30 * spe, value)
        )
    if key == "data.loader":  # the DALI loader when the extra is there, else one clear line
        try:
            import nvidia.dali  # noqa: F401
        except ImportError:
            with pytest.raises(UserError, match="needs the dali extra"):
                built(cfg, tmp)
            return True
        o = built(cfg, tmp)
        return o.r.loader == value and type(o.loader).__name__ == "DaliTrainLoader"
    if key == "train.compile_mode":  # the mode is used when compiling is on
        off = built(cfg, tmp).r.compile is None  # the device's default: off
        return off and built(set_({"train.compile": True}), tmp).r.compile == value
    if key == "train.ema_decay":
        return built(set_({"train.ema": True}), tmp).ema.decay == value
    if key == "train.sync_bn":  # converts BatchNorm when there are ranks to synchronise
        o = built(cfg, tmp, DistEnv(rank=0, world_size=2))
        return any("GlobalBatchNorm" in type(m).__name__ for m in o.model.modules())
    if key == "eval.periodic_amp":
        return built(set_({"train.amp": "bf16"}), tmp).r.periodic_eval_precision == "bf16"
    raise AssertionError(key)


def _tfrecord(key: str, value, base: Config, data: Path, tmp: Path) -> bool:
    """TFRecord keys, on shards written by ``classzoo data to-tfrecord`` (slim labels 1..4)."""
    cfg = with_values(
        base,
        {
            "data.source": "tfrecord",
            "data.dir": str(data / "tf"),
            "data.val_split": "validation",
            "data.label_offset": 1,
            key: value,
        },
        "test",
    )
    if key in ("data.image_key", "data.label_key"):  # the records have slim's keys
        with pytest.raises(UserError, match=key.replace(".", r"\.")):
            built(cfg, tmp)
        return True
    o = built(cfg, tmp)
    if key == "data.label_offset":  # labels 1..4 - 1 -> 4 classes
        return o.r.label_offset == 1 and o.r.num_classes == 4
    split = "train" if key == "data.train_pattern" else "val"
    files = o.r.data[split].files
    return len(files) == 2 and o.r.data[split].count == (24 if split == "train" else 12)


@pytest.mark.parametrize("key", sorted(PROBES))
def test_key_reaches_its_object(key, data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    value, probe = PROBES[key]
    value = (
        {"W": str(data / "w.safetensors"), "OTHER": str(data)}.get(value, value)
        if isinstance(value, str)
        else value
    )
    base = with_values(Config(), _base(data), "test")
    if key == "model.exclude":
        base = with_values(base, {"model.checkpoint": str(data / "w.safetensors")}, "test")
    if probe == "TFRECORD":
        assert _tfrecord(key, value, base, data, tmp_path)
        return
    if isinstance(probe, str) and probe.isupper():
        assert _special(key, value, with_values(base, {key: value}, "test"), tmp_path, data)
        return
    cfg = with_values(base, {key: value}, "test")
    if isinstance(probe, str):  # refused loudly, naming the key's effect
        with pytest.raises(UserError, match=probe):
            if key in ("train.mode", "train.device"):  # read by run() itself
                from classzoo.engine.run import run

                run(cfg, tmp_path / "r")
            else:
                built(cfg, tmp_path)
        return
    assert probe(built(cfg, tmp_path), value), key
