# SPDX-License-Identifier: Apache-2.0
"""Change classification between two artifacts (fwassist.artifact.diff)."""

from __future__ import annotations

import copy
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_artifact_writer import (  # noqa: E402
    EVIDENCE,
    make_model,
    model_card,
    quantized,
    run_cli,
    write,
)

from fwassist import kernels  # noqa: E402
from fwassist import ArtifactError  # noqa: E402
from fwassist.artifact import pyverify  # noqa: E402
from fwassist.artifact.diff import DIFF_CLASSES, EXIT_CODES, diff  # noqa: E402
from fwassist.export.model import QuantizedWeight  # noqa: E402

EXPERT_UP = "model.layers.1.mlp.experts.2.up_proj.weight"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    d = tmp_path_factory.mktemp("diff")
    p = d / "base.fwa"
    write(p, make_model())
    return p


def _with_tensor(model, name, fn):
    m = copy.copy(model)
    m.tensors = [replace(t, value=fn(t.value)) if t.name == name else t for t in model.tensors]
    return m


def _write(tmp_path, name, model=None, **kw) -> Path:
    p = tmp_path / f"{name}.fwa"
    write(p, model if model is not None else make_model(), **kw)
    return p


def test_exit_codes_are_ordered_by_severity():
    assert list(EXIT_CODES) == list(DIFF_CLASSES)
    assert [EXIT_CODES[c] for c in DIFF_CLASSES] == [0, 10, 20, 30, 40, 50, 60]


def test_identical(base, tmp_path):
    r = diff(base, _write(tmp_path, "same"))
    assert r.klass == "identical" and r.exit_code == 0 and r.a == r.b
    assert not any(r.changes.values())


@pytest.mark.parametrize("kw", [
    {"model_card": model_card(version="1.0.1")},
    {"model_card": model_card(known_limitations=["only English prompts"])},
    {"evidence": dict(EVIDENCE, fast={"max_abs_err": 0.004})},
    {"exporter_version": "0.1.1"},
    {"options": {"mode": "qat", "threads": 2, "tolerance": 1e-3}},
])
def test_metadata_only(base, tmp_path, kw):
    r = diff(base, _write(tmp_path, "meta", **kw))
    assert r.klass == "metadata-only" and r.exit_code == 10
    sections = {c["section"] for c in r.changes["metadata-only"]}
    assert "sbom" in sections and sections <= {"model_card", "provenance", "evidence", "sbom"}
    assert not r.weights


def test_provenance_source_change_is_metadata(base, tmp_path):
    m = make_model()
    m.source_sha256 = "ab" * 32
    r = diff(base, _write(tmp_path, "src", m))
    assert r.klass == "metadata-only"
    assert {"section": "provenance", "keys": ["source"]} in r.changes["metadata-only"]


def test_tokenizer(base, tmp_path):
    m = make_model()
    m.tokenizer["model"]["vocab"]["Ġnew"] = 96
    r = diff(base, _write(tmp_path, "tok", m))
    assert r.klass == "tokenizer" and r.exit_code == 20
    item = r.changes["tokenizer"][0]
    assert item["vocab_added"] == 1 and item["vocab_removed"] == 0


def test_config_rope_theta(base, tmp_path):
    m = make_model()
    m.config["rope_theta"] = 500000.0
    r = diff(base, _write(tmp_path, "rope", m))
    assert r.klass == "config" and r.exit_code == 30
    assert r.changes["config"] == [{"key": "rope_theta", "a": "1000000.0", "b": "500000.0"}]
    assert not r.changes["architecture"] and not r.weights


def test_one_code_bit_in_one_expert_is_weights(base, tmp_path):
    model = make_model()

    def flip(v: QuantizedWeight) -> QuantizedWeight:
        q = v.q.copy()
        q[3, 5] ^= 1                    # one code bit; stays inside the signed 3-bit range
        return replace(v, q=q)
    changed = _write(tmp_path, "bit", _with_tensor(model, EXPERT_UP, flip))
    r = diff(base, changed)
    assert r.klass == "weights" and r.exit_code == 40
    assert r.changed_tensors == [EXPERT_UP]
    assert r.experts_changed == [(1, 2)]
    w = r.weights[0]
    assert (w["layer"], w["expert"], w["role"]) == (1, 2, "expert_up")
    assert w["changed"] == 1 and w["total"] == 32 * 2 and w["changed_rows"] == 1
    v = next(t.value for t in model.tensors if t.name == EXPERT_UP)
    assert w["max_abs_delta"] == pytest.approx(float(v.scales[3, 0]), rel=0, abs=0)
    text = r.render_text()
    assert EXPERT_UP in text and "(1, 2)" in text
    # And the same change with a model card change is still "weights".
    both = _write(tmp_path, "bit_card", _with_tensor(model, EXPERT_UP, flip),
                  model_card=model_card(version="2"))
    r2 = diff(base, both)
    assert r2.klass == "weights" and r2.changes["metadata-only"]


