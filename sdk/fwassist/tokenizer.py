# SPDX-License-Identifier: Apache-2.0
"""Byte-level BPE tokenizer (native, csrc/model/tokenizer.cpp) built from a Hugging Face
``tokenizer.json``. Encoding and decoding equal Hugging Face ``tokenizers`` for the supported
configurations (BPE model, NFC or no normalizer, GPT-2 ByteLevel or Qwen2 Split+ByteLevel
pre-tokenizer, ByteLevel decoder); anything else is refused with a ValueError naming the feature.
"""

from __future__ import annotations

from collections.abc import Iterable

from . import _core


class Tokenizer:
    """A loaded tokenizer. Calls on one instance are serialised (thread-safe, not parallel)."""

    def __init__(self, native: _core.NativeTokenizer) -> None:
        self._native = native

    @classmethod
    def from_json(cls, text: str) -> Tokenizer:
        """Loads the text of a ``tokenizer.json``. Raises ValueError if it is malformed, uses
        an unsupported feature or exceeds a cap of docs/artifact-format.md §3.8 (token ids
        below 2^21, entries of vocab, merges and added_tokens, nesting), checked before
        anything is allocated for it."""
        if not isinstance(text, str):
            raise TypeError("from_json expects the JSON text as str")
        return cls(_core.NativeTokenizer(text))

    @property
    def vocab_size(self) -> int:
        """Largest token id + 1 (model vocabulary and added tokens)."""
        return int(self._native.vocab_size)

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (added/special tokens in the text are recognised)."""
        try:
            return list(self._native.encode(text))
        except TypeError:
            if isinstance(text, str):
                text.encode("utf-8")  # raises UnicodeEncodeError (a ValueError) on surrogates
            raise

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``; invalid UTF-8 byte sequences become U+FFFD. ValueError on an
        unknown id."""
        return self._native.decode([int(i) for i in ids], skip_special_tokens)
