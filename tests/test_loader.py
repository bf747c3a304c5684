# SPDX-License-Identifier: Apache-2.0
"""fwassist.load_artifact (the C++ reader through fwassist.loader): digests against hashlib,
every error status, zero-copy read-only views that outlive close(), lazy experts, and a round
trip through the product writer (fwassist.artifact.writer) when the package has it.

Artifacts come from tests/artifact_fixtures.py, an independent spec-following builder that
can also re-seal a corrupted manifest."""

from __future__ import annotations

import copy
import gc
import hashlib
import json
import struct
import threading

import numpy as np
import pytest

import fwassist
from fwassist import ArtifactError, _core, kernels, load_artifact

import artifact_fixtures as fx


@pytest.fixture(scope="module")
def tensors() -> list:
    return fx.small_tensors(seed=3)


@pytest.fixture(scope="module")
def blob(tensors) -> bytes:
    return fx.build(tensors)


def resealed(blob: bytes, edit) -> bytes:
    """The file after `edit(manifest)`, with sections and header made consistent again."""
    m, data = fx.split(blob)
    edit(m)
    return fx.assemble(m, data)


def entry(m: dict, name: str) -> dict:
    return next(e for e in m["tensors"] if e["name"] == name)


def expect(status: str, source, **kw) -> ArtifactError:
    with pytest.raises(ArtifactError) as ei:
        load_artifact(source, **kw)
    assert ei.value.status == status, ei.value.message
    assert isinstance(ei.value, ValueError)
    assert ei.value.message and status in str(ei.value)
    return ei.value


# ---------------------------------------------------------------------------------------------
# SHA-256


@pytest.mark.parametrize("backend", [""] + _core.sha256_backends().split(","))
def test_sha256_matches_hashlib(backend):
    rng = np.random.default_rng(1)
    for n in list(range(0, 130)) + [1000, 4096, 65537, 1 << 20]:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert _core.sha256(data, backend) == hashlib.sha256(data).digest(), (backend, n)
    buf = bytearray(b"abc" * 1000)
    want = hashlib.sha256(buf).digest()
    assert _core.sha256(buf, backend) == want
    assert _core.sha256(memoryview(buf), backend) == want
    assert _core.sha256(np.frombuffer(bytes(buf), dtype=np.uint8), backend) == want


def test_sha256_backend_in_use_is_listed():
    assert _core.sha256_backend() in _core.sha256_backends().split(",")
    assert _core.sha256_backends().split(",")[-1] == "scalar"
    with pytest.raises(ValueError):
        _core.sha256(b"x", "no-such-backend")


# ---------------------------------------------------------------------------------------------
# Valid artifacts


def test_root_digest_pin_and_manifest(blob):
    mb = fx.manifest_bytes(blob)
    with load_artifact(blob) as a:
        assert a.root_digest == hashlib.sha256(mb).hexdigest()
        assert a.pin == "sha256:" + a.root_digest
        assert a.manifest_bytes == mb
        assert a.manifest == json.loads(mb)
        assert a.config["architecture"] == "qwen3_moe"
        assert a.config["rms_norm_eps"] == "1e-06"
        assert not a.lazy
        assert "sha256:" in repr(a)
    assert load_artifact(blob, pin=a.pin).root_digest == a.root_digest


def test_path_and_buffer_sources_agree(blob, tmp_path):
    p = tmp_path / "model.fwa"
    p.write_bytes(blob)
    for src in (p, str(p), blob, bytearray(blob), memoryview(blob),
                np.frombuffer(blob, dtype=np.uint8)):
        with load_artifact(src) as a:
            assert a.root_digest == hashlib.sha256(fx.manifest_bytes(blob)).hexdigest()
            assert a.tensor_names() == [t["name"] for t in fx.split(blob)[0]["tensors"]]


