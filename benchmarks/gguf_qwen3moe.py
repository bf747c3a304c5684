# SPDX-License-Identifier: Apache-2.0
"""Writes Qwen3-MoE (and dense Qwen3) weights as GGUF for llama.cpp with the PyPI ``gguf``
package, and quantizes them with ``llama-quantize``.

Input: float weights under their Hugging Face names ([N, K] Linear orientation, as
``fwassist.export.qat_builder.random_weights`` makes them), the Hugging Face config and a
``tokenizer.json`` (byte-level BPE). Output: a GGUF whose tensor names, shapes and metadata are
those llama.cpp's ``convert_hf_to_gguf.py`` writes for ``Qwen3MoeForCausalLM`` (arch
``qwen3moe``) or, when every layer is dense, ``Qwen3ForCausalLM`` (arch ``qwen3``):

* ``token_embd``, ``output_norm``, ``output``; per block ``attn_norm``, ``attn_q/k/v``,
  ``attn_output``, ``attn_q_norm``, ``attn_k_norm``, ``ffn_norm`` and either ``ffn_gate_inp``
  plus the experts stacked into 3-D ``ffn_gate_exps`` / ``ffn_up_exps`` / ``ffn_down_exps``
  ([E, N, K] in numpy, ne = (K, N, E)) or ``ffn_gate`` / ``ffn_up`` / ``ffn_down``;
* no q/k permutation (Qwen uses NEOX RoPE, the same rotate-half as Hugging Face);
* 2-D weights as float16 (or float32), norms and the router as float32 (llama-quantize keeps
  ``ffn_gate_inp`` and 1-D tensors unquantized);
* tokenizer: ``gpt2`` model, ``gpt-2`` pre-tokenizer, token list in id order (added tokens as
  CONTROL), merges, BOS = EOS = ``<|endoftext|>``, no BOS added.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any, Mapping, Optional, Sequence

import numpy as np

GGUF_VERSION_PIN = "0.19.0"   # pip install gguf==0.19.0


def _gguf() -> Any:
    import gguf
    return gguf


def is_dense(config: Mapping[str, Any]) -> bool:
    """Every layer is a dense MLP (mlp_only_layers covers all layers)."""
    n = int(config["num_hidden_layers"])
    return set(config.get("mlp_only_layers") or []) >= set(range(n))


def _tokenizer_tables(tok: Mapping[str, Any]) -> tuple[list[str], list[int], list[str], int]:
    """(tokens in id order, token types, merges, id of <|endoftext|>) of a tokenizer.json."""
    gguf = _gguf()
    vocab: dict[int, str] = {int(i): s for s, i in tok["model"]["vocab"].items()}
    special: set[int] = set()
    for a in tok.get("added_tokens") or []:
        vocab[int(a["id"])] = a["content"]
        if a.get("special"):
            special.add(int(a["id"]))
    n = max(vocab) + 1
    if set(vocab) != set(range(n)):
        raise ValueError("tokenizer ids are not contiguous")
    tokens = [vocab[i] for i in range(n)]
    types = [int(gguf.TokenType.CONTROL if i in special else gguf.TokenType.NORMAL)
             for i in range(n)]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"].get("merges", [])]
    eot = next(i for i, s in vocab.items() if s == "<|endoftext|>")
    return tokens, types, merges, eot


def _add_metadata(w: Any, config: Mapping[str, Any], dense: bool, ftype: int) -> None:
    c = config
    w.add_context_length(int(c["max_position_embeddings"]))
    w.add_embedding_length(int(c["hidden_size"]))
    w.add_block_count(int(c["num_hidden_layers"]))
    w.add_feed_forward_length(int(c["intermediate_size"]))
    w.add_head_count(int(c["num_attention_heads"]))
    w.add_head_count_kv(int(c["num_key_value_heads"]))
    w.add_key_length(int(c["head_dim"]))
    w.add_value_length(int(c["head_dim"]))
    w.add_rope_freq_base(float(c["rope_theta"]))
    w.add_layer_norm_rms_eps(float(c["rms_norm_eps"]))
    if not dense:
        if not c.get("norm_topk_prob", True):
            raise ValueError("llama.cpp's qwen3moe always renormalises the top-k weights")
        w.add_expert_count(int(c["num_experts"]))
        w.add_expert_used_count(int(c["num_experts_per_tok"]))
        w.add_expert_feed_forward_length(int(c["moe_intermediate_size"]))
    w.add_file_type(ftype)


def _add_tokenizer(w: Any, tok: Mapping[str, Any], vocab_size: int) -> None:
    tokens, types, merges, eot = _tokenizer_tables(tok)
    if len(tokens) != vocab_size:
        raise ValueError(f"tokenizer has {len(tokens)} tokens, the model {vocab_size}: llama.cpp "
                         "needs them equal")
    if not merges:
        raise ValueError("llama.cpp's gpt2 tokenizer needs at least one merge")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(eot)
    w.add_eos_token_id(eot)
    w.add_add_bos_token(False)


def write_gguf(path: str, weights: Mapping[str, np.ndarray], config: Mapping[str, Any],
               tokenizer: Mapping[str, Any], dtype: str = "f16") -> None:
    """Writes ``weights`` (Hugging Face names, float32) as a GGUF at ``path``."""
    gguf = _gguf()
    if config.get("tie_word_embeddings"):
        raise ValueError("tied embeddings are not supported here")
    dense = is_dense(config)
    arch = "qwen3" if dense else "qwen3moe"
    wdt = {"f16": np.float16, "f32": np.float32}[dtype]
    ftype = {"f16": int(gguf.LlamaFileType.MOSTLY_F16),
             "f32": int(gguf.LlamaFileType.ALL_F32)}[dtype]
    tmp = path + ".part"
    w = gguf.GGUFWriter(tmp, arch)
    w.add_name(f"fwassist synthetic {arch}")
    _add_metadata(w, config, dense, ftype)
    _add_tokenizer(w, tokenizer, int(config["vocab_size"]))

    def mat(name: str) -> np.ndarray:
        return np.ascontiguousarray(weights[name], dtype=wdt)

    def vec(name: str) -> np.ndarray:
        return np.ascontiguousarray(weights[name], dtype=np.float32)

    w.add_tensor("token_embd.weight", mat("model.embed_tokens.weight"))
    for L in range(int(config["num_hidden_layers"])):
        p, b = f"model.layers.{L}", f"blk.{L}"
        w.add_tensor(f"{b}.attn_norm.weight", vec(f"{p}.input_layernorm.weight"))
        for hf, gg in (("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"),
                       ("o_proj", "attn_output")):
            w.add_tensor(f"{b}.{gg}.weight", mat(f"{p}.self_attn.{hf}.weight"))
        w.add_tensor(f"{b}.attn_q_norm.weight", vec(f"{p}.self_attn.q_norm.weight"))
        w.add_tensor(f"{b}.attn_k_norm.weight", vec(f"{p}.self_attn.k_norm.weight"))
        w.add_tensor(f"{b}.ffn_norm.weight", vec(f"{p}.post_attention_layernorm.weight"))
        if dense:
            for proj in ("gate", "up", "down"):
                w.add_tensor(f"{b}.ffn_{proj}.weight", mat(f"{p}.mlp.{proj}_proj.weight"))
            continue
        w.add_tensor(f"{b}.ffn_gate_inp.weight", vec(f"{p}.mlp.gate.weight"))
        E = int(config["num_experts"])
        for proj in ("gate", "up", "down"):
            stacked = np.stack([np.asarray(weights[f"{p}.mlp.experts.{e}.{proj}_proj.weight"],
                                           dtype=wdt) for e in range(E)])
            w.add_tensor(f"{b}.ffn_{proj}_exps.weight", stacked)
    w.add_tensor("output_norm.weight", vec("model.norm.weight"))
    w.add_tensor("output.weight", mat("lm_head.weight"))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(tmp, path)


def quantize(llama_quantize: str, src: str, dst: str, qtype: str, *, pure: bool = True,
             output_type: Optional[str] = "q8_0", embed_type: Optional[str] = "q8_0",
             threads: int = 2, log_path: Optional[str] = None) -> None:
    """``llama-quantize`` src -> dst at ``qtype`` (e.g. Q4_0, Q3_K_S, Q2_K), under nice.
    pure: no k-quant mixture (every quantizable tensor at qtype); output_type / embed_type:
    the lm_head / embedding type (None: llama.cpp's choice)."""
    cmd: list[str] = ["nice", "-n", "15", llama_quantize]
    if pure:
        cmd.append("--pure")
    if output_type:
        cmd += ["--output-tensor-type", output_type]
    if embed_type:
        cmd += ["--token-embedding-type", embed_type]
    tmp = dst + ".part"
    cmd += [src, tmp, qtype, str(threads)]
    with open(log_path or os.devnull, "w") as log:
        subprocess.run(cmd, check=True, stdout=log, stderr=subprocess.STDOUT)
    os.replace(tmp, dst)


def tensor_types(path: str) -> dict[str, int]:
    """GGML type name -> number of tensors of that type in a GGUF file."""
    gguf = _gguf()
    out: dict[str, int] = {}
    for t in gguf.GGUFReader(path).tensors:
        name = t.tensor_type.name
        out[name] = out.get(name, 0) + 1
    return out


def stored_params(path: str) -> int:
    """Number of weights (elements) in a GGUF file."""
    gguf = _gguf()
    return sum(int(np.prod(t.shape)) for t in gguf.GGUFReader(path).tensors)


__all__: Sequence[str] = ("GGUF_VERSION_PIN", "write_gguf", "quantize", "tensor_types",
                          "stored_params", "is_dense")
