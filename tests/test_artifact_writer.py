# SPDX-License-Identifier: Apache-2.0
"""The artifact writer against docs/artifact-format.md, byte by byte.

Verification goes through ``fwassist.load_artifact`` when the build has the C++ loader and
through the pure-Python reader (fwassist.artifact.pyverify) always, so both readers see the
same files and the same corruptions.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import struct
import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import fwassist
from fwassist import kernels
from fwassist.artifact import canonical, pyverify
from fwassist.cli.artifact import register
from fwassist.artifact.inspect import inspect, render_text
from fwassist import ArtifactError
from fwassist.artifact.verify import status_name, verify
from fwassist.artifact.writer import tensor_order_key, write_artifact
from fwassist.export.model import (
    EXPERT_ROLES,
    ROLES,
    BF16Array,
    ImportedModel,
    ModelTensor,
    QuantizedWeight,
)

TESTS = Path(__file__).resolve().parent
SOURCE_SHA = hashlib.sha256(b"synthetic qat checkpoint").hexdigest()

# ---------------------------------------------------------------------------------------------
# A small Qwen3-MoE-shaped model: 2 layers, 4 experts, hidden 64.


def base_config(layers: int = 2, experts: int = 4) -> dict:
    return {
        "architecture": "qwen3_moe", "vocab_size": 96, "hidden_size": 64,
        "num_hidden_layers": layers, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "intermediate_size": 128, "moe_intermediate_size": 32,
        "num_experts": experts, "num_experts_per_tok": 2, "norm_topk_prob": True,
        "decoder_sparse_step": 1, "mlp_only_layers": [], "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0, "max_position_embeddings": 512,
        "tie_word_embeddings": False,
    }


def tokenizer() -> dict:
    vocab = {f"tok{i}": i for i in range(90)}
    vocab.update({"Ġhello": 90, "ĠwörldΩ": 91, "\t": 92, "é": 93})
    return {"version": "1.0", "truncation": None, "padding": None,
            "added_tokens": [{"id": 94, "content": "<|endoftext|>", "special": True},
                             {"id": 95, "content": "<|im_start|>", "special": True}],
            "normalizer": None, "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False},
            "model": {"type": "BPE", "dropout": None, "vocab": vocab,
                      "merges": ["Ġ h", "e l"]}}


def quantized(rng: np.random.Generator, N: int, K: int, *, bits: int = 4, block: int = 32,
              signed: bool = True, zero: bool = False, scale=np.float16) -> QuantizedWeight:
    nb = -(-K // block)
    if signed:
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1))
        q = rng.integers(lo, hi, size=(N, K)).astype(np.int8)
        zp = rng.integers(lo, hi, size=(N, nb)).astype(np.int8) if zero else None
    else:
        q = rng.integers(0, 1 << bits, size=(N, K)).astype(np.uint8)
        zp = rng.integers(0, 1 << bits, size=(N, nb)).astype(np.uint8)
    s = (rng.random((N, nb)) * 0.02 + 0.001).astype(scale)
    return QuantizedWeight(q, s, zp, bits, block, signed)


def make_model(seed: int = 7, layers: int = 2, experts: int = 4, *,
               expert_bits: int = 3, q_block: int = 32) -> ImportedModel:
    rng = np.random.default_rng(seed)
    c = base_config(layers, experts)
    H, V, I, D = c["hidden_size"], c["vocab_size"], c["moe_intermediate_size"], c["head_dim"]
    nq, nkv = c["num_attention_heads"], c["num_key_value_heads"]
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    bf16 = lambda *s: BF16Array((f32(*s).view(np.uint32) >> 16).astype(np.uint16))  # noqa
    ts = [ModelTensor("model.embed_tokens.weight", "embed", None, None, bf16(V, H))]
    for L in range(layers):
        p = f"model.layers.{L}."
        ts += [
            ModelTensor(p + "self_attn.q_proj.weight", "q_proj", L, None,
                        quantized(rng, nq * D, H, bits=4, block=q_block)),
            ModelTensor(p + "self_attn.k_proj.weight", "k_proj", L, None,
                        quantized(rng, nkv * D, H, bits=3, signed=False, scale=np.float32)),
            ModelTensor(p + "self_attn.v_proj.weight", "v_proj", L, None,
                        quantized(rng, nkv * D, H, bits=2, block=64, zero=True)),
            ModelTensor(p + "self_attn.o_proj.weight", "o_proj", L, None,
                        quantized(rng, H, nq * D, bits=8, block=128)),
            ModelTensor(p + "self_attn.q_norm.weight", "q_norm", L, None, f32(D)),
            ModelTensor(p + "self_attn.k_norm.weight", "k_norm", L, None, f32(D)),
            ModelTensor(p + "input_layernorm.weight", "input_norm", L, None, f32(H)),
            ModelTensor(p + "post_attention_layernorm.weight", "post_attention_norm", L, None,
                        f32(H).astype(np.float16)),
            ModelTensor(p + "mlp.gate.weight", "router", L, None, bf16(experts, H)),
        ]
        for e in range(experts):
            q = p + f"mlp.experts.{e}."
            ts += [
                ModelTensor(q + "gate_proj.weight", "expert_gate", L, e,
                            quantized(rng, I, H, bits=expert_bits)),
                ModelTensor(q + "up_proj.weight", "expert_up", L, e,
                            quantized(rng, I, H, bits=expert_bits)),
                ModelTensor(q + "down_proj.weight", "expert_down", L, e,
                            quantized(rng, H, I, bits=expert_bits)),
            ]
    ts += [ModelTensor("model.norm.weight", "final_norm", None, None, f32(H)),
           ModelTensor("lm_head.weight", "lm_head", None, None, quantized(rng, V, H, bits=4))]
    return ImportedModel(config=c, tensors=ts, tokenizer=tokenizer(),
                         source_name="synthetic-qwen3-moe.onnx", source_sha256=SOURCE_SHA,
                         notes=["synthetic test model"])


def model_card(**kw) -> dict:
    card = {"name": "fwassist-test-moe", "version": "1.0.0", "license": "Apache-2.0",
            "description": "synthetic 2-layer MoE for tests", "supplier": "fwassist tests",
            "task": "text-generation", "use_cases": ["unit tests"],
            "known_limitations": ["random weights: generates noise",
                                  "not evaluated on any benchmark"],
            "datasets": [{"name": "none", "description": "random"}],
            "ethical_considerations": [{"name": "none", "mitigation": "not deployed"}],
            "metrics": [{"type": "max_abs_err", "value": 1.5e-7, "slice": "probe"}]}
    card.update(kw)
    return card


OPTIONS = {"mode": "qat", "threads": 1, "tolerance": 1e-3}
EVIDENCE = {"exact": {"max_abs_err": 2.5e-7, "probes": 8}, "fast": {"max_abs_err": 0.003125}}


def write(path, model=None, **kw) -> str:
    args = dict(model_card=model_card(), options=OPTIONS, evidence=EVIDENCE,
                exporter_version="0.1.0")
    args.update(kw)
    return write_artifact(path, model if model is not None else make_model(), **args)


# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    d = tmp_path_factory.mktemp("art")
    model = make_model()
    p = d / "model.fwa"
    pin = write(p, model)
    return p, pin, model


def parse(path):
    raw = Path(path).read_bytes()
    h = pyverify.HEADER.unpack(raw[:128])
    ml = h[4]
    return raw, h, raw[128:128 + ml], json.loads(raw[128:128 + ml])


def test_header_fields(art):
    p, pin, _ = art
    raw, h, mraw, m = parse(p)
    magic, vmaj, vmin, flags, ml, doff, dlen, flen, digest, reserved = h
    assert magic == b"\x89\x46\x57\x41\x0d\x0a\x1a\x0a"
    assert (vmaj, vmin, flags) == (1, 0, 0)
    assert 2 <= ml <= 16 << 20
    assert doff == -(-(128 + ml) // 4096) * 4096
    assert dlen == m["data_length"] and dlen % 64 == 0
    assert flen == doff + dlen == len(raw) == os.path.getsize(p)
    assert digest == hashlib.sha256(mraw).digest()
    assert reserved == bytes(48)
    assert raw[128 + ml:doff] == bytes(doff - 128 - ml)
    assert pin == "sha256:" + hashlib.sha256(mraw).hexdigest()


def test_manifest_is_canonical(art):
    p, _, _ = art
    _, _, mraw, m = parse(p)
    assert mraw == canonical.dumps(m)
    assert mraw == json.dumps(m, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                              allow_nan=False).encode()
    assert not mraw.startswith(b"\xef\xbb\xbf")
    assert "ĠwörldΩ".encode() in mraw and b"\\u" not in mraw.replace(b"\\u0000", b"")
    assert b'"\\t":92' in mraw                     # control characters escaped
    assert set(m) == pyverify.TOP_KEYS
    assert m["format"] == "fwassist.artifact" and m["format_version"] == [1, 0]
    assert m["requires"] == {"endianness": "little", "kernel_layout": 1}
    # Reals are strings with the shortest round-trip decimal; no JSON number is a float.
    assert m["config"]["rms_norm_eps"] == "1e-06" and m["config"]["rope_theta"] == "1000000.0"
    assert float(m["config"]["rms_norm_eps"]) == 1e-6
    assert m["evidence"]["fast"]["max_abs_err"] == "0.003125"
    assert m["provenance"]["exporter"]["options"]["tolerance"] == "0.001"

    def walk(v):
        assert not isinstance(v, float)
        if isinstance(v, dict):
            list(map(walk, v.values()))
        elif isinstance(v, list):
            list(map(walk, v))
    walk(m)


def test_tensor_table_layout_and_digests(art):
    p, _, model = art
    raw, h, _, m = parse(p)
    data = raw[h[5]:]
    table = m["tensors"]
    assert len(table) == len(model.tensors)
    assert [t["offset"] for t in table] == sorted(t["offset"] for t in table)
    covered = np.zeros(len(data), dtype=bool)
    src = {t.name: t for t in model.tensors}
    for t in table:
        assert t["offset"] % 64 == 0
        chunk = data[t["offset"]:t["offset"] + t["length"]]
        assert hashlib.sha256(chunk).hexdigest() == t["sha256"]
        assert not covered[t["offset"]:t["offset"] + t["length"]].any()
        covered[t["offset"]:t["offset"] + t["length"]] = True
        v = src[t["name"]].value
        if isinstance(v, QuantizedWeight):
            pm = kernels.pack(v.q, v.scales, v.zero_points, bits=v.bits, block=v.block,
                              signed=v.signed)
            assert t["dtype"] == "packed" and t["shape"] == [pm.N, pm.K]
            assert t["quant"] == {"bits": pm.bits, "block": pm.block,
                                  "zero_points": pm.has_zero, "scale": pm.scale_dtype}
            assert chunk == pm.data.tobytes()
            assert t["length"] == kernels.packed_size(pm.N, pm.K, bits=pm.bits,
                                                      block=pm.block, has_zero=pm.has_zero,
                                                      scale_dtype=pm.scale_dtype)
        elif isinstance(v, BF16Array):
            assert t["dtype"] == "bf16" and chunk == v.bits.astype("<u2").tobytes()
        else:
            assert t["dtype"] == {np.float32: "f32", np.float16: "f16"}[v.dtype.type]
            assert chunk == v.astype(v.dtype.newbyteorder("<")).tobytes()
            assert t["quant"] is None and t["length"] == v.nbytes
    # Every byte outside a tensor is zero padding.
    assert not np.frombuffer(data, dtype=np.uint8)[~covered].any()
    # All formats appear.
    assert {t["dtype"] for t in table} == {"packed", "f32", "f16", "bf16"}
    assert {(t["quant"] or {}).get("zero_points") for t in table} == {None, True, False}
    assert {(t["quant"] or {}).get("scale") for t in table} == {None, "f16", "f32"}


def test_order_dense_then_expert_blocks(art):
    p, _, _ = art
    _, _, _, m = parse(p)
    table = m["tensors"]
    dense = [t for t in table if t["expert"] is None]
    experts = [t for t in table if t["expert"] is not None]
    assert table == dense + experts
    assert [t["name"] for t in dense] == [
        t["name"] for t in sorted(dense, key=lambda t: tensor_order_key(t["role"], t["layer"],
                                                                        t["name"]))]
    assert dense[0]["role"] == "embed" and [t["role"] for t in dense[-2:]] == ["final_norm",
                                                                               "lm_head"]
    assert [t["role"] for t in dense[1:10]] == [r for r in ROLES if r in {
        t["role"] for t in dense if t["layer"] == 0}]
    keys = [(t["layer"], t["expert"]) for t in experts]
    assert keys == sorted(keys)
    assert [t["role"] for t in experts] == list(EXPERT_ROLES) * (2 * 4)


def test_expert_blocks(art):
    p, _, _ = art
    raw, h, _, m = parse(p)
    data = raw[h[5]:]
    blocks = m["expert_blocks"]
    assert [(b["layer"], b["expert"]) for b in blocks] == [(L, e) for L in range(2)
                                                           for e in range(4)]
    dense_end = max(t["offset"] + t["length"] for t in m["tensors"] if t["expert"] is None)
    prev_end = dense_end
    for b in blocks:
        assert b["offset"] % 4096 == 0 and b["length"] % 4096 == 0 and b["length"] > 0
        assert b["offset"] >= prev_end
        prev_end = b["offset"] + b["length"]
        blk = data[b["offset"]:b["offset"] + b["length"]]
        assert hashlib.sha256(blk).hexdigest() == b["sha256"]
        members = [t for t in m["tensors"] if (t["layer"], t["expert"]) ==
                   (b["layer"], b["expert"])]
        assert [t["role"] for t in members] == list(EXPERT_ROLES)
        assert members[0]["offset"] == b["offset"]
        for t in members:
            assert b["offset"] <= t["offset"] and t["offset"] + t["length"] <= prev_end
    assert prev_end == m["data_length"]


def test_sections_provenance_model_card(art):
    p, _, model = art
    _, _, _, m = parse(p)
    assert set(m["sections"]) == {"config", "tokenizer", "tensors", "expert_blocks",
                                  "provenance", "model_card", "sbom", "evidence"}
    for k, v in m["sections"].items():
        assert v == hashlib.sha256(canonical.dumps(m[k])).hexdigest()
    prov = m["provenance"]
    assert prov["source"] == {"name": "synthetic-qwen3-moe.onnx", "sha256": SOURCE_SHA}
    assert prov["exporter"]["name"] == "fwassist" and prov["exporter"]["version"] == "0.1.0"
    assert prov["exporter"]["options"] == {"mode": "qat", "threads": 1, "tolerance": "0.001"}
    assert prov["importer_notes"] == ["synthetic test model"]
    assert m["model_card"]["known_limitations"] == model_card()["known_limitations"]
    assert m["tokenizer"]["model"]["vocab"]["é"] == 93


def test_sbom_is_valid_cyclonedx_16(art):
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    p, _, _ = art
    _, _, _, m = parse(p)
    bom = m["sbom"]
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(bom))
    assert errors is None, errors
    assert bom["bomFormat"] == "CycloneDX" and bom["specVersion"] == "1.6"
    assert "timestamp" not in json.dumps(bom)
    comp = bom["metadata"]["component"]
    assert comp["type"] == "machine-learning-model" and comp["name"] == "fwassist-test-moe"
    assert comp["hashes"] == [{"alg": "SHA-256", "content": m["sections"]["tensors"]}]
    cons = comp["modelCard"]["considerations"]
    assert cons["technicalLimitations"] == model_card()["known_limitations"]
    anc = comp["pedigree"]["ancestors"]
    assert anc[0]["hashes"] == [{"alg": "SHA-256", "content": SOURCE_SHA}]
    assert comp["modelCard"]["modelParameters"]["modelArchitecture"] == "qwen3_moe"
    # serialNumber: UUIDv5 of the other sections' digests.
    from fwassist.artifact.sbom import serial_number
    others = {k: v for k, v in m["sections"].items() if k != "sbom"}
    assert bom["serialNumber"] == serial_number(others)
    assert bom["serialNumber"].startswith("urn:uuid:") and bom["serialNumber"][23] == "5"


def test_sbom_dataset_component(tmp_path):
    """A dataset with its license set, manifest digest, file count and sources becomes a
    CycloneDX data component referenced from the model card; the BOM stays schema-valid."""
    pytest.importorskip("cyclonedx")
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    ds = {"name": "c-corpus", "description": "C files", "licenses": ["MIT", "BSD-3-Clause"],
          "sha256": "ab" * 32, "files": 12, "sources": ["brotli==1.2.1", "xxhash==4.1.0"]}
    p = tmp_path / "d.fwa"
    write(p, model_card=model_card(datasets=[ds]))
    bom = parse(p)[3]["sbom"]
    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(json.dumps(bom)) is None
    (comp,) = bom["components"]
    assert comp["type"] == "data" and comp["name"] == "c-corpus"
    assert comp["licenses"] == [{"license": {"id": "MIT"}}, {"license": {"id": "BSD-3-Clause"}}]
    assert comp["hashes"] == [{"alg": "SHA-256", "content": "ab" * 32}]
    props = [(x["name"], x["value"]) for x in comp["properties"]]
    assert props == [("fwassist:dataset:files", "12"), ("fwassist:dataset:source", "brotli==1.2.1"),
                     ("fwassist:dataset:source", "xxhash==4.1.0")]
    assert comp["data"][0]["type"] == "dataset"
    params = bom["metadata"]["component"]["modelCard"]["modelParameters"]
    assert params["datasets"] == [{"ref": comp["bom-ref"]}]
    with pytest.raises(ValueError, match="sha256"):
        write(tmp_path / "e.fwa", model_card=model_card(datasets=[dict(ds, sha256="xyz")]))
    with pytest.raises(ValueError, match="licenses"):
        write(tmp_path / "f.fwa", model_card=model_card(datasets=[dict(ds, licenses="MIT")]))


def test_sbom_changes_with_model_card(tmp_path):
    a, b = tmp_path / "a.fwa", tmp_path / "b.fwa"
    write(a)
    write(b, model_card=model_card(version="1.0.1"))
    sa, sb = parse(a)[3]["sbom"], parse(b)[3]["sbom"]
    assert sa["serialNumber"] != sb["serialNumber"]
    assert sa["metadata"]["component"]["hashes"] == sb["metadata"]["component"]["hashes"]


def test_verifies_with_both_readers(art):
    p, pin, _ = art
    a = pyverify.verify(p, pin=pin)
    assert a.pin == pin and a.manifest == parse(p)[3]
    b = verify(p, pin=pin)                # the C++ loader when present
    assert b.pin == pin
    if hasattr(fwassist, "load_artifact"):
        fwassist.load_artifact(str(p), pin=pin)
        fwassist.load_artifact(str(p), pin=pin, lazy=True)


def _corrupt(src: Path, dst: Path, fn) -> Path:
    raw = bytearray(src.read_bytes())
    raw = fn(raw)
    dst.write_bytes(bytes(raw))
    return dst


def _flip(off):
    def f(raw):
        raw[off] ^= 0x01
        return raw
    return f


def _statuses(path, pin=None, lazy=False) -> list[str]:
    """The status of each available reader (Python always, C++ when built)."""
    out = []
    for native in ([False, True] if hasattr(fwassist, "load_artifact") else [False]):
        try:
            verify(path, pin=pin, lazy=lazy, native=native)
            out.append("ok")
        except ArtifactError as e:
            out.append(e.status)
    return out


def test_corruptions_are_rejected(art, tmp_path):
    p, pin, _ = art
    raw, h, _, m = parse(p)
    ml, doff = h[4], h[5]
    dense = next(t for t in m["tensors"] if t["role"] == "q_proj")
    exp = next(t for t in m["tensors"] if t["expert"] is not None)
    blk = m["expert_blocks"][0]
    dense_pad = next(o for o in range(len(raw) - doff) if raw[doff + o] == 0 and not any(
        t["offset"] <= o < t["offset"] + t["length"] for t in m["tensors"]))
    cases = {
        "bad_magic": _flip(0),
        "unsupported_version": lambda r: r[:8] + struct.pack("<H", 2) + r[10:],
        "malformed": _flip(100),                                        # reserved byte
        "digest_mismatch": _flip(128 + ml // 2),                        # manifest byte
        "truncated": lambda r: r[:-1],
        "trailing_bytes": lambda r: r + b"\0",
        "nonzero_padding": _flip(doff + dense_pad),
    }
    for want, fn in cases.items():
        q = _corrupt(p, tmp_path / f"{want}.fwa", fn)
        assert set(_statuses(q)) == {want}, want
    # A flipped weight bit in a dense tensor, and in an expert (found at open unless lazy).
    q = _corrupt(p, tmp_path / "dense.fwa", _flip(doff + dense["offset"] + 5))
    assert set(_statuses(q)) == {"digest_mismatch"}
    q = _corrupt(p, tmp_path / "expert.fwa", _flip(doff + exp["offset"] + 7))
    assert set(_statuses(q)) == {"digest_mismatch"}
    a = pyverify.verify(q, lazy=True)
    with pytest.raises(pyverify.PyArtifactError) as e:
        a.verify_expert(blk["layer"], blk["expert"])
    assert e.value.status == "digest_mismatch"
    a.verify_expert(1, 3)               # an untouched expert is fine
    # Padding inside an expert block.
    # Padding inside an expert block: zero padding is checked before digests (§5), at open or,
    # lazily, on the block's first use.
    q = _corrupt(p, tmp_path / "blkpad.fwa", _flip(doff + blk["offset"] + blk["length"] - 1))
    assert set(_statuses(q)) == {"nonzero_padding"}
    a = pyverify.verify(q, lazy=True)
    with pytest.raises(pyverify.PyArtifactError) as e:
        a.verify_expert(blk["layer"], blk["expert"])
    assert e.value.status == "nonzero_padding"
    assert a.verified_blocks == set()
    a.verify_expert(0, 1)
    assert a.verified_blocks == {(0, 1)}
    # Pins.
    other = "sha256:" + "0" * 64
    assert set(_statuses(p, pin=other)) == {"pin_mismatch"}
    assert set(_statuses(p, pin=pin)) == {"ok"}


def test_every_header_and_manifest_byte_is_bound(art, tmp_path):
    """Each bit flip in the header, the manifest and the gap is rejected (sampled bits)."""
    p, _, _ = art
    raw, h, _, _ = parse(p)
    end = h[5]
    rng = np.random.default_rng(3)
    offsets = list(range(128)) + sorted(rng.choice(np.arange(128, end), 200, replace=False))
    q = tmp_path / "f.fwa"
    for off in offsets:
        b = bytearray(raw)
        b[off] ^= 1 << int(rng.integers(8))
        q.write_bytes(bytes(b))
        with pytest.raises(pyverify.PyArtifactError):
            pyverify.verify(q)


def test_dense_model_without_tokenizer(tmp_path):
    """No experts (dense MLP layers), no tokenizer: no expert blocks, data_length % 64 == 0."""
    rng = np.random.default_rng(2)
    c = base_config(1, 0)
    c["mlp_only_layers"] = [0]
    ts = [ModelTensor("model.layers.0.mlp.gate_proj.weight", "mlp_gate", 0, None,
                      quantized(rng, 128, 64)),
          ModelTensor("model.layers.0.mlp.up_proj.weight", "mlp_up", 0, None,
                      quantized(rng, 128, 64)),
          ModelTensor("model.layers.0.mlp.down_proj.weight", "mlp_down", 0, None,
                      quantized(rng, 64, 128)),
          ModelTensor("model.norm.weight", "final_norm", None, None,
                      np.ones(3, dtype=np.float32))]
    m = ImportedModel(c, ts, None, "dense.onnx", SOURCE_SHA)
    p = tmp_path / "dense.fwa"
    pin = write(p, m)
    art = pyverify.verify(p, pin=pin)
    assert art.manifest["expert_blocks"] == [] and art.manifest["tokenizer"] is None
    assert [t["role"] for t in art.tensors] == ["mlp_gate", "mlp_up", "mlp_down", "final_norm"]
    assert art.manifest["data_length"] % 64 == 0
    assert art.tensors[-1]["length"] == 12
    verify(p, pin=pin)


def test_pure_python_packed_size_matches_core():
    for N, K in ((1, 1), (16, 32), (17, 33), (100, 200)):
        for bits in (2, 3, 4, 8):
            for block in (32, 64, 128):
                for z in (False, True):
                    for s in ("f16", "f32"):
                        assert pyverify.packed_size(N, K, bits, block, z, s) == \
                            kernels.packed_size(N, K, bits=bits, block=block, has_zero=z,
                                                scale_dtype=s)


# ---------------------------------------------------------------------------------------------
# Determinism


def test_same_input_same_bytes_and_order_independent(tmp_path, art):
    p, pin, model = art
    q = tmp_path / "again.fwa"
    assert write(q, model) == pin
    assert q.read_bytes() == p.read_bytes()
    shuffled = replace(model, tensors=list(reversed(model.tensors)),
                       config=dict(reversed(list(model.config.items()))))
    r = tmp_path / "shuffled.fwa"
    assert write(r, shuffled) == pin
    card = dict(reversed(list(model_card().items())))
    assert write(tmp_path / "card.fwa", model, model_card=card) == pin


_DETERMINISM_SCRIPT = textwrap.dedent("""
    import sys
    sys.path.insert(0, {tests!r})
    from test_artifact_writer import write
    print(write(sys.argv[1]))