def test_tensors_are_zero_copy_read_only_views(blob, tensors):
    src = np.frombuffer(blob, dtype=np.uint8)
    base = src.__array_interface__["data"][0]
    a = load_artifact(src)
    doff = struct.unpack_from("<Q", blob, 24)[0]
    for t in tensors:
        info = a.tensor_info(t.name)
        assert info["role"] == t.role and info["layer"] == t.layer
        assert info["expert"] == t.expert
        v = a.tensor(t.name)
        raw = a.tensor_bytes(t.name)
        assert raw.dtype == np.uint8 and raw.size == info["length"]
        assert raw.__array_interface__["data"][0] == base + doff + info["offset"]
        assert not raw.flags.writeable
        assert hashlib.sha256(raw).hexdigest() == info["sha256"]
        if isinstance(t.value, kernels.PackedMatrix):
            assert isinstance(v, kernels.PackedMatrix)
            assert (v.N, v.K, v.bits, v.block, v.has_zero, v.scale_dtype) == (
                t.value.N, t.value.K, t.value.bits, t.value.block, t.value.has_zero,
                t.value.scale_dtype)
            assert v.data.__array_interface__["data"][0] == base + doff + info["offset"]
            np.testing.assert_array_equal(kernels.dequantize(v), kernels.dequantize(t.value))
            x = np.random.default_rng(0).standard_normal((2, v.K)).astype(np.float32)
            np.testing.assert_array_equal(kernels.matmul(v, x), kernels.matmul(t.value, x))
        else:
            want = {"f32": np.float32, "f16": np.float16, "bf16": np.uint16}[info["dtype"]]
            assert v.dtype == want
            assert v.shape == t.value.shape
            assert not v.flags.writeable
            assert v.__array_interface__["data"][0] == base + doff + info["offset"]
            np.testing.assert_array_equal(v, t.value)
            with pytest.raises(ValueError):
                v[0] = 1
    with pytest.raises(KeyError):
        a.tensor("nope")
    a.close()


def test_views_outlive_close_and_the_source(blob, tmp_path):
    p = tmp_path / "m.fwa"
    p.write_bytes(blob)
    a = load_artifact(p)
    emb = a.tensor("model.embed_tokens.weight")
    pm = a.tensor("lm_head.weight")
    want = emb.copy()
    a.close()
    a.close()  # idempotent
    assert a.closed
    with pytest.raises(ValueError):
        a.tensor("model.embed_tokens.weight")
    with pytest.raises(ValueError):
        _ = a.manifest_bytes
    assert a.pin.startswith("sha256:")  # identity stays known
    del a
    gc.collect()
    np.testing.assert_array_equal(emb, want)
    assert kernels.dequantize(pm).shape == (pm.N, pm.K)
    # A borrowed bytearray stays pinned (cannot be resized) while a view is alive.
    buf = bytearray(blob)
    b = load_artifact(buf)
    view = b.tensor("model.norm.weight")
    b.close()
    with pytest.raises(BufferError):
        buf.extend(b"x")
    del view, b
    gc.collect()
    buf.extend(b"x")


# ---------------------------------------------------------------------------------------------
# Errors


def test_header_statuses(blob):
    expect("truncated", blob[:100])
    expect("truncated", blob[:-1])
    expect("trailing_bytes", blob + b"\0")
    expect("bad_magic", b"\x88" + blob[1:])
    expect("unsupported_version", blob[:8] + struct.pack("<H", 2) + blob[10:])
    expect("unsupported_version", blob[:10] + struct.pack("<H", 2) + blob[12:])
    # Minor 1 is implemented (format 1.1): over a 1.0 manifest it lacks "generation".
    assert "missing key 'generation'" in expect(
        "malformed", blob[:10] + struct.pack("<H", 1) + blob[12:]).message
    expect("malformed", blob[:12] + struct.pack("<I", 1) + blob[16:])
    expect("malformed", blob[:127] + b"\x01" + blob[128:])
    e = expect("cap_exceeded", blob[:16] + struct.pack("<Q", (16 << 20) + 1) + blob[24:])
    assert "manifest_length" in e.message
    e = expect("digest_mismatch", blob[:48] + bytes(32) + blob[80:])
    assert "manifest_sha256" in e.message


def test_io_error(tmp_path):
    e = expect("io_error", tmp_path / "missing.fwa")
    assert "missing.fwa" in e.message
    expect("io_error", tmp_path)  # a directory


def test_pin(blob):
    good = "sha256:" + hashlib.sha256(fx.manifest_bytes(blob)).hexdigest()
    wrong = good[:-1] + ("0" if good[-1] != "0" else "1")
    e = expect("pin_mismatch", blob, pin=wrong)
    assert good[7:] in e.message and wrong[7:] in e.message
    for bad in ("", "sha256:", good.upper(), good[7:], good + "0", "md5:" + good[7:]):
        with pytest.raises(ValueError) as ei:
            load_artifact(blob, pin=bad)
        assert not isinstance(ei.value, ArtifactError)
    with pytest.raises(TypeError):
        load_artifact(blob, pin=b"sha256:00")
    with pytest.raises(TypeError):
        load_artifact(12345)
    # The pin is checked before the manifest is parsed: a non-JSON manifest with a consistent
    # header fails on the pin when one is given.
    junk = b"not json at all"
    f = bytes(fx.header(len(junk), 0, hashlib.sha256(junk).digest())) + junk
    f += b"\0" * (4096 - len(f))
    expect("pin_mismatch", f, pin=good)
    expect("malformed", f)


