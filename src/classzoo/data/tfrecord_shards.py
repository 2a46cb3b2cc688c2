"""Which files of a data folder are the shards of a split: explicit, logged, never guessed.

Every file of the folder is either used or named in one log line saying why not. A file
belongs to a split when a name component (delimited by ``-``, ``_``, ``.`` or the ends) is a
split name: ``train-00000-of-01024``, ``imagenet-val-00003``, ``train.tfrecord``. Rules, in
order, for ``select_shards(root, split, pattern)``:

1. ``pattern`` (``data.train_pattern`` / ``data.val_pattern``, a glob relative to ``root``):
   exactly the matching files.
2. Files named after ``split`` (``val`` and ``validation`` are one split), and no file without
   a split name: those files.
3. A ``{split}/`` subfolder, when no file is named after the split: its files (a stray file
   beside ``train/`` and ``validation/`` is not a split).
4. No file named after any split (the ResNet-152 reference: "put all the tfrecord files in the
   folder"): every file.
5. For an evaluation split, a folder whose only named split is another evaluation split
   (``test-00000.tfrecord``): those files, with a log line.
6. Anything else (a split named nowhere; files named after the split next to unnamed files,
   e.g. {train.tfrecord, part2.tfrecord, part3.tfrecord}) is ambiguous: one UserError listing
   the candidates and the pattern key that settles it. Files of the train split are never
   used for evaluation unless a pattern says so.
"""

from __future__ import annotations

import glob
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from classzoo.errors import UserError

log = logging.getLogger(__name__)

# Files that sit next to shards but are not shards (label maps, READMEs, other tools' indexes).
NOT_SHARDS = {".txt", ".json", ".md", ".csv", ".tsv", ".yaml", ".yml", ".py", ".sh", ".log"}
NOT_SHARDS |= {".idx", ".index", ".html", ".pdf", ".cz-index", ".tmp", ".lock"}
SPLITS = ("train", "validation", "val", "valid", "test", "eval", "dev")
EVAL_SPLITS = {"validation", "val", "valid", "test", "eval", "dev"}
_ALIASES = {"val": {"val", "validation", "valid"}, "validation": {"val", "validation", "valid"}}
_ALIASES["valid"] = _ALIASES["val"]


@dataclass
class ShardSelection:
    """The files used for one split, and every other file of the folder with the reason."""

    files: list[Path]
    ignored: list[tuple[Path, str]] = field(default_factory=list)

    def describe(self, root: str, split: str | None) -> str:
        """One line: what is used, and each reason with up to three of its files."""
        used = ", ".join(p.name for p in self.files[:3]) + (", ..." if len(self.files) > 3 else "")
        line = f"{root}: {len(self.files)} file(s) for split '{split}' ({used})"
        by_reason: dict[str, list[str]] = {}
        for p, why in self.ignored:
            by_reason.setdefault(why, []).append(p.name)
        for why, names in by_reason.items():
            more = f" +{len(names) - 3} more" if len(names) > 3 else ""
            line += f"; not used: {', '.join(names[:3])}{more} ({why})"
        return line


def pattern_key(split: str | None) -> str:
    """The config key that chooses the files of ``split``."""
    return "data.val_pattern" if split in EVAL_SPLITS else "data.train_pattern"


def _split_of(name: str) -> set[str]:
    parts = set(re.split(r"[-_.]", name.lower()))
    return {s for s in SPLITS if s in parts}


def split_label(name: str) -> str:
    """The split a shard file's name says it holds (``validation-00000-of-00001``:
    validation), for listings; "unnamed" when it names none."""
    return "/".join(sorted(_split_of(name))) or "unnamed"


def _names(split: str) -> set[str]:
    return _ALIASES.get(split.lower(), {split.lower()})


