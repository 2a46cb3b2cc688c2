"""`classzoo report RUN_DIR...`: paper-vs-ours tables and training plots from run folders.

Reads only what the trainer writes (``config.yaml``, ``metrics.jsonl``, ``summary.json``), so a
report can be made on a laptop from folders copied off the training machines, and an interrupted
run (no ``summary.json`` yet: a kill, or a SIGTERM / SIGINT stop, whose attempt leaves none) is
marked incomplete and still reports its last evaluation.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from classzoo.errors import UserError

RUN_FILES = ("config.yaml", "metrics.jsonl", "summary.json", "resolved.yaml")
IMAGENET_VAL_COUNT = 50_000  # ILSVRC-2012 validation set; published figures are on all of it
IMAGENET_CLASSES = (1000, 1001)  # 1001 = slim's background class 0 (inception_v4)


@dataclass(frozen=True)
class Published:
    """One published accuracy and where it comes from."""

    top1: float
    top5: float | None
    source: str
    comparable: bool = True  # False: a different protocol (e.g. 10-crop); delta in parentheses


PUBLISHED: dict[str, tuple[Published, ...]] = {
    "resnet_v1_152": (
        Published(76.8, 93.2, "TF-slim README (single crop 224, VGG preprocessing)"),
        Published(77.0, 93.3, "Caffe original (the reference's expected value)"),
        # He et al. 2015, Table 3: 21.43 / 5.71 % error, 10-crop testing.
        Published(78.57, 94.29, "ResNet paper (10-crop, not comparable)", comparable=False),
    ),
    "inception_v4": (
        Published(80.2, 95.2, "TF-slim README (single crop 299)"),
        Published(80.0, 95.0, "Szegedy et al. 2016 (single crop)"),
        Published(74.9, 92.3, "Ascend reference run"),
    ),
    "resnet50.gluon_in1k": (
        # timm results/results-imagenet.csv: resnet50.gluon_in1k,77.580,...,93.718
        Published(77.58, 93.72, "timm results (resnet50.gluon_in1k)"),
        Published(77.22, None, "Gluon reference README (8p, 90 epochs)"),
    ),
}
# The model names that ARE each published network (classzoo's and timm's spellings); a run of
# any other model matched to these figures (by its recipe's name) gets a warning.
PUBLISHED_MODELS = {
    "resnet_v1_152": ("resnet_v1_152", "slim_resnet_v1_152", "resnet_v1_152.tf_in1k"),
    "inception_v4": ("inception_v4", "slim_inception_v4", "inception_v4.tf_in1k"),
    "resnet50.gluon_in1k": ("resnet50", "resnet50.gluon_in1k", "gluon_resnet50_v1b"),
}
# Other names a recipe or model may carry for the same published network.
ALIASES = {
    "gluon_resnet50_v1b": "resnet50.gluon_in1k",  # timm's pre-1.0 name; the seed's --model
    "resnet_v1_152.tf_in1k": "resnet_v1_152",
    "inception_v4.tf_in1k": "inception_v4",
}
DEVICE_NAMES = {"cuda": "GPU", "npu": "NPU", "cpu": "CPU", "mps": "MPS", "xpu": "XPU"}


@dataclass
class Run:
    """One run folder as written by the trainer; ``summary`` is None while a run is unfinished."""

    path: Path
    config: dict[str, Any]
    train: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    bad_lines: list[int] = field(default_factory=list)  # unreadable metrics.jsonl lines, 1-based
    resolved: dict[str, Any] = field(default_factory=dict)  # resolved.yaml: device, world size
    name: str = ""  # the folder name; parent/name when two runs share a folder name
    last_marker: str | None = None  # metrics.jsonl's last "marker" (e.g. "stopped by SIGTERM...")

    def reported(self, key: str) -> Any:
        """``summary.json`` value, None when absent or the run is unfinished."""
        return (self.summary or {}).get(key)

    def setting(self, section: str, key: str) -> Any:
        """``config.yaml`` value ``section.key``, None when absent."""
        block = self.config.get(section)
        return block.get(key) if isinstance(block, dict) else None

    @property
    def recipe(self) -> str | None:
        return self.reported("recipe") or self.config.get("recipe")

    @property
    def model(self) -> str | None:
        return self.reported("model") or self.setting("model", "name")

    @property
    def num_classes(self) -> int | None:
        """Logits of the model the run trained: resolved.yaml's (config.yaml's ``null`` means
        one per class folder), else config.yaml's."""
        n = self.resolved.get("num_classes")
        return n if n is not None else self.setting("model", "num_classes")

    @property
    def amp(self) -> str | None:
        """The precision the run trained in (an evaluate-mode run: evaluated in), as resolved;
        config.yaml's ``auto`` only when nothing resolved was written."""
        r = self.resolved
        amp = self.reported("amp") or r.get("train_precision") or r.get("eval_precision")
        amp = amp or self.setting("train", "amp")
        return "off" if amp is False else amp  # YAML 1.1 reads a bare `amp: off` as false

    def final(self, key: str) -> Any:
        """A final eval figure (top1, top5, count): summary.json, else the last eval line."""
        values = [self.reported(key)] + [line.get(key) for line in reversed(self.evals)]
        return next((v for v in values if v is not None), None)

    def best(self, key: str = "top1") -> tuple[float | None, float | None]:
        """(best value, its epoch) over every evaluation, the final one included."""
        points = [(x[key], x.get("epoch")) for x in self.evals if x.get(key) is not None]
        last = self.reported(key)
        if last is not None:
            points.append((last, self.epochs))
        return max(points, key=lambda p: p[0], default=(None, None))

    @property
    def fps(self) -> float | None:
        """Images/s over all ranks; without a summary, the median of the logged train FPS
        (the median ignores the slow first steps of warm-up and compilation)."""
        values = [line["fps"] for line in self.train if line.get("fps") is not None]
        ours = self.reported("images_per_sec")
        return ours if ours is not None else statistics.median(values) if values else None

    @property
    def epochs(self) -> float | None:
        """Epochs trained: the summary's, else how far the metrics got (not the configured)."""
        done = [line["epoch"] for line in self.train + self.evals if line.get("epoch") is not None]
        ours = self.reported("epochs")
        return ours if ours is not None else max(done, default=None)


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read as UTF-8 text ({err})") from None


