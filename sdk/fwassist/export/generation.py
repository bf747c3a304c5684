# SPDX-License-Identifier: Apache-2.0
"""Generation metadata of a Hugging Face checkpoint: end-of-sequence ids, bos and pad ids and
the chat template, as the artifact pins them (docs/artifact-format.md §3.9).

Read from the files transformers writes beside the weights:

* ``tokenizer_config.json``: ``eos_token`` / ``bos_token`` / ``pad_token`` as a string or an
  AddedToken dict (``{"content": ...}``), resolved to ids through ``tokenizer.json``
  (``added_tokens``, then ``model.vocab``) or the config's own ``added_tokens_decoder``;
  ``chat_template`` as a string or a list of ``{name, template}`` (transformers' named
  templates: the one named ``default`` is taken, as ``apply_chat_template`` does; without one
  the export is refused, naming the templates);
* ``generation_config.json``: ``eos_token_id`` (an integer or a list; united with the
  tokenizer's), ``bos_token_id`` and ``pad_token_id`` (they take precedence, as in
  ``generate``);
* ``chat_template.jinja`` (transformers >= 4.43 and 5.x save the default template there; it
  takes precedence over ``tokenizer_config.json``, as when transformers loads it).

A checkpoint without end-of-sequence ids and without a chat template has no generation
metadata (the artifact stays format 1.0). Anything present but unusable is an ExportError
naming the file and the value.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any, Optional

from .jsonfile import load_file
from .tensors import OnnxImportError

__all__ = ["GenerationError", "load_generation", "FILES", "MAX_EOS_IDS", "MAX_CHAT_TEMPLATE"]

TOKENIZER_CONFIG = "tokenizer_config.json"
GENERATION_CONFIG = "generation_config.json"
CHAT_TEMPLATE = "chat_template.jinja"
FILES = (CHAT_TEMPLATE, GENERATION_CONFIG, TOKENIZER_CONFIG)
# The artifact format's caps (§3.8); no import of fwassist.artifact from export/.
MAX_EOS_IDS = 64
MAX_CHAT_TEMPLATE = 256 << 10


class GenerationError(OnnxImportError):
    """Generation metadata that cannot be pinned (an unknown token, an ambiguous template)."""


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _token_ids(tokenizer: Optional[dict[str, Any]],
               config: dict[str, Any]) -> dict[str, int]:
    """Token text -> id: tokenizer.json's added tokens and vocabulary, then the tokenizer
    config's added_tokens_decoder."""
    ids: dict[str, int] = {}
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, dict):
        for k, v in decoder.items():
            if isinstance(v, dict) and isinstance(v.get("content"), str) and k.isdigit():
                ids[v["content"]] = int(k)
    if isinstance(tokenizer, dict):
        model = tokenizer.get("model")
        vocab = model.get("vocab") if isinstance(model, dict) else None
        if isinstance(vocab, dict):
            ids.update((k, v) for k, v in vocab.items() if isinstance(v, int))
        added = tokenizer.get("added_tokens")
        if isinstance(added, list):
            ids.update((a["content"], a["id"]) for a in added if isinstance(a, dict)
                       and isinstance(a.get("content"), str) and isinstance(a.get("id"), int))
    return ids


def _token_text(v: Any, where: str) -> Optional[str]:
    """A special token of tokenizer_config.json: a string, an AddedToken dict, or null."""
    if v is None:
        return None
    if isinstance(v, dict):
        v = v.get("content")
    if not isinstance(v, str) or not v:
        raise GenerationError(f"{where}: expected a token string or an AddedToken object with "
                              f"a non-empty \"content\", got {v!r:.100}")
    return v


def _id(v: Any, where: str) -> Optional[int]:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise GenerationError(f"{where}: expected a non-negative integer token id, got "
                              f"{v!r:.100}")
    return v


def _chat_template(v: Any, where: str) -> Optional[str]:
    """tokenizer_config.json's chat_template: a string, or named templates."""
    if v is None:
        return None
    if isinstance(v, str):
        return v
    if isinstance(v, list) and all(isinstance(t, dict) and isinstance(t.get("name"), str)
                                   and isinstance(t.get("template"), str) for t in v):
        named: dict[str, str] = {t["name"]: t["template"] for t in v}
        if "default" in named:
            return named["default"]
        raise GenerationError(f"{where}: chat_template holds named templates "
                              f"{sorted(named)} and none is named 'default': which one the "
                              f"model is used with is ambiguous (transformers refuses to pick "
                              f"one too); keep the intended one as 'default'")
    raise GenerationError(f"{where}: chat_template must be a string or a list of "
                          f"{{name, template}} objects, got {type(v).__name__}")


