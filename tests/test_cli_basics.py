"""The command line as a user meets it: --version, help with defaults, strict JSON, closed pipes."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import pytest

import classzoo
from classzoo.cli import build_parser, main
from classzoo.cli.common import to_json

CLI = [sys.executable, "-m", "classzoo"]


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out.strip() == f"classzoo {classzoo.__version__}"


def test_every_flag_has_help_that_shows_its_default():
    missing = []
    for path, parser in _walk(build_parser()):
        text = parser.format_help()
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                continue
            if action.option_strings and action.option_strings[0] == "--version":
                continue
            if not action.help:
                missing.append((path, action.dest, "no help"))
            elif action.option_strings and not action.required:
                shown = parser._get_formatter()._get_help_string(action)
                if "default" not in shown:
                    missing.append((path, action.dest, "no default"))
        assert "usage: classzoo" in text
    assert not missing, missing


def test_json_helper_writes_null_for_non_finite_floats():
    text = to_json({"top1": float("nan"), "loss": float("inf"), "xs": [1.5, float("-inf")]})
    assert json.loads(text) == {"top1": None, "loss": None, "xs": [1.5, None]}
    assert "NaN" not in text and "Infinity" not in text


def test_closed_pipe_ends_quietly_with_141():
    """`classzoo recipes | head -0`: the reader is gone before the first write."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [*CLI, "recipes"], stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=120
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 141
    assert proc.stderr == ""


def test_python_dash_m_and_user_error_exit_code():
    proc = subprocess.run(
        [*CLI, "convert", "slim", "--model", "resnet_v1_50", "--checkpoint", "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert (
        len(lines) == 1
        and lines[0] == "classzoo: error: convert slim: --output is required (or --list)"
    )


def test_eval_json_is_strict_json_when_the_loss_is_nan(small_imagefolder, tmp_path, capsys):
    """Finite weights that overflow: logits +inf and -inf, so the loss is NaN (inf - inf), which
    `--json` must write as null."""
    import timm
    import torch

    kw = {"channels": [8, 16, 32, 64], "stem_width": 8}
    model = timm.create_model("resnet10t", num_classes=4, **kw)
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.weight[0].fill_(3e38)  # pooled ReLU features are >= 0: their sum overflows
        model.fc.weight[1].fill_(-3e38)
    config = {
        "model": {"name": "resnet10t", "num_classes": 4, "kwargs": kw},
        "data": {"image_size": 16, "crop_pct": 1.0, "num_workers": 0},
    }
    ckpt = tmp_path / "nan.pt"
    torch.save({"model": model.state_dict(), "config": config}, ckpt)
    argv = ["eval", "--checkpoint", str(ckpt), "--data-dir", str(small_imagefolder), "--json"]
    assert main([*argv, "--split", "val"]) == 0
    text = capsys.readouterr().out.strip().splitlines()[-1]
    result = json.loads(text, parse_constant=lambda token: pytest.fail(f"not JSON: {token}"))
    assert result["loss"] is None and result["count"] == 20
