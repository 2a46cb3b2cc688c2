"""Walk the whole surface: every model classzoo registers builds, runs forward and backward with
finite gradients (timm's practice, tests/test_models.py there); every recipe's ``:smoke``
variant trains end to end through the CLI, as its header says to launch it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from classzoo.config import RECIPE_DIR, list_recipes, parse_yaml
from classzoo.models import create_model
from classzoo.models.registry import registry

# The smallest input each layout takes: slim resnet_v1 downsamples 32x; inception_v4 needs 75 px
# and its aux head (5x5/3 VALID pool on Mixed_6h) a 5 px Mixed_6h map: 107 px is the least.
SMALL_INPUT = {"inception_v4": 107}


@pytest.mark.parametrize("name", sorted(registry()))
def test_registered_model_forward_backward(name):
    entry = registry()[name]
    size = SMALL_INPUT.get(name, 64)
    kwargs = {"img_size": size} if entry.defaults.get("takes_img_size") else {}
    torch.manual_seed(0)
    model = create_model(name, num_classes=7, **kwargs).train()
    x = torch.randn(2, 3, size, size)
    out = model(x)
    outputs = out if isinstance(out, (tuple, list)) else (out,)
    assert all(o.shape == (2, 7) for o in outputs), [o.shape for o in outputs]
    sum(o.float().logsumexp(1).sum() for o in outputs).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 7)  # eval mode: the main logits only


def _smoke_recipes() -> list[str]:
    names = []
    for name in sorted(list_recipes()):
        variants = parse_yaml((RECIPE_DIR / f"{name}.yaml").read_text()).get("variants") or {}
        if "smoke" in variants:
            names.append(f"{name}:smoke")
    return names


def test_every_shipped_recipe_has_a_smoke_variant():
    # quickstart is its own smoke test (tests/test_quickstart.py runs it on the real data)
    assert {r.split(":")[0] for r in _smoke_recipes()} == set(list_recipes()) - {"quickstart"}


@pytest.mark.slow
@pytest.mark.parametrize("recipe", _smoke_recipes())
def test_recipe_smoke_runs_through_the_cli(recipe, tmp_path):
    run = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "classzoo", "train", "--recipe", recipe, "--output-dir", str(run)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["recipe"] == recipe and summary["epochs"] > 0
    assert list((run / "checkpoints").glob("ckpt-*.pt"))
    assert (run / "resolved.yaml").is_file() and (run / "train.log").read_text().strip()