def _read_mapping(path: Path) -> dict[str, Any]:
    """config.yaml or summary.json as a mapping (an empty config.yaml is an empty one)."""
    text = _read_text(path)
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text) or {}
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        kind = "JSON" if path.suffix == ".json" else "YAML"
        raise UserError(f"{path}: not valid {kind} ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping, got {type(data).__name__}")
    return data


def _read_metrics(path: Path) -> tuple[list[dict], list[dict], list[int], str | None]:
    """Train lines, eval lines, the numbers of unreadable lines, and the last marker's text.

    The trainer appends to metrics.jsonl, so a run killed mid-write and then resumed leaves a
    cut-off line inside the file, and re-logs the steps after its last checkpoint: such lines
    are skipped (and reported), and a later record of the same step replaces the earlier one.
    A resume's marker names the step it continued from: the rows of later steps before it are
    an abandoned attempt's (``--resume`` of an earlier checkpoint, steps lost to a kill).
    A file with no readable line at all is not a metrics file: an error.
    """
    records: dict[tuple[str, Any], dict[str, Any]] = {}
    bad: list[int] = []
    marker = None
    for number, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            bad.append(number)
        elif record.get("kind") in ("train", "eval"):  # other kinds: from a newer trainer
            records.pop((record["kind"], record.get("step")), None)  # keep the resumed one
            records[record["kind"], record.get("step")] = record
        elif record.get("kind") == "marker" and isinstance(record.get("what"), str):
            marker = record["what"]
            at = record.get("step")
            if isinstance(at, int) and not isinstance(at, bool):  # a resume: where it continued
                records = {k: r for k, r in records.items() if not _after(r, at)}
    if bad and not records:
        raise UserError(f"{path}: no readable metrics line (line {bad[0]} is not a JSON object)")
    ordered = list(records.values())
    return (
        [r for r in ordered if r["kind"] == "train"],
        [r for r in ordered if r["kind"] == "eval"],
        bad,
        marker,
    )