def test_float_weight_change(base, tmp_path):
    model = make_model()
    name = "model.layers.0.input_layernorm.weight"

    def bump(v):
        v = v.copy()
        v[7] += np.float32(0.25)
        return v
    r = diff(base, _write(tmp_path, "norm", _with_tensor(model, name, bump)))
    assert r.klass == "weights" and r.changed_tensors == [name] and r.experts_changed == []
    assert r.weights[0]["changed"] == 1
    assert r.weights[0]["max_abs_delta"] == pytest.approx(0.25, abs=1e-6)


def test_block_size_is_quantization(base, tmp_path):
    model = make_model(q_block=64)
    r = diff(base, _write(tmp_path, "block", model))
    assert r.klass == "quantization" and r.exit_code == 50
    names = {c["tensor"] for c in r.changes["quantization"]}
    assert names == {"model.layers.0.self_attn.q_proj.weight",
                     "model.layers.1.self_attn.q_proj.weight"}
    c = r.changes["quantization"][0]
    assert c["a"]["quant"]["block"] == 32 and c["b"]["quant"]["block"] == 64
    assert c["max_abs_delta"] is not None


def test_scale_type_and_zero_points_are_quantization(base, tmp_path):
    model = make_model()
    name = "model.layers.0.self_attn.q_proj.weight"
    r = diff(base, _write(tmp_path, "scale", _with_tensor(
        model, name, lambda v: replace(v, scales=v.scales.astype(np.float32)))))
    assert r.klass == "quantization"
    assert r.changes["quantization"][0]["b"]["quant"]["scale"] == "f32"
    zp = lambda v: replace(v, zero_points=np.ones(v.scales.shape, np.int8))  # noqa: E731
    r = diff(base, _write(tmp_path, "zp", _with_tensor(model, name, zp)))
    assert r.klass == "quantization"
    assert r.changes["quantization"][0]["b"]["quant"]["zero_points"] is True


def test_expert_bits_change_is_quantization(base, tmp_path):
    r = diff(base, _write(tmp_path, "bits", make_model(expert_bits=4)))
    assert r.klass == "quantization"
    assert len(r.changes["quantization"]) == 2 * 4 * 3


def test_adding_a_layer_is_architecture(base, tmp_path):
    r = diff(base, _write(tmp_path, "layer", make_model(layers=3)))
    assert r.klass == "architecture" and r.exit_code == 60
    arch = r.changes["architecture"]
    assert {"key": "num_hidden_layers", "a": 2, "b": 3} in arch
    assert {"layers": "count", "a": 2, "b": 3} in arch
    added = {c["tensor"] for c in arch if c.get("change") == "added"}
    assert "model.layers.2.self_attn.q_proj.weight" in added
    assert "model.layers.2.mlp.experts.3.down_proj.weight" in added


def test_expert_count_and_shapes_are_architecture(base, tmp_path):
    r = diff(base, _write(tmp_path, "experts", make_model(experts=5)))
    assert r.klass == "architecture"
    assert any(c.get("experts_per_layer") for c in r.changes["architecture"])
    model = make_model()
    rng = np.random.default_rng(1)
    name = "lm_head.weight"
    m = _with_tensor(model, name, lambda v: quantized(rng, 96, 64 + 32, bits=4))
    m.config = dict(model.config)
    r = diff(base, _write(tmp_path, "shape", m))
    assert r.klass == "architecture"
    assert any(c.get("tensor") == name for c in r.changes["architecture"])


