"""One run: asked config -> resolve -> objects -> run folder.

``config.yaml`` is the asked config exactly; ``resolved.yaml`` is everything decided from it
(engine/resolve.py); checkpoints carry both; ``summary.json`` is the result of a finished run
(a stopped attempt leaves none: engine/run_summary.py).
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml
from timm.utils import ModelEmaV3

from classzoo.config import Config, config_text, with_values
from classzoo.data.sampling import global_batches
from classzoo.engine import build, host_memory, software
from classzoo.engine.checkpoint import CheckpointManager
from classzoo.engine.checkpoint import load as load_ckpt
from classzoo.engine.devices import make_scaler
from classzoo.engine.distributed import (
    DistEnv,
    barrier,
    broadcast_object,
    init_distributed,
    shutdown,
)
from classzoo.engine.evaluate import EvalOptions, evaluate
from classzoo.engine.evaluate_mode import checkpoint_paths, evaluate_checkpoints, labelled_for
from classzoo.engine.logs import setup_console_logging
from classzoo.engine.loop import Hooks, LoopConfig, StepConfig, train
from classzoo.engine.optim import build_optimizer, build_scheduler
from classzoo.engine.rank_agreement import check_same_data, check_same_newest
from classzoo.engine.resolve import Resolved
from classzoo.engine.resolved_text import describe
from classzoo.engine.resume_point import restore
from classzoo.engine.run_dir import (
    claim_run_dir,
    create_run_dir,
    recorded_threads,
    remove_if_empty,
    with_resume_hint,
)
from classzoo.engine.run_log import RunLogger
from classzoo.engine.run_summary import end_attempt, retire_summary, run_summary, stopped_note
from classzoo.engine.same_run import check_same_run, recorded_config, recorded_run
from classzoo.engine.setup import Setup, set_up
from classzoo.engine.state import TrainState
from classzoo.engine.stop import GracefulStop
from classzoo.engine.sync_bn import convert_sync_batchnorm
from classzoo.engine.threads import apply as apply_threads
from classzoo.engine.threads import plan_for_run
from classzoo.errors import UserError, WriteError
from classzoo.models.weights import load_into

log = logging.getLogger("classzoo")


def run(
    asked: Config,
    run_dir: Path | None,
    resume: str | None = None,
    overwrite: bool = False,
    *,
    until_exit: bool = False,
) -> dict[str, Any]:
    """Train (and evaluate) as ``asked.train.mode`` says; returns the summary of the run folder.

    ``run_dir`` None: a new ``runs/<recipe>-<UTC time>``. A folder holding another run is an
    error unless ``resume`` continues it or ``overwrite`` replaces it. ``until_exit``: the
    process ends after this call (the CLI): the stop signals stay handled until it does
    (``GracefulStop.close``).
    """
    t0 = time.perf_counter()
    env = init_distributed(asked.train.device)
    named_here = run_dir is None  # claim_run_dir makes a new runs/<name> folder, empty
    # from here to the first step a stop signal ends the process at once, with one line and
    # exit 0 (engine/stop.py); during the rendezvous above its default action still does
    stop = GracefulStop().early(_FIRST_WORK[asked.train.mode == "evaluate"]).install()
    try:
        run_dir = claim_run_dir(run_dir, asked.recipe, resume, overwrite, env)
        s = _set_up(asked, run_dir, resume, env)
        create_run_dir(run_dir, resume, overwrite, env)
        setup_console_logging(env.is_main, run_dir / "console.log" if env.is_main else None)
        return _run(asked, s, run_dir, resume, env, (t0, stop))
    except BaseException as exc:
        if named_here and env.is_main:
            remove_if_empty(run_dir)
        if isinstance(exc, WriteError):  # a full disk, a read-only folder: where to resume
            raise with_resume_hint(exc, run_dir) from None
        raise
    finally:
        stop.close(until_exit)  # its last all-reduce (every rank launched it) before the group goes
        shutdown(env)


# what a stop before the first step would have waited for (engine/stop.py)
_FIRST_WORK = {
    False: "the first training step",
    True: "every checkpoint was evaluated (eval.log has those that were)",
}


def _set_up(asked: Config, run_dir: Path, resume: str | None, env: DistEnv) -> Setup:
    """Everything a run needs before its folder is written, checked against the run it
    resumes: threads, host memory, the datasets and model (engine/setup.py), the record."""
    if resume == "auto":  # each machine reads its own folder: the same run on every rank
        check_same_newest(run_dir, env)
    setup_console_logging(env.is_main)  # the folder's console.log once it exists
    early = load_ckpt(Path(resume)) if resume not in (None, "auto") else None
    threads = recorded_threads(run_dir, resume, early)
    plan = plan_for_run(asked.data.num_workers, env.device, env.world_size, threads)
    apply_threads(plan, announce=False)  # torchrun: per local rank; logged as resolved
    host_memory.keep_freed_memory(env.device.type)
    mode = asked.train.mode
    if mode == "evaluate":  # model.checkpoint names what to evaluate: each loaded in turn
        asked_build = with_values(asked, {"model.checkpoint": None}, "mode evaluate")
        s = set_up(asked_build, env, need_train=False, need_val=True)
        paths = checkpoint_paths(asked.model.checkpoint)
        s.val, s.resolved = labelled_for(s.val, s.resolved, paths, asked.data.class_order)
    else:
        s = set_up(asked, env, need_train=True, need_val=mode != "train")
    check_same_data({"train": s.train, "val": s.val}, env)
    if s.train is not None:  # a loader that cannot serve it: before the folder exists
        build.check_loader(s.train.dataset, asked.data.loader)
    then = recorded_config(run_dir, resume, early)
    what = str(run_dir) if early is None else f"{run_dir} from {resume}"
    check_same_run(recorded_run(run_dir, resume, early), s.resolved, what, then, asked)
    recorded = {"threads": plan.compute_threads, "thread_plan": plan.explained}
    now = {"host_memory": host_memory.describe(), "software": software.versions()}
    s.resolved = replace(s.resolved, **recorded, **now)
    if early is not None:  # it fits this model: checked before anything is written
        load_into(s.model, early["model"], str(resume), allow_new_head=False)
        s.resume_from = early
    return s


def _run(
    asked: Config,
    s: Setup,
    run_dir: Path,
    resume: str | None,
    env: DistEnv,
    started: tuple[float, GracefulStop],
) -> dict[str, Any]:
    mode = asked.train.mode
    t0, stop = started
    if resume is not None and env.is_main:
        log.info("resuming in %s (--resume %s)", run_dir, resume)
    with RunLogger(run_dir, enabled=env.is_main) as logger:
        if resume is not None and mode == "evaluate":
            logger.marker(f"resumed (--resume {resume})")
        logger.write_text("config.yaml", config_text(asked))
        logger.write_text("resolved.yaml", yaml.safe_dump(s.resolved.to_dict(), sort_keys=False))
        if env.is_main:
            log.info("resolved (resolved.yaml):\n%s", describe(s.resolved))
        if mode == "evaluate":
            result, ips, epochs, stopped = _evaluate_mode(asked, s, env, logger), None, 0.0, False
        else:
            where = (run_dir, resume)
            result, ips, epochs, stopped = _train_mode(asked, s, env, logger, where, stop)
        wall = time.perf_counter() - t0
        summary = run_summary(asked, s.resolved, result, ips, epochs, wall, run_dir)
        summary = end_attempt(logger, summary, stopped)
    barrier(env)
    return summary


def _evaluate_mode(asked: Config, s: Setup, env: DistEnv, logger: RunLogger) -> dict[str, Any]:
    """The InceptionV4 reference's evaluate mode: every checkpoint of a folder -> a table."""
    paths = checkpoint_paths(asked.model.checkpoint)
    d = asked.data
    loader = build.eval_loader(s.val.dataset, d.eval_batch_size or d.batch_size, d.num_workers, env)
    rows = evaluate_checkpoints(
        s.model,
        asked.model.name,
        paths,
        loader,
        env,
        logger,
        EvalOptions(
            s.resolved.precision_dtype("eval"),
            s.resolved.channels_last,
            asked.train.progress,
            s.val.batch,
        ),
        asked.train.ema,
        s.resolved.classes,  # the val labels follow them: every checkpoint must have them
    )
    return rows[-1]


