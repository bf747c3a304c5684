# SPDX-License-Identifier: Apache-2.0
"""fwassist: on-device inference for sparse MoE code models with sub-4-bit weights."""

from __future__ import annotations

from typing import Any

from . import _core, kernels
from .batch import BatchDecoder
from .errors import (ArtifactError, BatchError, BatchRequestError, Error, ExportError,
                     MissingExtraError, NoFreeSlotError, ReleaseError)
from .loader import load_artifact
from .runtime import Generation, Model, Session, Stream, Token
from .tokenizer import Tokenizer

__version__ = "0.1.0"
__all__ = ["__version__", "cpu_info", "kernels", "load_artifact", "Error", "ArtifactError",
           "ReleaseError", "ExportError", "MissingExtraError", "Tokenizer",
           "Model", "Session", "Generation", "Stream", "Token", "BatchDecoder", "BatchError",
           "BatchRequestError", "NoFreeSlotError"]


def cpu_info() -> dict[str, Any]:
    """CPU features (detected, and in use after FWA_CPU_FEATURES) and the kernel per operation.

    Keys: ``arch``, ``features`` and ``detected`` (lists of names), ``sve_vector_bits``,
    ``variants`` (kernel variants usable here, best first) and ``kernels`` (operation -> variant).
    """
    info = dict(_core.cpu_info())
    info["features"] = [f for f in info["features"].split(",") if f]
    info["detected"] = [f for f in info["detected"].split(",") if f]
    info["variants"] = list(info["variants"])
    info["kernels"] = dict(info["kernels"])
    return info
