"""``classzoo models [PATTERN]``: the model names classzoo builds, its own TF-slim layouts first."""

from __future__ import annotations

import argparse
import sys

from classzoo.cli.common import add_verb, print_json


def add_parser(subparsers) -> None:
    m = add_verb(
        subparsers, "models", "list model names: classzoo's TF-slim layouts, then timm's registry"
    )
    m.add_argument("pattern", nargs="?", default="*", help="fnmatch pattern, e.g. 'resnet*'")
    m.add_argument("--json", action="store_true", help="print a JSON list of {name, source, ...}")


def model_rows(pattern: str) -> list[dict]:
    """classzoo's own models (with their preprocessing) and timm's names matching ``pattern``.

    A slim layout matches by its classzoo name or its timm alias (``slim_resnet_v1_50``)."""
    import fnmatch

    import timm

    from classzoo.models.registry import registry, timm_alias

    rows, aliases = [], set()
    for name, entry in sorted(registry().items()):
        alias = timm_alias(name)
        aliases.add(alias)
        if not any(fnmatch.fnmatchcase(n, pattern) for n in (name, alias) if n):
            continue
        d = entry.defaults
        rows.append(
            {
                "name": name,
                "source": "classzoo",
                "timm_name": alias,
                "description": entry.description,
                "image_size": d["input_size"][-1],
                "num_classes": d.get("num_classes"),
                "preset": d.get("preset"),
                "label_offset": d.get("label_offset", 0),
            }
        )
    # inside classzoo a classzoo name wins (timm's own inception_v4 is timm.create_model's only)
    taken = aliases | set(registry())
    rows += [{"name": n, "source": "timm"} for n in timm.list_models(pattern) if n not in taken]
    return rows


def run(args: argparse.Namespace) -> int:
    rows = model_rows(args.pattern)
    if not rows and not any(c in args.pattern for c in "*?["):
        # fnmatch, as timm.list_models: a bare word matches only that exact name
        print(f"no model is named {args.pattern!r}; for names containing it: "
              f"classzoo models '*{args.pattern}*'", file=sys.stderr)  # fmt: skip
    if args.json:
        print_json(rows)
        return 0
    for r in rows:
        if r["source"] == "classzoo":
            print(
                f"{r['name']:16s} [classzoo slim layout; timm: {r['timm_name']}] "
                f"{r['description']}; {r['image_size']} px, {r['num_classes']} classes, "
                f"data.label_offset {r['label_offset']}"
            )
        else:
            print(r["name"])
    return 0