def test_any_weight_byte_change_is_at_least_weights(base, tmp_path):
    """Property: random changes to random tensors' codes/scales/values are never classified
    below "weights"."""
    rng = np.random.default_rng(11)
    model = make_model()
    for i in range(6):
        t = model.tensors[int(rng.integers(len(model.tensors)))]

        def mutate(v):
            if isinstance(v, QuantizedWeight):
                if rng.random() < 0.5:
                    q = v.q.copy()
                    n, k = rng.integers(q.shape[0]), rng.integers(q.shape[1])
                    lo = -(1 << (v.bits - 1)) if v.signed else 0
                    hi = (1 << (v.bits - 1)) - 1 if v.signed else (1 << v.bits) - 1
                    q[n, k] = lo if q[n, k] != lo else hi
                    return replace(v, q=q)
                s = v.scales.copy()
                s[rng.integers(s.shape[0]), rng.integers(s.shape[1])] *= 2
                return replace(v, scales=s)
            if hasattr(v, "bits") and not isinstance(v, np.ndarray):   # BF16Array
                b = v.bits.copy()
                b.flat[rng.integers(b.size)] ^= 1
                return replace(v, bits=b)
            a = v.copy()
            a.flat[rng.integers(a.size)] += 1
            return a
        p = _write(tmp_path, f"prop{i}", _with_tensor(model, t.name, mutate),
                   model_card=model_card(version=str(i)))
        r = diff(base, p)
        assert EXIT_CODES[r.klass] >= EXIT_CODES["weights"], (t.name, r.klass)
        assert r.changed_tensors == [t.name]
        assert r.weights[0]["changed"] >= 1


def test_manifest_only_class_equals_detailed_class(base, tmp_path):
    p = _write(tmp_path, "rope", make_model(q_block=128))
    assert diff(base, p, details=False).klass == diff(base, p).klass == "quantization"


def test_invalid_artifact(base, tmp_path):
    art = pyverify.read_manifest(base)
    t = art.tensor(EXPERT_UP)
    raw = bytearray(base.read_bytes())
    raw[art.data_offset + t["offset"] + 3] ^= 0x80
    bad = tmp_path / "bad.fwa"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ArtifactError) as e:
        diff(base, bad)
    assert e.value.status == "digest_mismatch" and e.value.path == str(bad)
    with pytest.raises(pyverify.PyArtifactError):
        pyverify.verify(bad)


def test_cli_diff(base, tmp_path, capsys):
    rc, out, _ = run_cli(["diff", base, base], capsys)
    assert rc == 0 and "identical" in out
    m = make_model()
    m.config["rms_norm_eps"] = 1e-5
    p = _write(tmp_path, "eps", m)
    rc, out, _ = run_cli(["diff", base, p, "--json"], capsys)
    d = json.loads(out)
    assert rc == 30 and d["class"] == "config" and d["exit_code"] == 30
    assert d["changes"]["config"] == [{"key": "rms_norm_eps", "a": "1e-06", "b": "1e-05"}]
    raw = bytearray(p.read_bytes())
    raw[200] ^= 1
    bad = tmp_path / "bad.fwa"
    bad.write_bytes(bytes(raw))
    rc, _, err = run_cli(["diff", base, bad], capsys)
    assert rc == 3 and "INVALID" in err
    with pytest.raises(SystemExit) as e:
        run_cli(["diff", base], capsys)
    assert e.value.code == 2


def test_main_module_usage_error(capsys):
    from fwassist.cli.artifact import main
    with pytest.raises(SystemExit) as e:
        main(["diff"])
    assert e.value.code == 2


def test_dequantized_delta_matches_kernels(base, tmp_path):
    """max |dequantized delta| of a weights diff equals the kernels' own dequantize."""
    model = make_model()
    name = "model.layers.0.self_attn.k_proj.weight"     # unsigned 3-bit, f32 scales, zp
    rng = np.random.default_rng(5)
    new = quantized(rng, 32, 64, bits=3, signed=False, scale=np.float32)
    r = diff(base, _write(tmp_path, "k", _with_tensor(model, name, lambda v: new)))
    old = next(t.value for t in model.tensors if t.name == name)
    da = kernels.dequantize(kernels.pack(old.q, old.scales, old.zero_points, bits=3, block=32,
                                         signed=False)).astype(np.float64)
    db = kernels.dequantize(kernels.pack(new.q, new.scales, new.zero_points, bits=3, block=32,
                                         signed=False)).astype(np.float64)
    assert r.klass == "weights"
    assert r.weights[0]["max_abs_delta"] == float(np.abs(da - db).max())
    assert r.weights[0]["changed"] == r.weights[0]["total"] == 32 * 2