def training_state(
    asked: Config, s: Setup, env: DistEnv, run_dir: Path, resume: str | None
) -> tuple[TrainState, CheckpointManager]:
    """Optimizer, schedule, EMA and scaler around the model; resumed when asked."""
    t, r = asked.train, s.resolved
    model = s.model
    if t.sync_bn and env.distributed:
        model = convert_sync_batchnorm(model, env.device)
    optimizer = build_optimizer(model, asked.optim, r.schedule.lr, fused=bool(r.fused_optimizer))
    scheduler = build_scheduler(optimizer, asked.sched, t.epochs, r.schedule.steps_per_epoch)
    ema = ModelEmaV3(model, decay=t.ema_decay) if t.ema else None
    scaler = make_scaler(env.device, r.precision_dtype("train"))
    state = TrainState(model, optimizer, scheduler, scaler, ema, reduce_bn=not t.sync_bn)
    ckpts = CheckpointManager(run_dir / "checkpoints", t.keep_max, t.keep_best, t.best_metric)
    if env.is_main:
        ckpts.clean_stale()
    s.resumed_record = restore(state, ckpts, resume, s.resume_from, env, t.seed)
    for group in (g for g in optimizer.param_groups if "fused" in g):  # not the checkpoint's:
        group["fused"] = bool(r.fused_optimizer)  # the run computes as resolved.yaml records
    return state, ckpts