@pytest.mark.parametrize("status,edit,needle", [
    ("malformed", lambda m: m.update(extra=1), "extra"),
    ("malformed", lambda m: entry(m, "model.norm.weight").update(length=4), "length"),
    ("malformed", lambda m: entry(m, "model.norm.weight").update(offset=entry(
        m, "model.norm.weight")["offset"] + 4), "multiple of 64"),
    ("out_of_bounds", lambda m: entry(m, "lm_head.weight").update(offset=m["data_length"]),
     "lm_head.weight"),
    ("overlap", lambda m: entry(m, "model.layers.0.input_layernorm.weight").update(
        offset=entry(m, "model.layers.0.input_layernorm.weight")["offset"] - 64),
     "model.embed_tokens.weight"),
    ("out_of_bounds", lambda m: entry(
        m, "model.layers.0.mlp.experts.0.up_proj.weight").update(expert=1), "expert block"),
    ("incompatible", lambda m: m["requires"].update(kernel_layout=2), "kernel_layout"),
    ("incompatible", lambda m: entry(m, "lm_head.weight")["quant"].update(bits=5), "bits=5"),
    ("cap_exceeded", lambda m: entry(m, "model.norm.weight").update(shape=[1, 1, 1, 1, 64]),
     "rank"),
    ("cap_exceeded", lambda m: m.update(tensors=[{}] * 65537), "65537"),
    ("digest_mismatch", lambda m: m["sections"].update(sbom="0" * 64), "sbom"),
])
def test_manifest_statuses(blob, status, edit, needle):
    if status == "digest_mismatch":  # sections left as edited
        m, data = fx.split(blob)
        edit(m)
        f = fx.assemble(m, data, fix_sections=False)
    else:
        f = resealed(blob, edit)
    e = expect(status, f)
    assert needle in e.message
    expect(status, f, lazy=True)


def test_real_numbers_must_be_strings(blob):
    m, data = fx.split(blob)
    m["config"]["rms_norm_eps"] = 1e-6
    m["sections"] = {k: fx.sha(fx.canonical(m[k])) for k in fx.SECTION_KEYS}
    text = json.dumps(m, sort_keys=True, separators=(",", ":")).encode()
    f = bytes(fx.header(len(text), len(data), hashlib.sha256(text).digest())) + text
    f += b"\0" * (fx.roundup(len(f), 4096) - len(f)) + data
    e = expect("malformed", f)
    assert "non-integer" in e.message


def test_padding_and_digest_statuses(blob):
    m, data = fx.split(blob)
    doff = len(blob) - len(data)
    q = entry(m, "model.layers.0.self_attn.q_proj.weight")  # followed by the gap to a block
    assert q["offset"] + q["length"] < m["expert_blocks"][0]["offset"]
    f = bytearray(blob)
    f[doff + q["offset"] + q["length"] + 1] = 1
    e = expect("nonzero_padding", bytes(f))
    assert "after tensor 'model.layers.0.self_attn.q_proj.weight'" in e.message
    expect("nonzero_padding", bytes(f), lazy=True)
    f = bytearray(blob)
    ml = struct.unpack_from("<Q", blob, 16)[0]
    f[128 + ml] = 0x20
    expect("nonzero_padding", bytes(f))
    for name in ("model.embed_tokens.weight", "lm_head.weight",
                 "model.layers.0.mlp.experts.1.down_proj.weight"):
        t = entry(m, name)
        f = bytearray(blob)
        f[doff + t["offset"] + t["length"] - 1] ^= 0x01
        e = expect("digest_mismatch", bytes(f))
        assert f"'{name}'" in e.message and t["sha256"] in e.message


# ---------------------------------------------------------------------------------------------
# Lazy experts


def test_lazy_expert_fails_only_when_used(blob):
    m, data = fx.split(blob)
    doff = len(blob) - len(data)
    t = entry(m, "model.layers.0.mlp.experts.1.up_proj.weight")
    f = bytearray(blob)
    f[doff + t["offset"]] ^= 0x80
    f = bytes(f)
    expect("digest_mismatch", f)
    a = load_artifact(f, lazy=True)
    assert a.lazy
    assert [b["verified"] for b in a.expert_blocks()] == [False, False]
    a.tensor("model.embed_tokens.weight")  # non-expert tensors were verified at open
    a.tensor("model.layers.0.mlp.experts.0.gate_proj.weight")
    assert [b["verified"] for b in a.expert_blocks()] == [True, False]
    for name in ("model.layers.0.mlp.experts.1.gate_proj.weight",
                 "model.layers.0.mlp.experts.1.up_proj.weight"):
        for _ in range(2):  # the failure is cached and repeated
            with pytest.raises(ArtifactError) as ei:
                a.tensor(name)
            assert ei.value.status == "digest_mismatch"
            assert "experts.1.up_proj" in ei.value.message
            with pytest.raises(ArtifactError):
                a.tensor_bytes(name)
    with pytest.raises(ArtifactError) as ei:
        a.verify_expert(0, 1)
    assert ei.value.status == "digest_mismatch"
    a.verify_expert(0, 0)
    with pytest.raises(KeyError):
        a.verify_expert(0, 2)
    assert [b["verified"] for b in a.expert_blocks()] == [True, False]


