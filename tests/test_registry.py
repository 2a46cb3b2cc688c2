"""A model registered for a while (a test's probe) is gone once its ``with`` block ends."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

from classzoo.cli import main
from classzoo.errors import UserError
from classzoo.models import create_model
from classzoo.models.registry import registered_model, registry, unregister_model

NAME = "test_registry_probe"
DEFAULTS = {"input_size": (3, 8, 8), "crop_pct": 1.0, "num_classes": 5}


def _probe(num_classes: int = 5) -> nn.Module:
    model = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(3, num_classes))
    model.num_classes = num_classes
    return model


def _listed(capsys) -> str:
    assert main(["models", "test_registry_*"]) == 0
    return capsys.readouterr().out


def test_registered_inside_the_block_unknown_after(capsys):
    with registered_model(NAME, _probe, DEFAULTS, "a probe") as entry:
        assert entry.name == NAME and entry.defaults == DEFAULTS
        model = create_model(NAME, num_classes=4)
        assert model(torch.zeros(2, 3, 8, 8)).shape == (2, 4)
        assert NAME in _listed(capsys)
    assert NAME not in registry()
    assert _listed(capsys) == ""
    with pytest.raises(UserError) as err:
        create_model(NAME)
    assert str(err.value).startswith(f"unknown model '{NAME}'")
    assert "\n" not in str(err.value)


def test_an_error_in_the_block_still_unregisters():
    with pytest.raises(RuntimeError, match="boom"), registered_model(NAME, _probe, DEFAULTS):
        raise RuntimeError("boom")
    assert NAME not in registry()
    with registered_model(NAME, _probe, DEFAULTS):  # so the name is free again
        assert NAME in registry()


def test_a_name_cannot_be_taken_twice_or_removed_when_absent():
    with registered_model(NAME, _probe, DEFAULTS):
        twice = registered_model(NAME, _probe, DEFAULTS)
        with pytest.raises(ValueError, match="registered twice"), twice:
            pass
        assert NAME in registry()  # the failed second registration removed nothing
    with pytest.raises(ValueError, match="not registered"):
        unregister_model(NAME)
    builtin = registered_model("resnet_v1_50", _probe, DEFAULTS)  # not shadowed
    with pytest.raises(ValueError, match="registered twice"), builtin:
        pass


def test_builtins_still_load_lazily_around_a_scoped_model():
    """In a fresh process the first registry call is the context manager's: the TF-slim
    builtins must still be there inside and after the block."""
    code = (
        "import torch.nn as nn\n"
        "from classzoo.models.registry import registered_model, registry\n"
        "with registered_model('p', nn.Identity, {'input_size': (3, 8, 8)}):\n"
        "    inside = sorted(registry())\n"
        "print(inside, sorted(registry()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    builtins = ["inception_v4", "resnet_v1_101", "resnet_v1_152", "resnet_v1_50"]
    assert out.strip() == f"{sorted([*builtins, 'p'])} {builtins}"
