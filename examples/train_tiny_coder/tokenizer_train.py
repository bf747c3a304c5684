# SPDX-License-Identifier: Apache-2.0
"""Trains the byte-level BPE tokenizer of the tiny C-code model on a corpus built by
``corpus.py`` (train split only) and writes a ``tokenizer.json`` in the one configuration
that fwassist's native tokenizer accepts:

* normalizer NFC;
* pre-tokenizer Sequence[Split(Qwen2 regex, isolated), ByteLevel(no prefix space, no regex)];
* BPE model over the full 256-byte ByteLevel alphabet, ``<|endoftext|>`` as special id 0;
* ByteLevel decoder, no post-processor, no truncation or padding.

Beside the tokenizer it writes ``tokenizer_stats.json`` (vocabulary size, bytes and tokens of
each split, bytes per token). Training is deterministic for the same corpus and options.

Usage: ``python tokenizer_train.py --corpus DIR --vocab 4096 --out tokenizer.json``
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from corpus import write_atomic  # noqa: E402
from tokenizers import (Regex, Tokenizer, decoders, models, normalizers,  # noqa: E402
                        pre_tokenizers, trainers)

QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
END_OF_TEXT = "<|endoftext|>"


def read_texts(path: Path) -> Iterator[str]:
    """The ``text`` of every record of a corpus ``*.jsonl`` file, in file order."""
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)["text"]


def new_tokenizer() -> Tokenizer:
    """An untrained tokenizer with the supported normalizer/pre-tokenizer/decoder."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def train_tokenizer(texts: list[str], vocab_size: int) -> Tokenizer:
    """Trains a byte-level BPE on ``texts``; ``<|endoftext|>`` gets id 0."""
    tokenizer = new_tokenizer()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=[END_OF_TEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer, length=len(texts))
    if tokenizer.token_to_id(END_OF_TEXT) != 0:
        raise RuntimeError(f"{END_OF_TEXT} did not get id 0")
    return tokenizer


def count_tokens(tokenizer: Tokenizer, texts: list[str], batch: int = 256) -> int:
    """Total number of tokens of ``texts`` (no special tokens added)."""
    total = 0
    for start in range(0, len(texts), batch):
        encodings = tokenizer.encode_batch(texts[start : start + batch], add_special_tokens=False)
        total += sum(len(e.ids) for e in encodings)
    return total


def split_stats(tokenizer: Tokenizer, texts: list[str]) -> dict[str, float | int]:
    """Files, UTF-8 bytes, tokens and bytes/token of one split."""
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = count_tokens(tokenizer, texts)
    ratio = round(n_bytes / n_tokens, 4) if n_tokens else 0.0
    return {"files": len(texts), "bytes": n_bytes, "tokens": n_tokens, "bytes_per_token": ratio}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the tiny coder's byte-level BPE.")
    parser.add_argument("--corpus", type=Path, required=True, help="corpus.py output dir")
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--out", type=Path, required=True, help="tokenizer.json to write")
    args = parser.parse_args(argv)
    train = list(read_texts(args.corpus / "train.jsonl"))
    test_path = args.corpus / "test.jsonl"
    test = list(read_texts(test_path)) if test_path.exists() else []
    if not train:
        print("tokenizer_train: error: empty train split", file=sys.stderr)
        return 1
    tokenizer = train_tokenizer(train, args.vocab)
    write_atomic(args.out, tokenizer.to_str(pretty=True).encode("utf-8"))
    stats = {
        "vocab_size": tokenizer.get_vocab_size(with_added_tokens=True),
        "vocab_requested": args.vocab,
        "train": split_stats(tokenizer, train),
        "test": split_stats(tokenizer, test),
    }
    stats_text = json.dumps(stats, indent=1, sort_keys=True) + "\n"
    write_atomic(args.out.parent / "tokenizer_stats.json", stats_text.encode("utf-8"))
    print(json.dumps(stats, indent=1, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
