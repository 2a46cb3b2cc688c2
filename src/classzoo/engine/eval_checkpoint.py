"""``classzoo eval``: evaluate one checkpoint (classzoo, safetensors or TF) on a dataset, exactly."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from torch import nn

from classzoo.config import Config, apply_overrides, from_dict, load_recipe
from classzoo.engine import setup
from classzoo.engine.distributed import init_distributed
from classzoo.engine.evaluate import evaluate
from classzoo.engine.logs import setup_console_logging
from classzoo.engine.precision import amp_name, resolve_amp
from classzoo.errors import UserError
from classzoo.models.weights import (
    detect_format,
    load_into,
    load_torch_checkpoint,
    state_from_checkpoint,
)

log = logging.getLogger("classzoo")


def config_for_checkpoint(
    checkpoint: str, recipe: str | None, model: str | None
) -> tuple[Config, dict[str, Any] | None]:
    """The config a checkpoint was trained with (classzoo files), else the recipe / model given;
    with the classzoo checkpoint as read (None for other formats), so it is read only once."""
    ckpt = load_torch_checkpoint(checkpoint) if detect_format(checkpoint) == "classzoo" else None
    stored = ckpt.get("config") if isinstance(ckpt, dict) else None
    if recipe is not None:
        cfg = load_recipe(recipe)
        if stored is not None:
            cfg.model.num_classes = stored["model"].get("num_classes")
    elif stored is not None:
        cfg = from_dict(stored, source=f"{checkpoint} (stored config)")
    elif model is not None:
        cfg = Config()
    else:
        raise UserError(f"{checkpoint} carries no config: pass --model NAME or --recipe NAME")
    if model is not None:
        cfg.model.name = model
    cfg.model.checkpoint = checkpoint
    cfg.model.exclude = []
    return cfg, ckpt


def build_checkpoint_model(
    cfg: Config, num_classes: int | None, ckpt: dict[str, Any] | None
) -> nn.Module:
    """cfg's model with its checkpoint loaded, reusing an already-read classzoo checkpoint."""
    if ckpt is None:
        return setup.build_model(cfg, num_classes)
    path, cfg.model.checkpoint = cfg.model.checkpoint, None
    try:
        net = setup.build_model(cfg, num_classes)
    finally:
        cfg.model.checkpoint = path
    load_into(net, state_from_checkpoint(ckpt, path), str(path))
    return net


def eval_checkpoint(
    checkpoint: str,
    data_dir: str,
    recipe: str | None = None,
    model: str | None = None,
    batch_size: int | None = None,
    split: str | None = None,
    overrides: list[str] = (),
    device: str = "auto",
    quiet: bool = False,
) -> dict[str, Any]:
    setup_console_logging(not quiet)
    cfg, ckpt = config_for_checkpoint(checkpoint, recipe, model)
    cfg.data.dir = data_dir
    cfg.data.source = cfg.data.source if cfg.data.source != "synthetic" else "imagefolder"
    if split is not None:
        cfg.data.val_split = split
    elif cfg.data.source == "imagefolder" and not (Path(data_dir) / cfg.data.val_split).is_dir():
        cfg.data.val_split = "."  # the folder itself holds the class folders
    if batch_size is not None:
        cfg.data.eval_batch_size = batch_size
    cfg.train.device = device
    apply_overrides(cfg, list(overrides))
    env = init_distributed(cfg.train.device)
    data = setup.build_datasets(cfg, need_train=False, need_val=True)
    num_classes = (
        cfg.model.num_classes
        if cfg.model.num_classes is not None
        else setup.resolve_num_classes(cfg, data)
    )
    net = build_checkpoint_model(cfg, num_classes, ckpt)
    pre = setup.resolve_preprocess(cfg.data, cfg.model.name, net)
    setup.attach_transforms(data, pre, setup.train_augment(cfg.data))
    net.to(env.device)
    amp = resolve_amp(cfg.train.amp, env.device)
    loader = setup.eval_loader(data.val, cfg.data, env)
    log.info(
        "evaluating %s (%s) on %d images of %s, preset %s %dpx, amp %s",
        checkpoint,
        cfg.model.name,
        len(data.val),
        data_dir,
        pre.preset,
        pre.image_size,
        amp_name(amp),
    )
    result = evaluate(net, loader, env, amp, cfg.train.channels_last, progress=not quiet)
    return result