def _classify(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(candidate shard files, files that are never shards with the reason)."""
    try:
        entries = sorted(root.iterdir(), key=lambda p: p.name)
    except OSError as e:
        raise UserError(f"cannot list data folder {root}: {e.strerror}") from None
    files, never = [], []
    for p in entries:
        if p.name.startswith("."):
            never.append((p, "hidden (index sidecars, temporaries)"))
        elif p.is_dir():
            never.append((p, "a folder"))
        elif p.suffix.lower() in NOT_SHARDS:
            never.append((p, f"'{p.suffix}' files are not shards"))
        elif not p.is_file():
            never.append((p, "not a regular file"))
        else:
            files.append(p)
    return files, never


def _by_pattern(root: Path, pattern: str, key: str) -> ShardSelection:
    hits = sorted(
        Path(p)
        for p in glob.glob(os.path.join(glob.escape(str(root)), pattern))
        if os.path.isfile(p) and not os.path.basename(p).startswith(".")
    )
    files, never = _classify(root)
    if not hits:
        names = ", ".join(p.name for p in files[:8]) or "none"
        raise UserError(f"{key} '{pattern}' matches no file in {root} (files there: {names})")
    used = set(hits)
    ignored = [(p, f"does not match {key} '{pattern}'") for p in files if p not in used]
    return ShardSelection(hits, ignored + never)


def _ambiguous(root: Path, split: str, named: list[Path], unnamed: list[Path]) -> UserError:
    key = pattern_key(split)
    listed = ", ".join(p.name for p in (named + unnamed)[:8])
    more = f" +{len(named) + len(unnamed) - 8} more" if len(named) + len(unnamed) > 8 else ""
    return UserError(
        f"{root}: cannot tell which files are the '{split}' split: {len(named)} named after it "
        f"and {len(unnamed)} named after no split ({listed}{more}); set {key} to a glob "
        f"relative to {root} (e.g. '*' for all of them)"
    )


def select_shards(
    root: str, split: str, pattern: str | None, *, key: str | None = None
) -> ShardSelection:
    """The shard files of ``split`` in the folder ``root`` (rules: module docstring).

    ``key`` names the pattern setting in messages (default: ``data.val_pattern`` for an
    evaluation split name, else ``data.train_pattern``). Logs one line with what is used and
    why every other file is not; raises a one-line UserError when the folder is ambiguous.
    """
    key = key or pattern_key(split)
    folder = Path(os.path.expanduser(root))
    if not folder.is_dir():
        raise UserError(f"TFRecord data folder {folder} does not exist (data.dir)")
    if pattern:
        selection = _by_pattern(folder, pattern, key)
    else:
        selection = _by_name(folder, split, key)
        check_complete_sets(selection.files, key)
    log.info("%s", selection.describe(str(folder), split))
    return selection


_NUMBERED = re.compile(r"^(.*)-(\d+)-of-(\d+)$")  # build_imagenet_data.py: %s-%.5d-of-%.5d


def check_complete_sets(files: list[Path], key: str) -> None:
    """Shards named ``{prefix}-{k}-of-{n}`` must be one whole set per prefix: a stale set
    beside a new one would count images twice, a missing shard would drop its images."""
    sets: dict[tuple[Path, str], dict[int, set[int]]] = {}
    for p in files:
        m = _NUMBERED.match(p.name)
        if m:
            sets.setdefault((p.parent, m[1]), {}).setdefault(int(m[3]), set()).add(int(m[2]))
    for (folder, prefix), by_count in sets.items():
        where = f"{folder}/{prefix}-*-of-*"
        if len(by_count) > 1:
            counts = " and ".join(
                f"-of-{n:05d} ({len(k)} files)" for n, k in sorted(by_count.items())
            )
            raise UserError(
                f"{where}: two shard sets, {counts}: remove the stale one, or set {key}"
            )
        ((n, have),) = by_count.items()
        missing = sorted(set(range(n)) - have)
        if missing:
            raise UserError(
                f"{where}: {len(missing)} of {n} shards missing ({prefix}-{missing[0]:05d}-of-"
                f"{n:05d}{', ...' if len(missing) > 1 else ''}): their images would be left out; "
                f"restore them, or set {key} to use the others"
            )


def _by_name(root: Path, split: str, key: str) -> ShardSelection:
    files, never = _classify(root)
    mine = _names(split)
    named = [p for p in files if _split_of(p.name) & mine]
    unnamed = [p for p in files if not _split_of(p.name)]
    other = [p for p in files if p not in named and p not in unnamed]

    def others(chosen: list[Path]) -> list[tuple[Path, str]]:
        out = []
        for p in files:
            if p not in chosen:
                splits = "/".join(sorted(_split_of(p.name))) or "no split"
                out.append((p, f"named after {splits}"))
        return out + never

    if named and not unnamed:
        return ShardSelection(named, others(named))
    sub = next((root / n for n in sorted(mine) if (root / n).is_dir()), None)
    if unnamed and not named and not other and sub is None:
        log.info("%s: no file names a split; all %d files are '%s'", root, len(unnamed), split)
        return ShardSelection(unnamed, never)
    if not named and sub is not None:  # a {split}/ folder wins over a stray file beside it
        inner = _by_name(sub, split, key) if _split_files(sub) else _all(sub)
        return ShardSelection(inner.files, inner.ignored + others([]))
    if named:
        raise _ambiguous(root, split, named, unnamed)
    eval_other = {s for p in other for s in _split_of(p.name)}
    if split.lower() in EVAL_SPLITS and not unnamed and len(eval_other) == 1 <= len(other):
        (only,) = eval_other
        if only in EVAL_SPLITS:
            log.info(
                "%s: no '%s' files; evaluating on the '%s' files (set %s to choose)",
                root, split, only, key,
            )  # fmt: skip
            return ShardSelection(other, never)
    found = ", ".join(sorted({s for p in other for s in _split_of(p.name)})) or "none"
    if not files:
        raise UserError(f"no TFRecord files in {root} (data.dir){_imagefolder_hint(root)}")
    raise UserError(
        f"no '{split}' shards in {root} (files named after: {found}; "
        f"{len(unnamed)} named after no split); set {key} to a glob relative to {root}"
    )


def _split_files(folder: Path) -> bool:
    return any(_split_of(p.name) for p in _classify(folder)[0])


def _all(folder: Path) -> ShardSelection:
    files, never = _classify(folder)
    if not files:
        raise UserError(f"no TFRecord files in {folder}{_imagefolder_hint(folder)}")
    return ShardSelection(files, never)


def _imagefolder_hint(folder: Path) -> str:
    """A folder of class folders is an ImageFolder given as TFRecords (a converted slim
    checkpoint records data.source tfrecord, slim's data): say so in the refusal."""
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subs and any(f.is_file() for f in subs[0].iterdir()):
        return (
            f" (it holds class folders such as {subs[0].name}/: an ImageFolder, which train / "
            "eval read with --set data.source=imagefolder and `classzoo data to-tfrecord` "
            "converts)"
        )
    return ""


def find_shards(location: str, split: str | None = None) -> list[Path]:
    """Shard files at ``location``: one file, a glob pattern (``/data/train-*``), or a folder
    (with ``split``: :func:`select_shards`; without: every shard file in it)."""
    loc = Path(os.path.expanduser(location))
    if any(c in location for c in "*?["):
        files = sorted(
            Path(p)
            for p in glob.glob(os.path.expanduser(location))
            if os.path.isfile(p) and Path(p).suffix.lower() not in NOT_SHARDS
            and not Path(p).name.startswith(".")
        )  # fmt: skip
        if not files:
            raise UserError(f"no TFRecord files match the pattern {location}")
        return files
    if loc.is_file():
        return [loc]
    if not loc.is_dir():
        raise UserError(f"TFRecord location {loc} does not exist")
    if split is not None:
        return select_shards(str(loc), split, None).files
    selection = _all(loc)
    log.info("%s", selection.describe(str(loc), None))
    return selection.files
