"""``classzoo recipes [show NAME[:VARIANT]]``: the recipes shipped with classzoo, their variants,
and one recipe as the complete config it gives (variant applied, every default filled in)."""

from __future__ import annotations

import argparse
import dataclasses

from classzoo.cli.common import HelpFormatter, add_verb, print_json


def add_parser(subparsers) -> None:
    r = add_verb(subparsers, "recipes", "list the recipes shipped with classzoo and their variants")
    r.add_argument("--json", action="store_true", help="print {name: {summary, variants}}")
    rsub = r.add_subparsers(dest="recipes_action", metavar="show")
    show = rsub.add_parser(
        "show",
        help="print a recipe as YAML with its variant applied and every default filled in",
        formatter_class=HelpFormatter,
    )
    show.add_argument("recipe", help="NAME, NAME:VARIANT or a YAML file")
    show.add_argument("--json", action="store_true", help="print JSON instead of YAML")


def run(args: argparse.Namespace) -> int:
    if args.recipes_action == "show":
        return _show(args.recipe, args.json)
    table = recipe_table()
    if args.json:
        print_json(table)
        return 0
    for name, entry in table.items():
        print(f"{name:26s} {entry['summary']}")
        for variant, settings in entry["variants"].items():
            changes = " ".join(f"{k}={'null' if v is None else v}" for k, v in settings.items())
            print(f"  {f'{name}:{variant}':24s} {changes}")
    return 0


def recipe_table() -> dict[str, dict]:
    """name -> {summary: first header line, variants: {variant: {key: value}}}."""
    from classzoo.config import list_recipes, parse_yaml, recipe_path

    out = {}
    for name, summary in list_recipes().items():
        raw = parse_yaml(recipe_path(name)[0].read_text()) or {}
        variants = raw.get("variants") or {}
        out[name] = {
            "summary": summary,
            "variants": {k: dict(v or {}) for k, v in variants.items()},
        }
    return out


def _show(spec: str, as_json: bool) -> int:
    import yaml

    from classzoo.config import load_recipe, recipe_path

    cfg = load_recipe(spec)
    values = dataclasses.asdict(cfg)
    if as_json:
        print_json(values)
        return 0
    path = recipe_path(spec)[0]
    header = [line for line in path.read_text().splitlines() if line.startswith("#")]
    for line in header:
        if not line.strip("# "):
            break
        print(line)
    print(yaml.safe_dump(values, sort_keys=False, default_flow_style=None), end="")
    return 0
