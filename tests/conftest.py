# SPDX-License-Identifier: Apache-2.0
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20261125)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Where the session's tiny models are built (tests/model_fixtures.py), each once."""
    return tmp_path_factory.mktemp("tiny_models")


@pytest.fixture(scope="session")
def build_tiny_model(tiny_model_dir):
    """build_model(**kwargs) -> (fwa_path, onnx_path, config), cached for the session."""
    from model_fixtures import build_model

    def build(**kwargs):
        return build_model(tiny_model_dir, **kwargs)

    return build
