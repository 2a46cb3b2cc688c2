"""The start-of-run log block of a Resolved record: one line per decision, as a user reads
it (the record itself is resolved.yaml)."""

from __future__ import annotations

from classzoo.engine.resolve import Resolved


def describe(r: Resolved) -> str:
    """The start-of-run log block: one line per decision."""
    p = r.preprocess
    lines = [
        f"model {r.model}: {r.num_classes} classes, label_offset {r.label_offset}"
        + (
            f", classes {', '.join(r.classes[:5])}{'...' if len(r.classes) > 5 else ''}"
            if r.classes
            else ""
        ),
        f"device {r.device} x{r.world_size}; precision train {r.train_precision or 'n/a'}, eval "
        f"{r.eval_precision} (periodic {r.periodic_eval_precision}); channels_last "
        f"{r.channels_last}; compile {r.compile or 'off'}; training loader {r.loader}"
        + ("" if r.fused_optimizer is None else f"; fused optimizer {r.fused_optimizer}"),
        *([f"precision: train {r.precision_note}"] if r.precision_note else []),
        *([f"threads {r.threads} compute ({r.thread_plan})"] if r.threads else []),
        *([f"host memory: {r.host_memory}"] if r.host_memory else []),
        *([f"software: {_versions(r.software)}"] if r.software else []),
        f"preprocess {p.preset} {p.image_size}px crop_pct {p.crop_pct:g} "
        f"{'' if p.crop_mode == 'center' else f'crop_mode {p.crop_mode} '}{p.interpolation}, "
        f"{p.decoder} JPEG decoder; {p.formula} with mean "
        f"{[round(m, 6) for m in p.mean]} std {[round(s, 6) for s in p.std]}",
    ]
    for split, info in r.data.items():
        labels = (
            f", labels {info.label_min}..{info.label_max}" if info.label_min is not None else ""
        ) + (f" ({info.labels_by})" if info.labels_by else "")
        files = f" in {len(info.files)} files" if info.files else ""
        lines.append(
            f"{split}: {info.count} images{files} from {info.location} ({info.source}){labels}"
        )
        lines += [f"{split}: not used: {f} ({why})" for f, why in info.ignored]
    w = r.weights
    if w.get("source"):
        lines.append(
            f"weights from {w['source']} ({w.get('format')}{', EMA' if w.get('ema') else ''}): "
            f"{w.get('loaded', 0)} tensors loaded, "
            f"left at init: {', '.join(w.get('left_at_init') or []) or 'none'}"
        )
    else:
        lines.append(f"weights: {w.get('init', 'random init')} (seed {r.seed})")
    if r.schedule is not None:
        s = r.schedule
        lines.append(
            f"global batch {s.global_batch} = {s.per_device_batch} x {r.world_size} devices x "
            f"{s.grad_accum} accumulation; lr {s.lr:.6g} ({s.lr_rule}); {s.steps_per_epoch} steps "
            f"per epoch, {s.total_steps} steps"
        )
        if s.lr_shape:
            lines.append(f"lr schedule: {s.lr_shape}")
    return "\n".join(lines)


def _versions(software: dict[str, str]) -> str:
    return ", ".join(f"{k} {v}" for k, v in software.items())
