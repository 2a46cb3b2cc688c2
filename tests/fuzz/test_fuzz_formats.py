"""Fuzz every byte-format parser and the recipe loader: >= 10,000 mutated inputs each.

A finding is an exception other than classzoo's own ``UserError`` (``WireError`` too for the
raw Example parser), an input taking over 5 s, or memory past 1 GiB over the baseline
(harness.py). Slow: about 2 minutes of CPU for all six on an idle 2-core machine; set
``CLASSZOO_FUZZ_INPUTS`` to run more. Each test prints its figures (``pytest -s``) and appends
them as JSON lines to ``$CLASSZOO_FUZZ_REPORT`` when set.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict

import pytest

from fuzz.harness import fuzz

INPUTS = int(os.environ.get("CLASSZOO_FUZZ_INPUTS", "10000"))

# (target, time box in seconds: ~3x the idle-machine time, a guard against hangs)
TARGETS = [
    pytest.param("TFRECORD", 90, id="tfrecord"),
    pytest.param("EXAMPLE", 150, id="example"),
    pytest.param("SSTABLE", 90, id="sstable"),
    pytest.param("TF_V1", 90, id="tf_v1"),
    pytest.param("TF_V2", 90, id="tf_v2"),
    pytest.param("RECIPE", 300, id="recipe"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "box"), TARGETS)
def test_fuzz(name, box):
    report = fuzz(f"fuzz.targets:{name}", inputs=INPUTS, seconds=box * max(1, INPUTS / 10_000))
    print(report.summary())
    out = os.environ.get("CLASSZOO_FUZZ_REPORT")
    if out:
        with open(out, "a") as f:
            f.write(json.dumps({k: v for k, v in asdict(report).items() if k != "findings"}) + "\n")
    assert report.ok, report.summary()
    assert report.inputs >= INPUTS, f"only {report.inputs} inputs in the {box} s time box"
