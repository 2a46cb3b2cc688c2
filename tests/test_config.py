"""Recipes, overrides and their errors."""

from __future__ import annotations

import pytest

from classzoo.config import list_recipes, load_recipe, with_overrides
from classzoo.errors import UserError


def test_quickstart_recipe_loads_with_typed_values():
    cfg = load_recipe("quickstart")
    assert cfg.recipe == "quickstart"
    assert cfg.model.name == "resnet10t"
    assert cfg.data.batch_size == 256 and isinstance(cfg.optim.lr, float)
    assert "quickstart" in list_recipes()


def test_overrides_coerce_to_declared_types():
    cfg = load_recipe(
        "quickstart",
        [
            "optim.lr=1e-3",
            "data.batch_size=64",
            "train.ema=true",
            "data.mean=[0.5,0.5,0.5]",
            "model.num_classes=none",
            "train.epochs=2",
        ],
    )
    assert cfg.optim.lr == pytest.approx(1e-3)
    assert cfg.data.batch_size == 64 and cfg.train.ema is True
    assert cfg.data.mean == [0.5, 0.5, 0.5] and cfg.model.num_classes is None
    assert cfg.train.epochs == 2.0 and isinstance(cfg.train.epochs, float)


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("optim.lrr=0.1", "unknown key 'optim.lrr'; did you mean 'optim.lr'?"),
        ("trian.epochs=1", "unknown key 'trian'; did you mean 'train'?"),
        ("data.batch_size=abc", "data.batch_size='abc' is not a valid int"),
        ("train.amp=fp8", "train.amp='fp8' is not one of auto, off, bf16, fp16"),
        ("train", "--set expects key=value"),
        ("train.seed.x=1", "'train.seed' is a value, not a section"),
    ],
)
def test_bad_overrides_name_the_key(override, expected):
    cfg = load_recipe("quickstart")
    with pytest.raises(UserError) as err:
        with_overrides(cfg, [override])
    assert expected in str(err.value)


def test_unknown_key_lists_allowed_keys():
    with pytest.raises(UserError) as err:
        with_overrides(load_recipe("quickstart"), ["optim.momentun=0.8"])
    message = str(err.value)
    assert "optim.momentum" in message and "allowed:" in message and "\n" not in message


def test_unknown_recipe_suggests_a_name():
    with pytest.raises(UserError, match="unknown recipe 'quickstrat'; did you mean quickstart"):
        load_recipe("quickstrat")


def test_recipe_file_with_unknown_key(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  name: resnet18\noptim:\n  learning_rate: 0.1\n")
    with pytest.raises(UserError, match=r"mine.yaml: unknown key 'optim.learning_rate'"):
        load_recipe(str(path))