def load_generation(directory: str, tokenizer: Optional[dict[str, Any]],
                    vocab_size: int) -> Optional[dict[str, Any]]:
    """The ``generation`` object of the checkpoint in ``directory`` (see the module doc), or
    None when it has no end-of-sequence ids and no chat template. ``tokenizer``: the
    tokenizer.json content the artifact carries (resolves token strings to ids)."""
    paths = {n: os.path.join(directory, n) for n in FILES}
    present = {n: p for n, p in paths.items() if os.path.isfile(p)}
    tc: dict[str, Any] = {}
    gc: dict[str, Any] = {}
    if TOKENIZER_CONFIG in present:
        v = load_file(present[TOKENIZER_CONFIG], TOKENIZER_CONFIG)
        if not isinstance(v, dict):
            raise GenerationError(f"{present[TOKENIZER_CONFIG]}: not a JSON object")
        tc = v
    if GENERATION_CONFIG in present:
        v = load_file(present[GENERATION_CONFIG], GENERATION_CONFIG)
        if not isinstance(v, dict):
            raise GenerationError(f"{present[GENERATION_CONFIG]}: not a JSON object")
        gc = v
    ids = _token_ids(tokenizer, tc)

    def resolve(key: str) -> Optional[int]:
        where = f"{present.get(TOKENIZER_CONFIG)}: {key}"
        text = _token_text(tc.get(key), where)
        if text is None:
            return None
        if text not in ids:
            looked = ("tokenizer.json" if tokenizer is not None
                      else "no tokenizer.json beside the model")
            raise GenerationError(f"{where} {text!r} is not a token of the tokenizer "
                                  f"({looked}, added_tokens_decoder): its id is unknown")
        return ids[text]

    eos: set[int] = set()
    tok_eos = resolve("eos_token")
    if tok_eos is not None:
        eos.add(tok_eos)
    where_g = f"{present.get(GENERATION_CONFIG)}"
    g_eos = gc.get("eos_token_id")
    for i, v in enumerate(g_eos if isinstance(g_eos, list) else [g_eos]):
        e = _id(v, f"{where_g}: eos_token_id" + (f"[{i}]" if isinstance(g_eos, list) else ""))
        if e is not None:
            eos.add(e)
    g_bos = _id(gc.get("bos_token_id"), f"{where_g}: bos_token_id")
    g_pad = _id(gc.get("pad_token_id"), f"{where_g}: pad_token_id")
    bos = g_bos if g_bos is not None else resolve("bos_token")
    pad = g_pad if g_pad is not None else resolve("pad_token")

    template: Optional[str]
    if CHAT_TEMPLATE in present:
        try:
            with open(present[CHAT_TEMPLATE], encoding="utf-8") as f:
                template = f.read()
        except UnicodeDecodeError as e:
            raise GenerationError(f"{present[CHAT_TEMPLATE]}: not UTF-8 ({e.reason} at byte "
                                  f"{e.start})") from None
    else:
        template = _chat_template(tc.get("chat_template"), f"{present.get(TOKENIZER_CONFIG)}")
    if template == "":
        template = None

    if not eos:
        if template is not None:
            raise GenerationError(
                f"the checkpoint in {directory} has a chat template but no end-of-sequence "
                f"token (no eos_token in {TOKENIZER_CONFIG}, no eos_token_id in "
                f"{GENERATION_CONFIG}): a chat model without one cannot stop")
        return None
    for name, v in [("eos token id", e) for e in sorted(eos)] + [("bos_token_id", bos),
                                                              ("pad_token_id", pad)]:
        if v is not None and v >= vocab_size:
            raise GenerationError(f"{directory}: {name} {v} is outside the model's vocabulary "
                                  f"(vocab_size {vocab_size})")
    if len(eos) > MAX_EOS_IDS:
        raise GenerationError(f"{directory}: {len(eos)} end-of-sequence ids; the artifact "
                              f"format pins at most {MAX_EOS_IDS}")
    if template is not None and len(template.encode("utf-8", "surrogatepass")) > \
            MAX_CHAT_TEMPLATE:
        raise GenerationError(f"{directory}: the chat template has "
                              f"{len(template.encode('utf-8', 'surrogatepass'))} bytes; the "
                              f"artifact format pins at most {MAX_CHAT_TEMPLATE} (256 KiB)")
    return {
        "bos_token_id": bos,
        "chat_template": template,
        "eos_token_ids": sorted(eos),
        "pad_token_id": pad,
        "sources": {n: (_sha256(present[n]) if n in present else None) for n in FILES},
    }