""")


def test_determinism_across_environments(tmp_path, art):
    p, pin, _ = art
    script = _DETERMINISM_SCRIPT.format(tests=str(TESTS))
    envs = [
        {"PYTHONHASHSEED": "0", "TZ": "UTC", "LC_ALL": "C", "LANG": "C",
         "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"},
        {"PYTHONHASHSEED": "4242", "TZ": "Asia/Kathmandu", "LC_ALL": "C.UTF-8",
         "LANG": "de_DE.UTF-8", "OMP_NUM_THREADS": "2", "OPENBLAS_NUM_THREADS": "2"},
        {"PYTHONHASHSEED": "random", "TZ": "America/St_Johns", "LC_ALL": "",
         "LANG": "tr_TR.UTF-8", "OMP_NUM_THREADS": "7", "MKL_NUM_THREADS": "3"},
    ]
    for i, extra in enumerate(envs):
        out = tmp_path / f"env{i}" / "model.fwa"
        out.parent.mkdir()
        env = dict(os.environ, **extra)
        r = subprocess.run([sys.executable, "-c", script, str(out)], env=env,
                           capture_output=True, text=True, timeout=300, cwd=str(out.parent))
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == pin
        assert out.read_bytes() == p.read_bytes()


# ---------------------------------------------------------------------------------------------
# Atomicity and refusals


def test_failure_mid_write_leaves_nothing(tmp_path):
    model = make_model()
    bad = model.tensors[-1].value       # lm_head, packed last among the dense tensors
    q = bad.q.copy()
    q[0, 0] = 100                       # out of the 4-bit range: pack() fails mid-write
    model.tensors[-1] = replace(model.tensors[-1], value=replace(bad, q=q))
    target = tmp_path / "m.fwa"
    with pytest.raises(ValueError, match="lm_head"):
        write(target, model)
    assert list(tmp_path.iterdir()) == []
    # A previous artifact at the target is left untouched.
    pin = write(target)
    before = target.read_bytes()
    with pytest.raises(ValueError):
        write(target, model)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["m.fwa"]
    assert target.read_bytes() == before and pyverify.verify(target).pin == pin


@pytest.mark.parametrize("where", ["write", "interrupt", "fsync", "replace"])
def test_os_failures_leave_nothing(tmp_path, monkeypatch, where):
    import fwassist.artifact.writer as w

    real_write, calls = os.write, []

    def failing_write(fd, data):
        calls.append(len(data))
        if len(calls) == 20:            # in the middle of the data region
            if where == "interrupt":
                raise KeyboardInterrupt
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    def boom(*a, **k):
        raise OSError(5, "Input/output error")

    if where in ("write", "interrupt"):
        monkeypatch.setattr(w.os, "write", failing_write)
    else:
        monkeypatch.setattr(w.os, where, boom)
    with pytest.raises((OSError, KeyboardInterrupt)):
        write(tmp_path / "m.fwa")
    assert list(tmp_path.iterdir()) == []
    if where in ("write", "interrupt"):
        assert len(calls) == 20


def test_temp_file_in_target_directory(tmp_path, monkeypatch):
    import fwassist.artifact.writer as w

    seen = []
    real = os.replace

    def spy(src, dst):
        seen.append((os.path.dirname(os.path.abspath(src)), os.path.getsize(src), dst))
        return real(src, dst)
    monkeypatch.setattr(w.os, "replace", spy)
    target = tmp_path / "m.fwa"
    write(target)
    assert seen == [(str(tmp_path), target.stat().st_size, str(target))]
    assert list(tmp_path.iterdir()) == [target]


def test_written_file_is_verified_before_rename(tmp_path, monkeypatch):
    """A writer bug that produced an inconsistent file would be caught before the rename."""
    import fwassist.artifact.writer as w

    real = w.pyverify.verify

    def wrong(path, pin=None, lazy=False):
        return real(path, pin="sha256:" + "0" * 64, lazy=lazy)
    monkeypatch.setattr(w.pyverify, "verify", wrong)
    with pytest.raises(RuntimeError, match="does not verify"):
        write(tmp_path / "m.fwa")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("lim", [None, [], "", [""], ["  "], [1], "a string"])
def test_refuses_missing_or_empty_limitations(tmp_path, lim):
    card = model_card()
    if lim is None:
        del card["known_limitations"]
    else:
        card["known_limitations"] = lim
    with pytest.raises(ValueError, match="known_limitations"):
        write(tmp_path / "m.fwa", model_card=card)
    assert list(tmp_path.iterdir()) == []


def test_refuses_bad_models(tmp_path):
    m = make_model()
    cases = []
    dup = copy.copy(m)
    dup.tensors = m.tensors + [m.tensors[0]]
    cases.append((dup, "duplicate"))
    role = copy.copy(m)
    role.tensors = [replace(m.tensors[0], role="embedding")] + m.tensors[1:]
    cases.append((role, "unknown role"))
    f64 = copy.copy(m)
    f64.tensors = m.tensors[:-2] + [replace(m.tensors[-2], value=np.ones(64))] + m.tensors[-1:]
    cases.append((f64, "float32"))
    missing = copy.copy(m)
    missing.tensors = [t for t in m.tensors if not t.name.endswith("experts.1.down_proj.weight")
                       or t.layer != 0]
    cases.append((missing, "expert_down"))
    nosrc = copy.copy(m)
    nosrc.source_sha256 = ""
    cases.append((nosrc, "source_sha256"))
    layer = copy.copy(m)
    layer.config = dict(m.config, num_hidden_layers=1)
    cases.append((layer, "num_hidden_layers"))
    nan = copy.copy(m)
    nan.config = dict(m.config, rope_theta=float("nan"))
    cases.append((nan, "non-finite"))
    for model, msg in cases:
        with pytest.raises(ValueError, match=msg):
            write(tmp_path / "m.fwa", model)
        assert list(tmp_path.iterdir()) == []


def test_canonical_rules():
    assert canonical.dumps({"b": 1, "a": [True, None, "x"]}) == b'{"a":[true,null,"x"],"b":1}'
    assert canonical.dumps({"s": "\x00\x1f\n\"\\é€"}) == \
        '{"s":"\\u0000\\u001f\\n\\"\\\\é€"}'.encode()
    assert canonical.dumps(2 ** 53) == b"9007199254740992"
    # Keys sort by UTF-8 bytes (= code points), non-ASCII allowed (tokenizer vocabularies).
    keys = {"b": 0, "é": 1, "a": 2, "\U0001F600": 3, "\uffff": 4, "Z": 5}
    out = canonical.dumps(keys)
    assert out == json.dumps(keys, sort_keys=True, separators=(",", ":"),
                             ensure_ascii=False).encode()
    order = [k for k in json.loads(out)]
    assert order == sorted(keys, key=lambda k: k.encode("utf-8"))
    for bad, exc in ((1.5, TypeError), ({"\udc80": 1}, ValueError), ({1: 2}, TypeError),
                     (2 ** 53 + 1, ValueError), ("\ud800", ValueError),
                     (float("nan"), TypeError), ((1, 2), TypeError)):
        with pytest.raises(exc):
            canonical.dumps(bad)
    assert canonical.normalize({"x": 0.1, "y": (np.float32(0.5), np.int64(3), np.bool_(1))}) \
        == {"x": "0.1", "y": ["0.5", 3, True]}
    with pytest.raises(ValueError):
        canonical.normalize({"x": float("inf")})
    deep = []
    for _ in range(70):
        deep = [deep]
    with pytest.raises(ValueError, match="nesting"):
        canonical.dumps(deep)


# ---------------------------------------------------------------------------------------------
# inspect and the CLI


def test_inspect(art):
    p, pin, model = art
    info = inspect(p)
    assert info["pin"] == pin and info["verified"] == "full"
    assert info["config"]["num_experts"] == 4
    assert info["tokenizer"] == {"type": "BPE", "vocab": 94, "added_tokens": 2}
    assert len(info["tensors"]) == len(model.tensors)
    q = next(t for t in info["tensors"] if t["role"] == "q_proj")
    assert (q["dtype"], q["bits"], q["block"], q["shape"]) == ("packed", 4, 32, [64, 64])
    tot = info["totals"]
    assert tot["by_role"]["expert_up"]["tensors"] == 8
    assert tot["by_format"]["3-bit"]["tensors"] == 2 * 4 * 3 + 2      # experts + k_proj
    assert sum(s["bytes"] for s in tot["by_role"].values()) == tot["bytes"]
    assert tot["expert_blocks"] == 8
    assert info["sections"] == parse(p)[3]["sections"]
    text = render_text(info)
    assert pin in text and "model.layers.1.mlp.experts.3.down_proj.weight" in text
    assert "random weights: generates noise" in text
    json.dumps(info)


def run_cli(argv, capsys):
    import argparse
    parser = argparse.ArgumentParser(prog="fwassist")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args([str(a) for a in argv])
    rc = args.fn(args)
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_verify_inspect_sbom(art, tmp_path, capsys):
    p, pin, _ = art
    rc, out, _ = run_cli(["verify", p], capsys)
    assert rc == 0 and pin in out
    rc, out, _ = run_cli(["verify", p, "--pin", pin, "--lazy"], capsys)
    assert rc == 0 and "pin matches" in out
    rc, _, err = run_cli(["verify", p, "--pin", "sha256:" + "1" * 64], capsys)
    assert rc == 3 and "pin_mismatch" in err
    rc, _, err = run_cli(["verify", p, "--pin", pin.upper()], capsys)
    assert rc == 2 and "pin" in err
    bad = _corrupt(p, tmp_path / "bad.fwa", _flip(os.path.getsize(p) - 1))
    rc, _, err = run_cli(["verify", bad], capsys)
    assert rc == 3
    rc, _, err = run_cli(["verify", bad, "--lazy"], capsys)
    assert rc == 3                       # the last byte is in an expert block: still found
    rc, _, err = run_cli(["verify", tmp_path / "missing.fwa"], capsys)
    assert rc == 3 and "io_error" in err
    rc, out, _ = run_cli(["inspect", p, "--json"], capsys)
    assert rc == 0 and json.loads(out)["pin"] == pin
    rc, out, _ = run_cli(["inspect", p], capsys)
    assert rc == 0 and "totals by role" in out
    rc, out, _ = run_cli(["sbom", p], capsys)
    assert rc == 0 and json.loads(out) == parse(p)[3]["sbom"]


def test_status_name_normalisation():
    class E(Exception):
        pass
    e = E()
    e.status = 20
    assert status_name(e) == "digest_mismatch"
    e.status = "pin_mismatch"
    assert status_name(e) == "pin_mismatch"
