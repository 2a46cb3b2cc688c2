"""Which logit each class folder of an ImageFolder is scored against when a trained model is
evaluated.

torchvision's ImageFolder numbers the sorted folder names 0..N-1. That is right only when the
folders are exactly the classes the model was trained on, in that order: a validation subset
that lacks one class shifts every label after the gap, and slim's 1001-logit models put
'background' at logit 0, so ImageNet's synset folders would all be scored one logit off. Both
gave a top-1 without an error (33 % instead of 100 % on a 4-class run evaluated on 3 of its
folders). So folders are matched by name, by the first rule that applies:

1. the class names the checkpoint stores (a classzoo run records its training folders: folder
   k was logit k, also under a head with more logits than folders, e.g. a recipe's 1001);
2. ImageNet-1k, when every folder is a WordNet id and the head has 1000 logits (timm's order,
   the sorted synsets) or 1001 (slim's: background at 0, synset k at k + 1);
3. the folder names in order 0..N-1, only when there are as many folders as logits: sorted
   (torchvision's ImageFolder) or natural (timm's ImageDataset, ``timm.utils.misc.natural_key``:
   case-insensitive, digits as numbers, so 2 before 10). Weights that name no classes do not
   say which order trained them: where the two differ, ``data.class_order`` must say.

Anything else is one UserError naming the folder or the counts.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

from classzoo.errors import UserError

ORDERS = {
    "sorted": "sorted folder names 0..N-1 (torchvision's rule)",
    "natural": "folder names in natural order 0..N-1 (timm's ImageDataset)",
}

__all__ = [
    "ClassMatch",
    "imagenet_classes",
    "imagenet_head",
    "is_imagenet_synsets",
    "match_class_folders",
    "unicode_note",
]


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[tuple[str, str], ...]:
    """The 1000 (synset, lemmas) pairs in timm's / slim's order, shipped with classzoo."""
    text = resources.files("classzoo").joinpath("data_files/imagenet_classes.tsv").read_text()
    rows = [line.split("\t", 1) for line in text.splitlines() if line and not line.startswith("#")]
    return tuple((synset, lemma) for synset, lemma in rows)


@lru_cache(maxsize=1)
def synset_index() -> dict[str, int]:
    """Each ImageNet-1k synset's place among the 1000 (timm's logit; slim's label - 1)."""
    return {synset: i for i, (synset, _) in enumerate(imagenet_classes())}


def is_imagenet_synsets(folders: Sequence[str]) -> bool:
    """Whether every folder name is one of ImageNet-1k's WordNet ids (n01440764, ...)."""
    index = synset_index()
    return bool(folders) and all(f in index for f in folders)


def imagenet_head(folders: Sequence[str], num_logits: int) -> bool:
    """Rule 2: ImageNet synset folders under ImageNet's own head (timm's 1000, slim's 1001)."""
    return num_logits in (1000, 1001) and is_imagenet_synsets(folders)


def unicode_note(names: list[str], others: list[str]) -> str:
    """Why two lists of names that print alike differ: one spelling of an accented letter in
    each (macOS writes file names decomposed, NFD; most other tools composed, NFC)."""
    composed = {unicodedata.normalize("NFC", n) for n in others}
    same = [n for n in names if unicodedata.normalize("NFC", n) in composed]
    if not same:
        return ""
    form = "NFD" if unicodedata.is_normalized("NFD", same[0]) else "NFC"
    return (
        f"; {same[0]!r} is spelt with the other Unicode form of its accents ({form} here: "
        "macOS writes names decomposed); rename one folder so both spell it alike"
    )


@dataclass(frozen=True)
class ClassMatch:
    """Folder name -> logit index, the names of the logits, and the rule, in words."""

    index: dict[str, int]
    logit_names: tuple[str, ...]
    rule: str


