# SPDX-License-Identifier: Apache-2.0
"""The importer's output type, defined with the artifact writer that consumes it
(:mod:`fwassist.artifact.model`): the export package depends on the artifact package, never
the reverse."""

from __future__ import annotations

from ..artifact.model import (EXPERT_ROLES, ROLES, BF16Array, ImportedModel, ModelTensor,
                              QuantizedWeight)

__all__ = ["ROLES", "EXPERT_ROLES", "QuantizedWeight", "ModelTensor", "BF16Array",
           "ImportedModel"]