def _train_mode(
    asked: Config,
    s: Setup,
    env: DistEnv,
    logger: RunLogger,
    where: tuple[Path, str | None],
    stop: GracefulStop,
) -> tuple[dict[str, Any], float | None, float, bool]:
    """``where``: the run folder and ``--resume``; ``stop``: installed by :func:`run`, told
    here when the first step begins (a signal before it ended the process: engine/stop.py)."""
    t, d, r = asked.train, asked.data, s.resolved
    run_dir, resume = where
    state, ckpts = training_state(asked, s, env, run_dir, resume)
    if resume is not None:  # the rows of later steps before it are an abandoned attempt's
        k = state.pos.step
        said = f"resumed (--resume {resume}) at step {k}" if k else "no checkpoint: started anew"
        note = software.resume_note(s.resumed_record, r.software or {}) if k else None
        if note:  # allowed, never silent: engine/software.py
            said += note
            if env.is_main:
                log.warning("%s", said)
        logger.marker(said, k)
    if state.pos.step < r.schedule.total_steps:  # a summary.json there is of an earlier end
        retire_summary(run_dir, env.is_main)
    _log_skipped_tail(len(s.train.dataset), d.batch_size, env)
    net = build.training_network(state.model, env, r.compile)
    loader, sampler = build.train_loader(
        s.train.dataset, d.batch_size, d.num_workers, env, t.seed, r.loader
    )
    extra = {"config": asked.to_dict(), "resolved": r.to_dict()}
    evaluate_after = None
    if s.val is not None and t.mode == "train_and_evaluate":
        val_loader = build.eval_loader(
            s.val.dataset, d.eval_batch_size or d.batch_size, d.num_workers, env
        )

        def evaluate_after(final: bool) -> dict[str, Any]:
            if final:  # the last step is saved: a signal now waits for this evaluation only
                stop.finishing("the final evaluation (the last step is saved)")
            result = _eval_during(
                state, val_loader, s.val.batch, r, env, logger, sampler, final, t.progress
            )
            if env.is_main:  # ranks the checkpoint just saved for keep_best / best.pt
                ckpts.record_metrics(state.pos.step, result)
            return result

    stop.ready()  # SIGTERM / SIGINT from here: finish the step, save, exit 0
    hooks = Hooks(
        save=lambda: save(state, env, ckpts, extra),
        log_line=logger.train_step,
        should_stop=lambda: stop.should_stop(env),
        finishing=stop.finishing,
        scored=lambda step: _scored(ckpts, step, env),
    )
    loop = loop_config(asked, r)
    result = train(state, net, loader, sampler, loop, env, hooks, evaluate_after, s.train.batch)
    if result["stopped"]:
        stopped_note(logger, stop.reason, state.pos.step, ckpts.directory, run_dir)
    ips = result["images_per_sec"] if result["images"] else None  # None: nothing trained now
    return result["eval"], ips, state.pos.step / r.schedule.steps_per_epoch, result["stopped"]


