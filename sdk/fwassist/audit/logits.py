# SPDX-License-Identifier: Apache-2.0
"""The logits digest that ties a device's output to a PC's: SHA-256 of the float32
(little-endian) logits of every position of a fixed prompt, row-major [positions, vocab].

The runtime's logits are bit-identical across ISAs, thread counts and prefill chunk sizes
(docs/runtime.md, "Determinism"), so the digest is the same on the device and on any PC. The
default probe is the one of the cross-ISA check ``tests/cpp/logits_digest.cpp``: 48 ids,
``(i * 37 + 11) % vocab_size``. Through the C ABI a device computes it token by token
(``fwa_session_eval`` of one id, then ``fwa_session_logits``), since each position's logits
are the same whichever way the prompt is split.
"""

from __future__ import annotations

import hashlib
from typing import Any, Optional, Sequence

import numpy as np

__all__ = ["probe_ids", "logits_digest", "greedy_ids", "PROBE_LENGTH", "RUN_PROMPT_LENGTH",
           "RUN_MAX_TOKENS"]

PROBE_LENGTH = 48
RUN_PROMPT_LENGTH = 8
RUN_MAX_TOKENS = 16


def probe_ids(vocab_size: int, n: int = PROBE_LENGTH) -> list[int]:
    """The default probe prompt (the one of tests/cpp/logits_digest.cpp)."""
    return [(i * 37 + 11) % vocab_size for i in range(n)]


def logits_digest(model: Any, ids: Sequence[int], mode: str,
                  prefill_chunk: int = 128) -> str:
    """``sha256:<hex>`` of the logits of every position of ``ids`` in ``mode``."""
    with model.session(max_context=len(ids), mode=mode, threads=1,
                       prefill_chunk=prefill_chunk) as s:
        lg = s.logits(list(ids))
    return "sha256:" + hashlib.sha256(np.ascontiguousarray(lg, dtype="<f4").tobytes()).hexdigest()


def greedy_ids(model: Any, prompt_ids: Sequence[int], mode: str,
               max_tokens: int = RUN_MAX_TOKENS) -> tuple[list[int], Optional[str]]:
    """(ids, text) of a greedy generation without end-of-text stops, as
    ``fwassist run --prompt-ids ... --no-eos --temperature 0`` produces them; text is None for
    a model without a tokenizer (``run`` then prints the ids)."""
    with model.session(mode=mode, threads=1) as s:
        g = s.generate(prompt_ids=list(prompt_ids), max_tokens=max_tokens, temperature=0.0)
    return list(g.token_ids), (g.text if model.tokenizer is not None else None)