def _after(record: dict[str, Any], step: int) -> bool:
    s = record.get("step")
    return isinstance(s, (int, float)) and s > step


def load_run(path: Path | str) -> Run:
    """Read one run folder; any of its files may be missing except all of them."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{path}: no such run folder")
    if not any((path / name).is_file() for name in RUN_FILES):
        raise UserError(f"{path}: not a run folder (none of {', '.join(RUN_FILES)})")
    config = _read_mapping(path / "config.yaml") if (path / "config.yaml").is_file() else {}
    metrics = path / "metrics.jsonl"
    train, evals, bad, marker = _read_metrics(metrics) if metrics.is_file() else ([], [], [], None)
    summary = _read_mapping(path / "summary.json") if (path / "summary.json").is_file() else None
    resolved = _read_mapping(path / "resolved.yaml") if (path / "resolved.yaml").is_file() else {}
    return Run(path, config, train, evals, summary, bad, resolved, path.name, marker)


def published_key(recipe: str | None, model: str | None) -> str | None:
    """Which published network a run is compared with: matched by recipe name (its variant
    ignored), then model name; a recipe named after its network plus a suffix
    (``resnet_v1_152_finetune``) matches too."""
    for name in (recipe, model):
        if not name:
            continue
        name = name.split(":")[0]  # recipe variant: "inception_v4:8p"
        key = ALIASES.get(name, name)
        if key in PUBLISHED:
            return key
        for prefix in sorted([*PUBLISHED, *ALIASES], key=len, reverse=True):
            if name.startswith(prefix + "_") or name.startswith(prefix + "-"):
                return ALIASES.get(prefix, prefix)
    return None


def published_for(recipe: str | None, model: str | None) -> tuple[Published, ...]:
    """Published figures for a run (see :func:`published_key`)."""
    key = published_key(recipe, model)
    return PUBLISHED[key] if key else ()


def _num(value: Any, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _epochs(value: Any) -> str:
    return "-" if value is None else f"{float(value):g}"


def run_label(run: Run) -> str:
    """``8p-NPU``: world size and device type, as in the Gluon reference's result table, from
    summary.json, else resolved.yaml (written at the start, so an interrupted run has it)."""
    size = run.reported("world_size") or run.resolved.get("world_size")
    device = run.reported("device") or run.resolved.get("device") or run.setting("train", "device")
    device = "?" if device in (None, "auto") else str(device).split(":")[0]  # "cuda:0" -> cuda
    return f"{size if size is not None else '?'}p-{DEVICE_NAMES.get(device, device.upper())}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _other_model(run: Run, key: str | None) -> bool:
    """True when the run's model is not the network the published figures are for."""
    return bool(key and run.model and run.model not in PUBLISHED_MODELS.get(key, (key,)))


def _notes(run: Run, refs: tuple[Published, ...], key: str | None) -> list[str]:
    """The qualifications of one run's comparison with the published figures."""
    notes = []
    classes = run.num_classes
    if classes is not None and classes not in IMAGENET_CLASSES:
        notes.append(f"{run.name}: {classes} classes, not ImageNet-1k; no published match.")
    if _other_model(run, key):
        notes.append(
            f"WARNING {run.name}: the run trains {run.model}, but the published figures "
            f"(matched by its recipe {run.recipe}) are for {key}: the delta compares different "
            "networks (shown in parentheses)."
        )
    count = run.final("count")
    if refs and count is not None and count != IMAGENET_VAL_COUNT:
        notes.append(
            f"{run.name}: evaluated on {count} images, not the {IMAGENET_VAL_COUNT} "
            "ImageNet validation images; the delta is not a like-for-like comparison."
        )
    if run.bad_lines:
        lines = ", ".join(map(str, run.bad_lines))
        notes.append(f"{run.name}: skipped unreadable metrics.jsonl line(s) {lines}.")
    if not run.summary:
        stop = run.last_marker if (run.last_marker or "").startswith("stopped by") else None
        why = f"{stop}; --resume auto continues it" if stop else "interrupted?"
        notes.append(f"{run.name}: no summary.json ({why}); figures from its last eval.")
    return notes