def match_class_folders(
    folders: Sequence[str],
    num_logits: int,
    stored: Sequence[str] | None,
    where: str,
    order: str | None = None,
) -> ClassMatch:
    """Match the class ``folders`` found in ``where`` to a head of ``num_logits`` logits;
    ``stored``: the class names the checkpoint was trained with (None when it has none);
    ``order``: rule 3's order, sorted or natural (None: refused where they differ)."""
    if stored and len(stored) > num_logits:
        raise UserError(
            f"the checkpoint was trained on {len(stored)} classes, the model has {num_logits} "
            f"logits: set model.num_classes to the checkpoint's head size (at least "
            f"{len(stored)}) to evaluate it on {where}"
        )
    if stored:
        position = {name: i for i, name in enumerate(stored)}
        unknown = [f for f in folders if f not in position]
        if unknown:
            shown = ", ".join(list(stored)[:5]) + (", ..." if len(stored) > 5 else "")
            raise UserError(
                f"class folder {where}/{unknown[0]} is not one of the {len(stored)} classes the "
                f"checkpoint was trained on ({shown}): its images have no logit to be scored by"
                + unicode_note(unknown, list(stored))
            )
        index = {f: position[f] for f in folders}
        return ClassMatch(index, tuple(stored), "by name, to the checkpoint's classes")
    if imagenet_head(folders, num_logits):
        shift = num_logits - 1000  # slim's 1001: background at 0
        index = {f: synset_index()[f] + shift for f in folders}
        synsets = tuple(s for s, _ in imagenet_classes())
        names = ("background", *synsets) if shift else synsets
        rule = "by name, to ImageNet-1k's synsets" + (" (slim: background at 0)" if shift else "")
        return ClassMatch(index, names, rule)
    if len(folders) == num_logits:
        return _by_order(sorted(folders), order, where)
    raise UserError(
        f"{where} has {len(folders)} class folders and the model {num_logits} logits, and "
        "neither the checkpoint's class names nor ImageNet's synsets name them: which logit "
        "scores which folder is unknown (set model.num_classes only if the model was trained "
        "on exactly these folders, in sorted order)"
    )


def check_order_given(folders: Sequence[str], order: str | None, where: str, why: str) -> None:
    """Where torchvision's sorted and timm's natural orders of the folders differ, ``order``
    (data.class_order) must say which one logit k follows; ``why``: why it matters here."""
    from timm.utils.misc import natural_key  # what timm's ImageDataset sorts classes by

    folders = sorted(folders)
    natural = sorted(folders, key=natural_key)
    if order is None and natural != folders:
        k = next(i for i, (a, b) in enumerate(zip(folders, natural)) if a != b)
        raise UserError(
            f"{where}: {why}, and logit {k} is folder '{folders[k]}' in torchvision's sorted "
            f"order but '{natural[k]}' in timm's natural order: set data.class_order=sorted or "
            "natural, as the weights were trained"
        )


def check_kept_head_classes(
    stored: Sequence[str], folders: Sequence[str], source: str, heads: Sequence[str]
) -> None:
    """Fine-tuning a classifier kept from a checkpoint that names its logits (``stored``):
    the training folders, numbered in the run's order (``folders``), must be those classes in
    that order, or folder k would train another class's logit k."""
    from timm.utils.misc import natural_key

    stored, folders = list(stored), list(folders)
    if stored[: len(folders)] == folders:  # folder k is logit k (a head with spare logits too)
        return
    new_head = f"set model.exclude={','.join(heads) or '<its classifier>'} to train a new one"
    if sorted(stored) != sorted(folders):
        extra = next((f for f in folders if f not in stored), None)
        which = f"'{extra}' is not one of them" if extra else "these are only some of them"
        raise UserError(
            f"checkpoint {source}: its classifier was trained on classes {_few(stored)}; of the "
            f"training folders ({_few(folders)}) {which}: {new_head}"
        )
    k = next(i for i, (a, b) in enumerate(zip(stored, folders)) if a != b)
    same = {"sorted": sorted(folders), "natural": sorted(folders, key=natural_key)}
    order = next((o for o, names in same.items() if names == stored), None)
    where = f"checkpoint {source}: its classifier's logit {k} is '{stored[k]}' there and "
    where += f"'{folders[k]}' here"
    if order:
        raise UserError(f"{where}: set data.class_order={order}, the order it was trained in")
    raise UserError(f"{where}, an order neither sorted nor natural: {new_head}")


def _few(names: Sequence[str]) -> str:
    return ", ".join(names[:5]) + (f", ... ({len(names)})" if len(names) > 5 else "")


def _by_order(folders: list[str], order: str | None, where: str) -> ClassMatch:
    """Rule 3: the i-th folder of ``order`` is logit i."""
    from timm.utils.misc import natural_key

    check_order_given(folders, order, where, "the weights name no classes")
    chosen = sorted(folders, key=natural_key) if order == "natural" else folders
    return ClassMatch(
        {f: i for i, f in enumerate(chosen)}, tuple(chosen), ORDERS[order or "sorted"]
    )
