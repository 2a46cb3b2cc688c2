"""Import TensorFlow and tf-slim for parity tests (the `compat` extra).

tf-slim 1.1.0 imports ``tf_keras.legacy_tf_layers``, which pip's tf_keras ships as
``tf_keras.src.legacy_tf_layers``; alias it before importing tf_slim. Tests call
``tf = import_tf()`` / ``slim = import_tf_slim()``; both skip the test when the extra is absent.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys

import pytest


def import_tf():
    # Importing TensorFlow before timm/torch crashed the process (segfault) here: torch first.
    import timm  # noqa: F401
    import torch  # noqa: F401

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
    return pytest.importorskip("tensorflow")


def import_tf_slim():
    import_tf()
    if "tf_keras.legacy_tf_layers" not in sys.modules:
        try:
            legacy = importlib.import_module("tf_keras.src.legacy_tf_layers")
        except ImportError:
            pytest.skip("tf_keras is not installed (pip install classzoo[compat])")
        sys.modules["tf_keras.legacy_tf_layers"] = legacy
        for sub in (
            "base",
            "core",
            "convolutional",
            "normalization",
            "pooling",
            "variable_scope_shim",
        ):
            with contextlib.suppress(ImportError):
                sys.modules[f"tf_keras.legacy_tf_layers.{sub}"] = importlib.import_module(
                    f"tf_keras.src.legacy_tf_layers.{sub}"
                )
    return pytest.importorskip("tf_slim")
