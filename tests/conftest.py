# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import os

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261125)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Where the session's tiny models are built (tests/model_fixtures.py), each once; or,
    when FWA_TINY_MODELS names a directory, where the host built them beforehand
    (tests/cross/make_tiny_models.py: building needs onnxruntime, which the aarch64 run under
    qemu-user cannot import)."""
    prebuilt = os.environ.get("FWA_TINY_MODELS")
    return prebuilt if prebuilt else tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def build_tiny_model(tiny_model_dir):
    """build_model(**kwargs) -> (fwa_path, onnx_path, config), cached for the session; with
    FWA_TINY_MODELS, only the models built there are available."""
    from model_fixtures import build_model

    prebuilt_only = bool(os.environ.get("FWA_TINY_MODELS"))

    def build(**kwargs):
        return build_model(tiny_model_dir, prebuilt_only=prebuilt_only, **kwargs)

    return build
