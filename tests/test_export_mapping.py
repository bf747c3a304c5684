# SPDX-License-Identifier: Apache-2.0
"""Role mapping and configuration of the ONNX importer.

The same QAT model written with Hugging Face names, with torch-dynamo-style ``val_N`` names and
``pkg.torch.onnx.name_scopes`` metadata, and with no names or metadata at all (random node and
initializer order) must import to identical ImportedModels; the config is read from
metadata_props or config.json in transformers 4.x and 5.x spellings.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import onnx
import onnxruntime  # noqa: F401

from fwassist.export.mapping import normalize_config, role_from_string  # noqa: E402
from fwassist.export.model import QuantizedWeight  # noqa: E402
from fwassist.export.onnx_import import OnnxImportError, import_onnx  # noqa: E402
from fwassist.export.qat_builder import (QuantSpec, build_qat_onnx, random_weights,  # noqa: E402
                                         tiny_config)

MIXED = {
    "q_proj": QuantSpec("qdq", 4, 32), "k_proj": QuantSpec("dq", 8, None, symmetric=False),
    "v_proj": QuantSpec("qcdq", 3, 32), "o_proj": QuantSpec("dq_transpose", 4, 64),
    "expert_gate": QuantSpec("dq", 2, 32), "expert_up": QuantSpec("qdq", 2, 32, symmetric=False),
    "expert_down": QuantSpec("matmulnbits", 4, 32), "mlp_gate": QuantSpec("qdq", 4, 32),
    "mlp_up": QuantSpec("dq", 4, 32, encoding="int32"), "mlp_down": QuantSpec("qcdq", 2, None),
    "router": QuantSpec("float", gemm=True), "lm_head": QuantSpec("dq", 8, 32),
}


def assert_same_model(a, b):
    assert a.config == b.config
    assert [(t.name, t.role, t.layer, t.expert) for t in a.tensors] == \
        [(t.name, t.role, t.layer, t.expert) for t in b.tensors]
    for x, y in zip(a.tensors, b.tensors):
        vx, vy = x.value, y.value
        assert type(vx) is type(vy), x.name
        if isinstance(vx, QuantizedWeight):
            assert (vx.bits, vx.block, vx.signed) == (vy.bits, vy.block, vy.signed), x.name
            assert vx.q.dtype == vy.q.dtype and np.array_equal(vx.q, vy.q), x.name
            assert vx.scales.dtype == vy.scales.dtype
            assert np.array_equal(vx.scales.view(np.uint8), vy.scales.view(np.uint8)), x.name
            assert (vx.zero_points is None) == (vy.zero_points is None), x.name
            if vx.zero_points is not None:
                assert np.array_equal(vx.zero_points, vy.zero_points), x.name
        else:
            assert vx.dtype == vy.dtype and np.array_equal(vx.view(np.uint8), vy.view(np.uint8))


def build_three(tmp_path, cfg, quant, **kw):
    w = random_weights(cfg, 1)
    out = {}
    for naming in ("hf", "dynamo", "none"):
        d = tmp_path / naming
        d.mkdir()
        build_qat_onnx(d / "m.onnx", w, cfg, quant, naming=naming, config_json=naming == "none",
                       shuffle_seed=3 if naming == "none" else None, **kw)
        out[naming] = d / "m.onnx"
    return out


CONFIGS = {
    "moe": tiny_config(),
    "dense_layers": tiny_config(num_hidden_layers=4, decoder_sparse_step=2, mlp_only_layers=[3]),
    "tied_mha": tiny_config(tie_word_embeddings=True, num_key_value_heads=4,
                            norm_topk_prob=False),
}


@pytest.mark.parametrize("combine", ["gather", "concat"])
@pytest.mark.parametrize("cfg_name", list(CONFIGS))
def test_names_metadata_structure_agree(tmp_path, cfg_name, combine):
    cfg = CONFIGS[cfg_name]
    paths = build_three(tmp_path, cfg, MIXED, moe_combine=combine)
    models = {k: import_onnx(p) for k, p in paths.items()}
    assert "from names" in models["hf"].notes[1] and "structure agrees" in models["hf"].notes[1]
    assert "from metadata" in models["dynamo"].notes[1]
    assert "from structure" in models["none"].notes[1]
    assert_same_model(models["hf"], models["dynamo"])
    assert_same_model(models["hf"], models["none"])
    # each strategy alone, where its information exists
    assert_same_model(models["hf"], import_onnx(paths["hf"], strategy="names"))
    assert_same_model(models["hf"], import_onnx(paths["hf"], strategy="structure"))
    assert_same_model(models["hf"], import_onnx(paths["dynamo"], strategy="metadata"))
    assert_same_model(models["hf"], import_onnx(paths["dynamo"], strategy="structure"))
    m = models["hf"]
    c, _ = normalize_config(cfg)
    roles = [t.role for t in m.tensors]
    assert ("lm_head" in roles) == (not c["tie_word_embeddings"])
    assert m.config["tie_word_embeddings"] == c["tie_word_embeddings"]
    n_moe = sum(1 for l in range(c["num_hidden_layers"])
                if l not in c["mlp_only_layers"] and (l + 1) % c["decoder_sparse_step"] == 0)
    assert roles.count("router") == n_moe
    assert roles.count("expert_down") == n_moe * c["num_experts"]
    assert roles.count("mlp_down") == c["num_hidden_layers"] - n_moe


def test_hf_names_in_tensors(tmp_path):
    paths = build_three(tmp_path, tiny_config(), MIXED)
    m = import_onnx(paths["none"])
    names = [t.name for t in m.tensors]
    assert names[0] == "model.embed_tokens.weight"
    assert "model.layers.1.mlp.experts.7.down_proj.weight" in names
    assert "model.layers.0.self_attn.q_norm.weight" in names
    assert names[-2:] == ["model.norm.weight", "lm_head.weight"]
    t = {x.name: x for x in m.tensors}
    assert t["model.layers.0.mlp.gate.weight"].value.shape == (8, 64)
    assert t["model.layers.0.self_attn.v_proj.weight"].value.bits == 3
    assert t["model.layers.0.mlp.experts.2.gate_proj.weight"].value.q.shape == (32, 64)


def test_conflicting_name_is_refused(tmp_path):
    """Names say k where the structure says v (swapped initializer names)."""
    cfg = tiny_config()
    p = tmp_path / "m.onnx"
    model = build_qat_onnx(None, random_weights(cfg, 2), cfg, None, naming="hf")
    a, b = "model.layers.1.self_attn.k_proj.weight", "model.layers.1.self_attn.v_proj.weight"
    for t in model.graph.initializer:
        t.name = {a: b, b: a}.get(t.name, t.name)
    for n in model.graph.node:
        for i, x in enumerate(n.input):
            n.input[i] = {a: b, b: a}.get(x, x)
    onnx.save_model(model, str(p))
    with pytest.raises(OnnxImportError) as ei:
        import_onnx(p)
    msg = str(ei.value)
    assert "k_proj" in msg and "v_proj of layer 1" in msg and "structure" in msg, msg


def test_gemm_transb0_router_of_wrong_shape_is_refused(tmp_path):
    cfg = tiny_config()
    model = build_qat_onnx(None, random_weights(cfg, 2), cfg,
                           {"router": QuantSpec("float", gemm=True)}, naming="hf")
    for n in model.graph.node:
        if n.op_type == "Gemm" and "mlp.gate" in n.input[1]:
            for a in n.attribute:
                if a.name == "transB":
                    a.i = 0
            break
    p = tmp_path / "m.onnx"
    onnx.save_model(model, str(p))
    with pytest.raises(OnnxImportError) as ei:
        import_onnx(p)
    msg = str(ei.value)
    assert "model.layers.0.mlp.gate.weight" in msg and "transB=0" in msg and "[8, 64]" in msg, msg


def test_config_graph_mismatch_is_refused(tmp_path):
    cfg = tiny_config()
    w = random_weights(cfg, 2)
    p = tmp_path / "m.onnx"
    build_qat_onnx(p, w, cfg, None, naming="hf", config_metadata=False)
    bad = dict(cfg, mlp_only_layers=[1])
    (tmp_path / "config.json").write_text(json.dumps(bad))
    with pytest.raises(OnnxImportError, match="layer 1 is a dense MLP layer"):
        import_onnx(p)
    bad = dict(cfg, num_hidden_layers=3)
    (tmp_path / "config.json").write_text(json.dumps(bad))
    with pytest.raises(OnnxImportError, match="missing|attention blocks"):
        import_onnx(p)
    bad = dict(cfg, head_dim=8)
    (tmp_path / "config.json").write_text(json.dumps(bad))
    with pytest.raises(OnnxImportError, match="does not match"):
        import_onnx(p, strategy="names")


def test_no_config_is_refused(tmp_path):
    cfg = tiny_config()
    p = tmp_path / "m.onnx"
    build_qat_onnx(p, random_weights(cfg, 2), cfg, None, naming="none")
    with pytest.raises(OnnxImportError, match="config: none found"):
        import_onnx(p)


# ---------------------------------------------------------------------------------------
# configuration variants


BASE = tiny_config()


def v5(**kw):
    c = {k: v for k, v in BASE.items() if k not in ("rope_theta", "num_experts")}
    c["num_local_experts"] = BASE["num_experts"]
    c["rope_parameters"] = {"rope_theta": 10000.0, "rope_type": "default"}
    c.update(kw)
    return c


@pytest.mark.parametrize("raw", [
    BASE,
    v5(),
    v5(rope_parameters=None, rope_scaling={"rope_type": "default", "rope_theta": 10000.0}),
    v5(rope_parameters={"full_attention": {"rope_theta": 10000.0, "rope_type": "default"}}),
    dict(BASE, rope_scaling=None),
    {"architectures": ["SomeWrapper"], "text_config": BASE},
], ids=["4.x", "5.x", "5.x-rope_scaling", "5.x-per-layer-type", "rope_scaling-null",
        "text_config"])
def test_config_variants(raw):
    c, notes = normalize_config(raw)
    want, _ = normalize_config(BASE)
    assert c == want
    assert c["rope_theta"] == 10000.0 and c["num_experts"] == 8 and c["head_dim"] == 16


def test_config_defaults_and_refusals():
    c, notes = normalize_config({k: v for k, v in BASE.items() if k not in ("head_dim",
                                                                          "rope_theta")})
    assert c["head_dim"] == 16 and c["rope_theta"] == 10000.0
    assert any("head_dim missing" in n for n in notes)
    for bad, msg in ((dict(BASE, rope_scaling={"rope_type": "yarn", "factor": 4.0}), "yarn"),
                     (dict(BASE, hidden_act="gelu"), "hidden_act"),
                     (dict(BASE, model_type="llama"), "model_type"),
                     (dict(BASE, use_sliding_window=True), "sliding"),
                     (dict(BASE, rope_parameters={"rope_theta": 5.0}), "disagree"),
                     (dict(BASE, num_key_value_heads=3), "multiple"),
                     ({"hidden_size": 64}, "missing")):
        with pytest.raises(OnnxImportError, match=msg):
            normalize_config(bad)


def test_config_sources(tmp_path):
    cfg = tiny_config(rope_theta=1e6)
    w = random_weights(cfg, 4)
    p = tmp_path / "m.onnx"
    build_qat_onnx(p, w, cfg, None, naming="hf")
    assert import_onnx(p).config["rope_theta"] == 1e6                      # metadata
    model = onnx.load(str(p))
    del model.metadata_props[:]
    for k, v in v5(rope_parameters={"rope_theta": 1e6, "rope_type": "default"}).items():
        e = model.metadata_props.add()
        e.key, e.value = k, json.dumps(v)
    onnx.save_model(model, str(p))
    m = import_onnx(p)                                                      # individual keys
    assert m.config["rope_theta"] == 1e6 and m.config["num_experts"] == 8
    cj = tmp_path / "other.json"
    cj.write_text(json.dumps(v5(rope_parameters={"rope_theta": 1e6, "rope_type": "default"})))
    assert import_onnx(p, config_path=str(cj)).config == m.config          # explicit file
    tok = {"model": {"type": "BPE", "vocab": {"a": 0}}}
    (tmp_path / "tokenizer.json").write_text(json.dumps(tok))
    m = import_onnx(p)
    assert m.tokenizer == tok and m.source_name == "m.onnx" and len(m.source_sha256) == 64


def test_role_patterns():
    assert role_from_string("model.layers.3.mlp.experts.17.up_proj") == ("expert_up", 3, 17)
    assert role_from_string("model.layers.3.mlp.gate.weight") == ("router", 3, None)
    assert role_from_string("model.layers.3.mlp.gate_proj.weight") == ("mlp_gate", 3, None)
    assert role_from_string("model.layers.3.mlp.gate_up_proj") is None
    assert role_from_string("/model/layers.2/self_attn/o_proj/MatMul".replace("/", ".")) == \
        ("o_proj", 2, None)
    assert role_from_string("model.layers.0.self_attn.k_norm.weight") == ("k_norm", 0, None)
    assert role_from_string("model.norm.weight") == ("final_norm", None, None)
    assert role_from_string("model.layers.0.post_attention_layernorm.weight") == \
        ("post_attention_norm", 0, None)
    assert role_from_string("p_model_layers_5_self_attn_q_proj_weight") == ("q_proj", 5, None)
    assert role_from_string("lm_head.weight_Q4") == ("lm_head", None, None)
    assert role_from_string("val_12") is None


def test_tying_follows_the_graph(tmp_path):
    cfg = tiny_config(tie_word_embeddings=True)
    p = tmp_path / "m.onnx"
    build_qat_onnx(p, random_weights(cfg, 6), cfg, None, naming="none")
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, tie_word_embeddings=False)))
    m = import_onnx(p)
    assert m.config["tie_word_embeddings"] is True
    assert "lm_head" not in [t.role for t in m.tensors]
    assert any("tie_word_embeddings set to true" in n for n in m.notes)
    cfg2 = tiny_config()
    build_qat_onnx(p, random_weights(cfg2, 6), cfg2, None, naming="none")
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg2, tie_word_embeddings=True)))
    m = import_onnx(p)
    assert m.config["tie_word_embeddings"] is False and m.tensors[-1].role == "lm_head"
