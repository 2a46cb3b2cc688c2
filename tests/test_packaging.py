"""The built wheel: installed into an environment that already has torch, it keeps that torch
(lower bounds, not pins), ships recipes, class names and the reference scripts, and its
console script answers `--version`, `recipes` and `models`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import classzoo
from classzoo.data import jpeg_region

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{argv}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_wheel_installs_next_to_an_existing_torch_and_runs(tmp_path):
    tree = tmp_path / "tree"  # a copy: the build's own files stay out of the working tree
    tree.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md", "src", "scripts"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        # *.so: an extension built in this checkout; the wheel builds its own
        ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.so")
        kwargs = {"symlinks": True, "ignore": ignore}
        copy(ROOT / name, tree / name, **(kwargs if copy is shutil.copytree else {}))
    wheels = tmp_path / "wheels"
    # no build isolation and no index: nothing is downloaded (setuptools is already here)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         str(tree), "-w", str(wheels), cwd=tmp_path)  # fmt: skip
    (wheel,) = wheels.glob("classzoo-*.whl")

    venv = tmp_path / "venv"  # sees this interpreter's packages (torch) but installs into its own
    _run(sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv),
         cwd=tmp_path)  # fmt: skip
    py = venv / "bin" / "python"
    where = "import torch; print(torch.__version__, torch.__file__)"
    before = _run(str(py), "-c", where, cwd=tmp_path).stdout
    install = _run(sys.executable, "-m", "pip", "--python", str(py), "install", "--no-index",
                   str(wheel), cwd=tmp_path).stdout  # fmt: skip
    assert "Successfully installed classzoo-" in install
    installed = install.split("Successfully installed", 1)[1].split()
    assert [p for p in installed if not p.startswith("classzoo-")] == [], install
    assert "torch>=2.5 in" in install  # the requirement is a lower bound, met as it is
    assert _run(str(py), "-c", where, cwd=tmp_path).stdout == before

    site = _run(str(py), "-c", "import classzoo; print(classzoo.__file__)", cwd=tmp_path).stdout
    assert site.startswith(str(venv)), site  # the wheel's copy, not this checkout
    package = Path(site.strip()).parent
    assert (package / "scripts" / "resnet152" / "test_1p.sh").is_file()
    assert (package / "data_files" / "imagenet_classes.tsv").is_file()
    # the JPEG window decoder is compiled into the wheel wherever it is built here
    ask = "from classzoo.data import jpeg_region as j; print(j.state())"
    there, here = _run(str(py), "-c", ask, cwd=tmp_path).stdout.strip(), jpeg_region.state()
    assert there.startswith("off") == here.startswith("off"), (here, there)

    cli = str(venv / "bin" / "classzoo")
    assert _run(cli, "--version", cwd=tmp_path).stdout.strip() == f"classzoo {classzoo.__version__}"
    assert "inception_v4:smoke" in _run(cli, "recipes", cwd=tmp_path).stdout
    models = _run(cli, "models", "resnet_v1_5*", cwd=tmp_path).stdout
    assert models.startswith("resnet_v1_50     [classzoo slim layout; timm: slim_resnet_v1_50]")
