# SPDX-License-Identifier: Apache-2.0
"""Builds the generation-metadata fixtures with the real tools (not needed to run the tests).

Pinned: transformers 5.25.0 with tokenizers 0.23.3, and transformers 4.57.6 with tokenizers
0.22.2 (no torch needed). Run it once in each virtualenv::

    python tests/conformance/make_generation.py    # writes fixtures/generation/tf<major>/

A tiny byte-level BPE (a subset of the byte alphabet and three special tokens, 31 ids, so that
it fits the 64-token conformance models) is built with ``tokenizers`` and saved by
transformers' own ``PreTrainedTokenizerFast.save_pretrained`` and ``GenerationConfig
.save_pretrained``, in each form those versions write:

* ``jinja``: the default save: the chat template in ``chat_template.jinja``; the generation
  config lists two end-of-sequence ids;
* ``inline_named``: ``save_jinja_files=False`` with named templates (``default`` and
  ``tool_use``): a list of ``{name, template}`` in ``tokenizer_config.json``; a bos token; the
  generation config's ``eos_token_id`` a single integer;
* ``inline_string``: ``save_jinja_files=False`` with one template: a string in
  ``tokenizer_config.json``; no generation config;
* ``no_default``: named templates without a ``default`` (transformers refuses to pick one).

Each directory gets ``expected.json``: what transformers itself loads back
(``AutoTokenizer`` / ``GenerationConfig.from_pretrained``): the union of the tokenizer's and
the generation config's end-of-sequence ids, the bos and pad ids, and the chat template
``apply_chat_template`` uses (or the error it raises), with its rendering of one conversation.
"""

from __future__ import annotations

import json
import os
import shutil

import tokenizers
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoTokenizer, GenerationConfig, PreTrainedTokenizerFast

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "fixtures", "generation", f"tf{transformers.__version__.split('.')[0]}")
TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
            "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
CONVERSATION = [{"role": "user", "content": "hi"}]


def base_tokenizer() -> Tokenizer:
    vocab = {c: i for i, c in enumerate("abcdefghijklmnopqrstuvwxyzĠĊ")}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def save(name: str, template: object, *, bos: bool, eos_ids: object, jinja: bool) -> None:
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    kw = {"bos_token": "<s>"} if bos else {}
    f = PreTrainedTokenizerFast(tokenizer_object=base_tokenizer(), eos_token="<|im_end|>",
                                pad_token="<|endoftext|>",
                                additional_special_tokens=["<|im_start|>"], **kw)
    f.chat_template = template
    if jinja:
        f.save_pretrained(d)
    else:
        f.save_pretrained(d, save_jinja_files=False)
    ids = {t: f.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")}
    if eos_ids is not None:
        eos = [ids[t] for t in eos_ids] if isinstance(eos_ids, list) else ids[str(eos_ids)]
        GenerationConfig(eos_token_id=eos, pad_token_id=ids["<|endoftext|>"]).save_pretrained(d)

    # The reference: what transformers loads back.
    t = AutoTokenizer.from_pretrained(d)
    eos_union = {t.eos_token_id}
    bos_id, pad_id = t.bos_token_id, t.pad_token_id
    if os.path.exists(os.path.join(d, "generation_config.json")):
        g = GenerationConfig.from_pretrained(d)
        e = g.eos_token_id
        eos_union |= set(e if isinstance(e, list) else [e])
        bos_id = g.bos_token_id if g.bos_token_id is not None else bos_id
        pad_id = g.pad_token_id if g.pad_token_id is not None else pad_id
    expected: dict[str, object] = {
        "transformers": transformers.__version__, "tokenizers": tokenizers.__version__,
        "eos_token_ids": sorted(eos_union), "bos_token_id": bos_id, "pad_token_id": pad_id,
        "vocab": len(t),
    }
    try:
        expected["rendered"] = t.apply_chat_template(CONVERSATION, tokenize=False,
                                                     add_generation_prompt=True)
        ct = t.chat_template
        expected["chat_template"] = ct["default"] if isinstance(ct, dict) else ct
    except ValueError as e:
        expected["error"] = str(e)
    with open(os.path.join(d, "expected.json"), "w", encoding="utf-8") as fh:
        json.dump(expected, fh, indent=1, ensure_ascii=False, sort_keys=True)
        fh.write("\n")


def main() -> None:
    save("jinja", TEMPLATE, bos=False, eos_ids=["<|im_end|>", "<|endoftext|>"], jinja=True)
    save("inline_named", {"default": TEMPLATE, "tool_use": TEMPLATE + "{# tools #}"}, bos=True,
         eos_ids="<|im_end|>", jinja=False)
    save("inline_string", TEMPLATE, bos=False, eos_ids=None, jinja=False)
    save("no_default", {"tool_use": TEMPLATE, "rag": TEMPLATE + "{# rag #}"}, bos=False,
         eos_ids="<|endoftext|>", jinja=False)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
