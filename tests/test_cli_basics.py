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
