"""One training run: config -> objects -> run folder (config.yaml, logs, checkpoints, summary)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel as DDP

from classzoo.config import Config, save_config
from classzoo.data.sampling import global_batches
from classzoo.engine import setup
from classzoo.engine.checkpoint import CheckpointManager
from classzoo.engine.checkpoint import load as load_ckpt
from classzoo.engine.distributed import DistEnv, barrier, init_distributed
from classzoo.engine.evaluate_folder import checkpoints_in, evaluate_checkpoints
from classzoo.engine.logs import RunLogger, setup_console_logging
from classzoo.engine.optim import build_optimizer, build_scheduler, scaled_lr
from classzoo.engine.precision import amp_name, make_scaler, resolve_amp
from classzoo.engine.sync_bn import convert_sync_batchnorm
from classzoo.engine.trainer import LoopConfig, TrainState, steps_per_epoch, train
from classzoo.errors import UserError

log = logging.getLogger("classzoo")


def run(cfg: Config, run_dir: Path, resume: str | None = None) -> dict[str, Any]:
    """Train (and evaluate) as ``cfg.train.mode`` says; returns the summary written to the folder."""
    env = init_distributed(cfg.train.device)
    run_dir = Path(run_dir)
    if env.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    setup_console_logging(env.is_main, run_dir / "console.log" if env.is_main else None)
    torch.manual_seed(cfg.train.seed + env.rank)
    t0 = time.perf_counter()
    mode = cfg.train.mode
    data = setup.build_datasets(cfg, need_train=mode != "evaluate", need_val=mode != "train")
    num_classes = setup.resolve_num_classes(cfg, data)
    to_evaluate: list[Path] = []
    if mode == "evaluate":
        if not cfg.model.checkpoint:
            raise UserError(
                "mode evaluate needs a checkpoint: --set model.checkpoint=FILE_OR_FOLDER"
            )
        src = Path(cfg.model.checkpoint)
        to_evaluate = checkpoints_in(src) if src.is_dir() else [src]
        cfg.model.checkpoint = None  # each is loaded in turn below
    model = setup.build_model(cfg, num_classes)
    cfg.model.num_classes = int(getattr(model, "num_classes", num_classes or 0)) or num_classes
    pre = setup.resolve_preprocess(cfg.data, cfg.model.name, model)
    _record_preprocess(cfg, pre, setup.label_offset_for(cfg))
    setup.attach_transforms(data, pre, setup.train_augment(cfg.data))
    model.to(env.device)
    if cfg.train.channels_last:
        model.to(memory_format=torch.channels_last)
    amp_dtype = resolve_amp(cfg.train.amp, env.device)
    cfg.train.amp = amp_name(amp_dtype)
    logger = RunLogger(run_dir, enabled=env.is_main)
    val_loader = setup.eval_loader(data.val, cfg.data, env) if data.val is not None else None
    global_batch = cfg.data.batch_size * env.world_size * cfg.train.grad_accum_steps
    if data.train is not None:
        cfg.data.train_size = len(data.train)
    if env.is_main:
        save_config(cfg, run_dir / "config.yaml")
        log.info(
            "model %s (%d classes, %.1fM parameters) on %s x%d, amp %s, preset %s %dpx",
            cfg.model.name,
            cfg.model.num_classes,
            sum(p.numel() for p in model.parameters()) / 1e6,
            env.device,
            env.world_size,
            cfg.train.amp,
            pre.preset,
            pre.image_size,
        )

    if mode == "evaluate":
        rows = evaluate_checkpoints(
            model,
            cfg.model.name,
            to_evaluate,
            val_loader,
            env,
            logger,
            amp_dtype,
            cfg.train.channels_last,
            cfg.train.ema,
            cfg.train.progress,
        )
        result = rows[-1]
        summary = _summary(cfg, env, result, None, 0.0, time.perf_counter() - t0, global_batch)
        logger.write_json("summary.json", summary)
        logger.close()
        return summary

    if cfg.train.sync_bn and env.distributed:
        model = convert_sync_batchnorm(model, env.device)
    lr = scaled_lr(cfg.optim, global_batch)
    optimizer = build_optimizer(model, cfg.optim, lr)
    spe = steps_per_epoch(
        len(data.train), cfg.data.batch_size, env.world_size, cfg.train.grad_accum_steps
    )
    total_steps = cfg.train.max_steps or max(1, round(cfg.train.epochs * spe))
    scheduler = build_scheduler(optimizer, cfg.sched, cfg.train.epochs, spe)
    ema = ModelEmaV3(model, decay=cfg.train.ema_decay) if cfg.train.ema else None
    state = TrainState(model, optimizer, scheduler, make_scaler(env.device, amp_dtype), ema)
    ckpts = CheckpointManager(run_dir / "checkpoints", cfg.train.keep_max)
    _maybe_resume(state, ckpts, resume, env, cfg.train.seed)
    if env.is_main:
        log.info(
            "%d train / %s val images; global batch %d = %d per device x %d devices x %d accumulation; "
            "lr %.6g (%s); %d steps per epoch, %d steps",
            len(data.train),
            len(data.val) if data.val is not None else "no",
            global_batch,
            cfg.data.batch_size,
            env.world_size,
            cfg.train.grad_accum_steps,
            lr,
            f"{cfg.optim.lr} x {global_batch}/{cfg.optim.lr_base_batch}"
            if cfg.optim.lr_base_batch
            else "as given",
            spe,
            total_steps,
        )
    used = sum(
        e - b for b, e in global_batches(len(data.train), cfg.data.batch_size, env.world_size)
    )
    if used < len(data.train) and env.is_main:
        log.info(
            "the last %d images of each epoch's order are skipped (a batch too small to split over %d "
            "ranks with BatchNorm); they change every epoch",
            len(data.train) - used,
            env.world_size,
        )
    net = model
    if env.distributed:
        net = DDP(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    loader, sampler = setup.train_loader(data.train, cfg.data, env, cfg.train.seed)
    loop = _loop_config(cfg, total_steps, spe, amp_dtype)
    extra = {
        "config": cfg.to_dict(),
        "model_name": cfg.model.name,
        "num_classes": cfg.model.num_classes,
        "classes": data.classes,
    }
    result = train(
        state,
        net,
        loader,
        sampler,
        val_loader if mode == "train_and_evaluate" else None,
        loop,
        env,
        logger,
        ckpts,
        extra,
    )
    summary = _summary(
        cfg,
        env,
        result["eval"],
        result["images_per_sec"],
        state.pos.step / spe,
        time.perf_counter() - t0,
        global_batch,
    )
    logger.write_json("summary.json", summary)
    logger.close()
    barrier(env)
    return summary


def _record_preprocess(cfg: Config, pre, label_offset: int) -> None:
    """Write the resolved preprocessing back into the config (saved with every checkpoint)."""
    cfg.data.preset, cfg.data.image_size, cfg.data.crop_pct = (
        pre.preset,
        pre.image_size,
        pre.crop_pct,
    )
    cfg.data.interpolation, cfg.data.mean, cfg.data.std = (
        pre.interpolation,
        list(pre.mean),
        list(pre.std),
    )
    cfg.data.label_offset = label_offset


def _loop_config(cfg: Config, total_steps: int, spe: int, amp_dtype) -> LoopConfig:
    t = cfg.train
    return LoopConfig(
        total_steps=total_steps,
        steps_per_epoch=spe,
        grad_accum=t.grad_accum_steps,
        label_smoothing=t.label_smoothing,
        aux_loss_weight=t.aux_loss_weight,
        clip_grad=cfg.optim.clip_grad,
        log_every=max(1, t.log_every),
        ckpt_every=t.ckpt_every_steps,
        eval_every=t.eval_every,
        amp_dtype=amp_dtype,
        channels_last=t.channels_last,
        progress=t.progress,
        seed=t.seed,
    )


def _maybe_resume(
    state: TrainState, ckpts: CheckpointManager, resume: str | None, env: DistEnv, seed: int
) -> None:
    if resume is None:
        return
    if resume == "auto":
        found = ckpts.latest_good()
        if found is None:
            log.info("resume auto: no checkpoint in %s, starting fresh", ckpts.directory)
            return
        path, ckpt = found
    else:
        path = Path(resume)
        if not path.is_file():
            raise UserError(f"--resume {resume}: no such checkpoint file")
        ckpt = load_ckpt(path)
    try:
        state.restore(ckpt, env, seed)
    except (RuntimeError, KeyError, ValueError) as exc:
        raise UserError(f"cannot resume from {path}: {str(exc).splitlines()[0]}") from None
    log.info(
        "resumed from %s at step %d (epoch %d, sample %d)",
        path,
        state.pos.step,
        state.pos.epoch,
        state.pos.sample,
    )


def _summary(
    cfg: Config,
    env: DistEnv,
    result: dict,
    ips: float | None,
    epochs: float,
    wall: float,
    global_batch: int,
) -> dict[str, Any]:
    return {
        "recipe": cfg.recipe,
        "model": cfg.model.name,
        "top1": result.get("top1"),
        "top5": result.get("top5"),
        "loss": result.get("loss"),
        "count": result.get("count"),
        "images_per_sec": ips,
        "epochs": round(epochs, 3),
        "amp": cfg.train.amp,
        "world_size": env.world_size,
        "device": env.device.type,
        "global_batch_size": global_batch,
        "wall_time_s": round(wall, 1),
    }