def paper_table(runs: list[Run]) -> tuple[list[str], list[str]]:
    """Markdown lines of the paper-vs-ours table and the notes that qualify it.

    "last" is the final evaluation (the model the run ends with), "best" the highest top-1 of
    any evaluation (timm's model_best); the delta is last minus published."""
    rows, notes = [], []
    for run in runs:
        top1, top5 = run.final("top1"), run.final("top5")
        best, best_epoch = run.best("top1")
        label = run.name if run.summary else f"{run.name} (incomplete)"
        at = "" if best is None or best_epoch is None else f" (ep {float(best_epoch):g})"
        ours = [label, run.model or "-", _num(top1), _num(best) + at, _num(top5)]
        key = published_key(run.recipe, run.model)
        classes = run.num_classes
        partial = run.final("count") not in (None, IMAGENET_VAL_COUNT)
        refs = (
            ()
            if classes is not None and classes not in IMAGENET_CLASSES
            else PUBLISHED.get(key, ())
        )
        notes += _notes(run, refs, key if refs else None)
        if not refs:
            rows.append([*ours, "-", "-", "-"])
        for ref in refs:
            delta = "-" if top1 is None else f"{top1 - ref.top1:+.2f}"
            if (not ref.comparable or partial or _other_model(run, key)) and top1 is not None:
                delta = f"({delta})"
            rows.append([*ours, _num(ref.top1), delta, ref.source])
    header = ["Run", "Model", "top-1 last", "top-1 best", "top-5 last", "top-1 published",
              "delta", "source"]  # fmt: skip
    return _table(header, rows), notes


def results_table(runs: list[Run]) -> list[str]:
    """The Gluon reference's result table (Name = devices, Acc@1, FPS, Epochs, AMP_Type), one
    row per run, named after it, with the best top-1 next to the last."""
    rows = [  # a run without summary.json: its last eval is not its end (see the notes)
        [r.name if r.summary else f"{r.name} (incomplete)", run_label(r), _num(r.final("top1")),
         _num(r.best("top1")[0]), _num(r.fps), _epochs(r.epochs), r.amp or "-"]
        for r in runs
    ]  # fmt: skip
    return _table(["Run", "Name", "Acc@1", "Acc@1 best", "FPS", "Epochs", "AMP_Type"], rows)


def build_report(run_dirs: list[Path], out_dir: Path | None = None) -> str:
    """The report as Markdown; with ``out_dir``, also ``report.md`` and the PNG plots there."""
    if not run_dirs:
        raise UserError("report: no run folders given")
    runs = [load_run(path) for path in run_dirs]
    for run in runs:  # two folders named `seed1` become `a/seed1` and `b/seed1`
        if [r.path.name for r in runs].count(run.path.name) > 1:
            run.name = f"{run.path.parent.name}/{run.path.name}"
    paper, notes = paper_table(runs)
    parts = ["# classzoo report", "", "## Paper vs ours", "", *paper, ""]
    parts += [f"- {note}" for note in notes] + ([""] if notes else [])
    parts += ["## Results", "", *results_table(runs), ""]
    if out_dir is not None:
        out_dir = Path(out_dir)
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise UserError(f"{out_dir}: cannot create the folder ({err.strerror})") from None
        from classzoo.report_plots import write_plots

        written = write_plots(runs, out_dir)
        parts += ["## Plots", ""]
        for filename, title in written:
            parts += [f"![{title}]({filename})", ""]
        if not written:
            parts += ["No train or eval metrics in these runs.", ""]
    text = "\n".join(parts)
    if out_dir is not None:
        (out_dir / "report.md").write_text(text, encoding="utf-8")
    return text


def main_report(run_dirs: list[str], output: str | None) -> int:
    """CLI entry for ``classzoo report``: print the Markdown, write files when ``--output``."""
    print(build_report([Path(p) for p in run_dirs], Path(output) if output else None))
    return 0