def test_lazy_padding_inside_a_block(blob):
    m, data = fx.split(blob)
    doff = len(blob) - len(data)
    b = m["expert_blocks"][0]
    f = bytearray(blob)
    f[doff + b["offset"] + b["length"] - 1] = 9
    expect("nonzero_padding", bytes(f))
    a = load_artifact(bytes(f), lazy=True)
    with pytest.raises(ArtifactError) as ei:
        a.verify_expert(b["layer"], b["expert"])
    assert ei.value.status == "nonzero_padding"
    a.verify_expert(0, 1)


def test_concurrent_expert_verification(blob):
    a = load_artifact(blob, lazy=True)
    errors = []

    def work():
        try:
            for e in (0, 1, 0, 1):
                a.verify_expert(0, e)
                a.tensor(f"model.layers.0.mlp.experts.{e}.down_proj.weight")
        except Exception as ex:  # pragma: no cover - reported below
            errors.append(ex)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(b["verified"] for b in a.expert_blocks())


# ---------------------------------------------------------------------------------------------
# The product writer


def test_round_trip_through_the_writer(tmp_path):
    from fwassist.artifact import writer
    from fwassist.export.model import BF16Array, ImportedModel, ModelTensor, QuantizedWeight

    rng = np.random.default_rng(5)
    H, E, I = 64, 2, 32

    def qw(N, K, bits, block=32):
        nb = -(-K // block)
        lo = -(1 << (bits - 1))
        q = rng.integers(lo, -lo, size=(N, K)).astype(np.int8)
        s = (rng.random((N, nb)) * 0.02 + 0.001).astype(np.float16)
        return QuantizedWeight(q, s, None, bits, block, True)

    ts = [ModelTensor("model.embed_tokens.weight", "embed", None, None,
                      rng.standard_normal((16, H)).astype(np.float32)),
          ModelTensor("model.layers.0.input_layernorm.weight", "input_norm", 0, None,
                      rng.standard_normal(H).astype(np.float16)),
          ModelTensor("model.layers.0.mlp.gate.weight", "router", 0, None,
                      BF16Array(rng.integers(0, 1 << 16, (E, H)).astype(np.uint16)))]
    for e in range(E):
        p = f"model.layers.0.mlp.experts.{e}."
        ts += [ModelTensor(p + "gate_proj.weight", "expert_gate", 0, e, qw(I, H, 3)),
               ModelTensor(p + "up_proj.weight", "expert_up", 0, e, qw(I, H, 3)),
               ModelTensor(p + "down_proj.weight", "expert_down", 0, e, qw(H, I, 2))]
    ts.append(ModelTensor("lm_head.weight", "lm_head", None, None, qw(16, H, 4)))
    config = {"architecture": "qwen3_moe", "hidden_size": H, "num_experts": E,
              "rms_norm_eps": 1e-6, "rope_theta": 1e6, "num_hidden_layers": 1}
    model = ImportedModel(config=config, tensors=ts,
                          source_sha256=hashlib.sha256(b"src").hexdigest(), source_name="t")
    path = tmp_path / "w.fwa"
    pin = writer.write_artifact(path, model, model_card={"known_limitations": ["test"]},
                                options={}, evidence={}, exporter_version="0")
    for lazy in (False, True):
        with load_artifact(path, pin=pin, lazy=lazy) as a:
            assert a.pin == pin
            assert a.root_digest == hashlib.sha256(fx.manifest_bytes(path.read_bytes())).hexdigest()
            assert a.config["rms_norm_eps"] == "1e-06"
            np.testing.assert_array_equal(a.tensor("model.embed_tokens.weight"), ts[0].value)
            np.testing.assert_array_equal(a.tensor("model.layers.0.input_layernorm.weight"),
                                          ts[1].value)
            np.testing.assert_array_equal(a.tensor("model.layers.0.mlp.gate.weight"),
                                          ts[2].value.bits)
            for t in ts[3:]:
                pm = a.tensor(t.name)
                w = t.value
                want = (w.q.astype(np.float32)
                        * np.repeat(w.scales.astype(np.float32), w.block, axis=1)[:, :w.q.shape[1]])
                np.testing.assert_array_equal(kernels.dequantize(pm), want)
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    with pytest.raises(ArtifactError):
        load_artifact(bytes(data), pin=pin)