def _scored(ckpts: CheckpointManager, step: int, env: DistEnv) -> bool:
    """Whether the checkpoint of ``step`` has an evaluation recorded (a collective)."""
    answer = [bool(ckpts.metrics_for(step)) if env.is_main else None]
    broadcast_object(answer, env)
    return bool(answer[0])


def _eval_during(state, val_loader, batch, r: Resolved, env, logger, sampler, final, progress):
    """Evaluate the EMA weights when EMA is on (timm's practice), else the trained weights; the
    final evaluation in the eval precision, periodic ones in the periodic precision."""
    from classzoo.engine.loop import epoch_float

    model = state.ema.module if state.ema is not None else state.model
    amp = r.precision_dtype("eval" if final else "periodic")
    result = evaluate(model, val_loader, env, EvalOptions(amp, r.channels_last, progress, batch))
    precision = r.eval_precision if final else r.periodic_eval_precision
    weights = "ema" if state.ema is not None else "model"  # metrics.jsonl says what it scored
    row = {**result, "precision": precision, "weights": weights}
    logger.evaluation(state.pos.step, epoch_float(state, sampler), row)
    log.info(
        "eval step %d (%s%s): top1 %.2f top5 %.2f loss %.4f over %d images",
        state.pos.step,
        "EMA weights, " if state.ema is not None else "",
        precision,
        result["top1"],
        result["top5"],
        result["loss"],
        result["count"],
    )
    return result


def loop_config(asked: Config, r: Resolved) -> LoopConfig:
    t = asked.train
    return LoopConfig(
        step=StepConfig(
            label_smoothing=t.label_smoothing,
            aux_loss_weight=t.aux_loss_weight,
            clip_grad=asked.optim.clip_grad,
            amp_dtype=r.precision_dtype("train"),
            channels_last=r.channels_last,
        ),
        total_steps=r.schedule.total_steps,
        steps_per_epoch=r.schedule.steps_per_epoch,
        grad_accum=t.grad_accum_steps,
        log_every=t.log_every,
        ckpt_every=t.ckpt_every_steps,
        eval_every=t.eval_every,
        progress=t.progress,
    )


def save(state: TrainState, env: DistEnv, ckpts: CheckpointManager, extra: dict[str, Any]):
    bad = state.non_finite()
    if bad:  # never let a diverged model replace the good checkpoints
        raise UserError(
            f"non-finite weights at step {state.pos.step} ({bad[0]}{' and others' if len(bad) > 1 else ''});"
            f" not saved, the last good checkpoint in {ckpts.directory} is kept (lower the lr,"
            " or try train.amp=off)"
        )
    payload = state.payload(env, extra)  # collective (RNG gather): every rank takes part
    return ckpts.save(state.pos.step, payload) if env.is_main else None


def _log_skipped_tail(n: int, batch_size: int, env: DistEnv) -> None:
    used = sum(e - b for b, e in global_batches(n, batch_size, env.world_size))
    if used < n and env.is_main:
        log.info(
            "the last %d images of each epoch's order are skipped (a batch too small to split over "
            "%d ranks with BatchNorm); they change every epoch",
            n - used,
            env.world_size,
        )
