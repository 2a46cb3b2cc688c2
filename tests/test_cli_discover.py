"""Discoverability through the CLI: recipes with their variants, a recipe printed as the config
it gives, model lists; every --json output is strict JSON."""

from __future__ import annotations

import json

import timm
import yaml

from classzoo.cli import main
from classzoo.config import RECIPE_DIR, load_recipe


def _out(capsys, argv: list[str]) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


def _strict(text: str):
    def refuse(token):
        raise AssertionError(f"not JSON: {token}")

    return json.loads(text, parse_constant=refuse)


def test_recipes_lists_every_recipe_with_its_variants(capsys):
    text = _out(capsys, ["recipes"])
    table = _strict(_out(capsys, ["recipes", "--json"]))
    for path in sorted(RECIPE_DIR.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        variants = raw.get("variants") or {}
        assert path.stem in text and set(table[path.stem]["variants"]) == set(variants)
        for variant in variants:
            assert f"{path.stem}:{variant} " in text


def test_recipes_show_prints_the_config_with_the_variant_applied(capsys):
    text = _out(capsys, ["recipes", "show", "inception_v4:smoke"])
    assert text.startswith("# classzoo train --recipe inception_v4")
    shown = yaml.safe_load(text)
    cfg = load_recipe("inception_v4:smoke")
    assert shown["recipe"] == "inception_v4:smoke"
    assert shown["data"]["source"] == "synthetic" == cfg.data.source
    assert shown["train"]["max_steps"] == cfg.train.max_steps
    as_json = _strict(_out(capsys, ["recipes", "show", "inception_v4:smoke", "--json"]))
    assert as_json["data"] == shown["data"]


def test_recipes_show_unknown_variant_is_one_line(capsys):
    assert main(["recipes", "show", "inception_v4:nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "classzoo: error: recipe inception_v4 has no variant 'nope' (variants: 8p, smoke)"
    ]


def test_models_lists_classzoo_layouts_and_timm_names(capsys):
    rows = _strict(_out(capsys, ["models", "resnet_v1*", "--json"]))
    ours = {r["name"]: r for r in rows if r["source"] == "classzoo"}
    assert set(ours) == {"resnet_v1_50", "resnet_v1_101", "resnet_v1_152"}
    assert ours["resnet_v1_50"]["timm_name"] == "slim_resnet_v1_50"
    assert ours["resnet_v1_50"]["num_classes"] == 1000 and ours["resnet_v1_50"]["label_offset"] == 1
    text = _out(capsys, ["models", "resnet1*"])
    assert text.split() == timm.list_models("resnet1*")  # timm's names, nothing of ours
    text = _out(capsys, ["models", "*inception_v4"])
    assert "inception_v4     [classzoo slim layout; timm: slim_inception_v4]" in text
    assert "\ninception_v4\n" not in text  # timm's own inception_v4 is shadowed inside classzoo


def test_models_with_a_bare_word_says_the_pattern_is_whole(capsys):
    """fnmatch, as timm.list_models: 'slim' matches no name and printed nothing at all."""
    assert timm.list_models("slim") == []
    assert main(["models", "slim"]) == 0
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "classzoo models '*slim*'" in captured.err
    assert "slim_resnet_v1_50" in _out(capsys, ["models", "*slim*"])
