# SPDX-License-Identifier: Apache-2.0
"""The bundled model: fwassist-tiny-coder, a tiny QAT-trained Qwen3-MoE C-code model (64
experts, top-8; attention 4-bit, experts 3-bit, embedding and lm_head 8-bit), made by
examples/train_tiny_coder (license-gated corpus, tokenizer, training, ``fwassist export``).

Load it only with its pin: ``Model.load(tiny_coder_path(), pin=TINY_CODER_PIN)``.
"""

from __future__ import annotations

import os

TINY_CODER_FILE = "tiny-coder.fwa"
# SHA-256 of the artifact's manifest, which binds every tensor byte (docs/artifact-format.md).
TINY_CODER_PIN = "sha256:60658e0747cf65c9c18ccb27a6d699e3c46ee8e8e4e11516f85f54ac208f9643"


def tiny_coder_path() -> str:
    """Path of the bundled artifact inside the installed package."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), TINY_CODER_FILE)
