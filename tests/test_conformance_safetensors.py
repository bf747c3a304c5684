# SPDX-License-Identifier: Apache-2.0
"""Safetensors checkpoints made by the real tools (tests/conformance/make_compressed_tensors.py
and make_torchao.py: transformers 5.25, compressed-tensors 0.20.1, torchao 0.18, torch 2.13
CPU) export to a pinned artifact: exact-mode logits vs the tool's reference <= 1e-4 relative,
codes and dequantized weights equal to the tool's own, the same bytes twice. Plus the refusals: pickle files, malformed safetensors,
layouts and schemes the importer cannot store exactly."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fwassist.export.compressed_tensors import unpack_rows
from fwassist.export.hf_checkpoint import import_checkpoint
from fwassist.export.model import QuantizedWeight
from fwassist.export.pipeline import export_onnx
from fwassist.export.reference import dequantize
from fwassist.export.safetensors_io import Checkpoint, CheckpointError, SafetensorsFile

FIXTURES = Path(__file__).parent / "conformance" / "fixtures" / "safetensors"
CASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir())


def _expected(d: Path) -> tuple[dict, np.ndarray]:
    exp = json.loads((d / "expected.json").read_text())
    return exp, np.load(d / "expected_logits.npy").astype(np.float64)


# ---------------------------------------------------------------------------------------
# safetensors writing helpers (tests only)

_NP = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "I32": "<i4", "I64": "<i8", "U16": "<u2",
       "I8": "i1"}


def write_safetensors(path: Path, tensors: dict[str, tuple[str, np.ndarray]],
                      metadata: dict[str, str] | None = None) -> None:
    header: dict = {"__metadata__": metadata} if metadata else {}
    blobs, off = [], 0
    for name, (dt, arr) in tensors.items():
        b = np.ascontiguousarray(arr).astype(_NP[dt]).tobytes()
        header[name] = {"dtype": dt, "shape": list(arr.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def read_all(d: Path) -> dict[str, tuple[str, np.ndarray]]:
    ck = Checkpoint(str(d))
    return {n: (ck.info(n).dtype, ck.read(n)) for n in ck.names()}


def copy_fixture(name: str, dst: Path) -> Path:
    out = dst / name
    shutil.copytree(FIXTURES / name, out)
    return out


def pack_rows(vals: np.ndarray, bits: int, dense: bool) -> np.ndarray:
    """Unsigned values [rows, n] -> int32 words (the two compressed-tensors layouts)."""
    rows, n = vals.shape
    v = vals.astype(np.int64)
    if dense:
        words = -(-n * bits // 32)
        out = np.zeros((rows, words + 1), np.int64)
        for j in range(n):
            s = j * bits
            out[:, s // 32] |= (v[:, j] << (s % 32)) & 0xFFFFFFFF
            out[:, s // 32 + 1] |= v[:, j] >> (32 - s % 32) if s % 32 + bits > 32 else 0
        out = out[:, :words]
    else:
        per = 32 // bits
        words = -(-n // per)
        out = np.zeros((rows, words), np.int64)
        for j in range(n):
            out[:, j // per] |= v[:, j] << ((j % per) * bits)
    return out.astype(np.uint32).view(np.int32)


# ---------------------------------------------------------------------------------------
# the fixtures, end to end


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("st")
    out = {}
    for name in CASES:
        p = d / f"{name}.fwa"
        export_onnx(str(FIXTURES / name), str(p), quiet=True)
        out[name] = p
    return out


@pytest.mark.parametrize("name", CASES)
def test_exact_logits_match_the_tools_reference(name: str, exported: dict[str, Path]):
    from fwassist.runtime import Model

    exp, want = _expected(FIXTURES / name)
    m = Model.load(str(exported[name]))
    with m.session(mode="exact") as s:
        got = s.logits(np.asarray(exp["probe"], np.int64)).astype(np.float64)
    rel = np.abs(got - want).max() / np.abs(want).max()
    print(f"\n[{name}] exact vs {exp['tool']}: max rel {rel:.2e}")
    assert rel <= 1e-4, f"{name}: exact-mode logits differ from the tool's by {rel:.2e}"


def _fast_oracle(model):
    """model_fixtures.FastOracle (the fast mode's documented int8 arithmetic) over an imported
    checkpoint instead of an ONNX file."""
    from fwassist.export.mapping import is_moe_layer
    from model_fixtures import FastOracle

    o = FastOracle.__new__(FastOracle)
    o.c = model.config
    o.moe = [is_moe_layer(o.c, i) for i in range(o.c["num_hidden_layers"])]
    o.w = {(t.role, t.layer, t.expert): (t.value if isinstance(t.value, QuantizedWeight)
                                         else dequantize(t.value).astype(np.float64))
           for t in model.tensors}
    o.w.setdefault(("lm_head", None, None), o.w[("embed", None, None)])
    return o


def _miss_kl(got: np.ndarray, want: np.ndarray) -> tuple[int, float]:
    def ls(x):
        x = x - x.max(axis=1, keepdims=True)
        return x - np.log(np.exp(x).sum(axis=1, keepdims=True))

    lp, lq = ls(want), ls(got)
    return (int(np.sum(got.argmax(1) != want.argmax(1))),
            float(np.mean(np.sum(np.exp(lp) * (lp - lq), axis=1))))


@pytest.mark.parametrize("name", CASES)
def test_fast_logits_within_the_int8_activation_bound(name: str, exported: dict[str, Path]):
    """The bound of test_runtime_vs_onnx: top-1 agreement >= 99 % and mean KL < 1e-3 against
    the tool's reference, unless the documented int8 arithmetic itself cannot reach that on
    these tiny random models; then as well as that arithmetic (one tie of slack)."""
    from fwassist.export.reference import Reference
    from fwassist.runtime import Model

    exp, want = _expected(FIXTURES / name)
    ids = np.asarray(exp["probe"], np.int64)
    model = import_checkpoint(str(FIXTURES / name))
    amb = Reference(model).forward(ids).first_ambiguous
    k = ids.size if amb is None else amb
    # The committed fixtures have none (a tie at position 0 would leave nothing to compare):
    # a regenerated fixture that has one must take another seed.
    assert k > 0, f"{name}: router near-tie at the first probe position"
    with Model.load(str(exported[name])).session(mode="fast") as s:
        fast = s.logits(ids).astype(np.float64)
    oracle = _fast_oracle(model).forward(ids, tie_rel=0.0, round_eps=-1.0)[0]
    miss, kl = _miss_kl(fast[:k], want[:k])
    o_miss, o_kl = _miss_kl(oracle[:k], want[:k])
    allowed = max(int(np.floor(0.01 * k + 1e-9)), o_miss + 1)
    kl_bound = max(1e-3, 1.25 * o_kl + 1e-4)
    print(f"\n[{name}] fast: {k - miss}/{k} top-1, mean KL {kl:.2e} (int8 arithmetic: "
          f"{k - o_miss}/{k}, {o_kl:.2e})")
    assert miss <= allowed and kl < kl_bound


@pytest.mark.parametrize("name", CASES)
def test_codes_and_weights_equal_compressed_tensors_own(name: str):
    exp, _ = _expected(FIXTURES / name)
    m = import_checkpoint(str(FIXTURES / name))
    got = {t.name[: -len(".weight")]: hashlib.sha256(t.value.q.astype(np.int8).tobytes())
           .hexdigest() for t in m.tensors if isinstance(t.value, QuantizedWeight)}
    assert got == exp["codes_sha256"]
    deq = {t.name[: -len(".weight")]: hashlib.sha256(dequantize(t.value).tobytes()).hexdigest()
           for t in m.tensors if isinstance(t.value, QuantizedWeight)}
    assert deq == exp["dequantized_sha256"], "dequantized weights differ from the tool's"
    if not name.startswith("float_"):
        assert got, "a quantized fixture without quantized weights"


@pytest.mark.parametrize("name", CASES)
def test_evidence_names_the_reference(name: str, exported: dict[str, Path]):
    raw = exported[name].read_bytes()
    n = struct.unpack_from("<Q", raw, 16)[0]
    man = json.loads(raw[128:128 + n])
    ev = man["evidence"]
    assert ev["measured"] is True
    assert "dequantized in float32" in ev["oracle"] and "onnxruntime" in ev["oracle"]
    for p in ev["probes"]:
        if p["tokens"] > p["excluded_router_ties"]:
            assert float(p["runtime_exact_max_rel_error"]) <= 1e-4


def test_export_is_deterministic(tmp_path: Path, exported: dict[str, Path]):
    """Exported twice (the second time named with a trailing separator): the same bytes."""
    name = "ct_w3g32_asym_sharded"
    again = tmp_path / "again.fwa"
    pin = export_onnx(str(FIXTURES / name) + os.sep, str(again), quiet=True)
    assert again.read_bytes() == exported[name].read_bytes()
    assert pin.startswith("sha256:")


# ---------------------------------------------------------------------------------------
# layouts


def test_fused_experts_in_either_orientation_give_the_same_model(tmp_path: Path):
    src = copy_fixture("float_f16_fused3d", tmp_path)
    base = import_checkpoint(str(src))
    t = read_all(src)
    for n, (dt, a) in list(t.items()):
        if n.endswith(("experts.gate_up_proj", "experts.down_proj")):
            t[n] = (dt, np.ascontiguousarray(a.transpose(0, 2, 1)))
    write_safetensors(src / "model.safetensors", t)
    flipped = import_checkpoint(str(src))
    assert [x.name for x in base.tensors] == [x.name for x in flipped.tensors]
    for a, b in zip(base.tensors, flipped.tensors):
        assert np.array_equal(a.value, b.value), a.name
    assert any("transposed" in n for n in flipped.notes)


def test_fused_and_per_expert_layouts_agree(tmp_path: Path):
    src = copy_fixture("float_f16_fused3d", tmp_path)
    fused = import_checkpoint(str(src))
    t = read_all(src)
    I = 24
    for n in [n for n in t if n.endswith("experts.gate_up_proj")]:
        dt, a = t.pop(n)
        for e in range(a.shape[0]):
            t[n.replace("gate_up_proj", f"{e}.gate_proj.weight")] = (dt, a[e, :I])
            t[n.replace("gate_up_proj", f"{e}.up_proj.weight")] = (dt, a[e, I:])
    for n in [n for n in t if n.endswith("experts.down_proj")]:
        dt, a = t.pop(n)
        for e in range(a.shape[0]):
            t[n.replace("down_proj", f"{e}.down_proj.weight")] = (dt, a[e])
    write_safetensors(src / "model.safetensors", t)
    split = import_checkpoint(str(src))
    for a, b in zip(fused.tensors, split.tensors):
        assert a.name == b.name and np.array_equal(a.value, b.value)


def test_3bit_32_per_word_layout_of_compressed_tensors_0_17(tmp_path: Path):
    """compressed-tensors 0.17 put 10 3-bit values in a word (top 2 bits zero); 0.18+ packs
    densely. The same codes in the old layout, with the old version recorded, import to the
    same weights; a layout that contradicts the recorded version is refused."""
    name = "ct_w3g32_asym_sharded"
    src = copy_fixture(name, tmp_path)
    base = import_checkpoint(str(src))
    ck = Checkpoint(str(src))
    shards: dict[str, dict] = {}
    for n in ck.names():
        f = ck.where[n].label
        dt, a = ck.info(n).dtype, ck.read(n)
        if n.endswith("weight_packed"):
            K = int(ck.read(n.replace("weight_packed", "weight_shape"))[1])
            vals = unpack_rows(a, K, 3, True, n)
            a = pack_rows(vals, 3, dense=False)
        elif n.endswith("weight_zero_point"):
            N = int(ck.read(n.replace("weight_zero_point", "weight_shape"))[0])
            vals = unpack_rows(np.ascontiguousarray(a.T), N, 3, True, n)
            a = np.ascontiguousarray(pack_rows(vals, 3, dense=False).T)
        shards.setdefault(f, {})[n] = (dt, a)
    for f, t in shards.items():
        write_safetensors(src / f, t)
    idx = json.loads((src / "model.safetensors.index.json").read_text())
    cfg = json.loads((src / "config.json").read_text())
    with pytest.raises(CheckpointError, match="compressed-tensors 0.20.1 writes the dense"):
        import_checkpoint(str(src))
    cfg["quantization_config"]["version"] = "0.17.1"
    (src / "config.json").write_text(json.dumps(cfg))
    old = import_checkpoint(str(src))
    for a, b in zip(base.tensors, old.tensors):
        assert a.name == b.name
        if isinstance(a.value, QuantizedWeight):
            assert np.array_equal(a.value.q, b.value.q)
            assert np.array_equal(a.value.zero_points, b.value.zero_points)
    assert any("32//bits-per-word" in n for n in old.notes)
    assert idx["weight_map"]


def test_nonzero_padding_bits_are_refused(tmp_path: Path):
    src = copy_fixture("ct_w2ch_sym_k36", tmp_path)
    t = read_all(src)
    n = "model.layers.0.mlp.experts.0.down_proj.weight_packed"
    dt, a = t[n]
    a = a.copy()
    a[0, -1] |= np.int32(1 << 30)    # K = 36 at 2 bits: 72 bits, the last word uses 8
    t[n] = (dt, a)
    write_safetensors(src / "model.safetensors", t)
    with pytest.raises(CheckpointError, match="padding bits"):
        import_checkpoint(str(src))


# ---------------------------------------------------------------------------------------
# schemes refused by name


def _edit_config(src: Path, fn) -> None:
    cfg = json.loads((src / "config.json").read_text())
    fn(cfg["quantization_config"])
    (src / "config.json").write_text(json.dumps(cfg))


def test_activation_reordering_applied_exactly_or_refused(tmp_path: Path):
    """weight_g_idx (activation reordering) maps each input column to its group: applied
    exactly when every stored 32-wide block then has one scale, refused by name otherwise."""
    src = copy_fixture("ct_w4g32_sym_mixed", tmp_path)
    n = "model.layers.0.mlp.experts.1.gate_proj"
    t = read_all(src)
    t[n + ".weight_g_idx"] = ("I32", np.zeros(32, np.int32))
    write_safetensors(src / "model.safetensors", t)
    m = import_checkpoint(str(src))
    assert any("identity grouping" in x for x in m.notes)
    # group 16: two scale columns per expert row (equal, so every 32-block has one scale)
    _edit_config(src, lambda q: q["config_groups"]["group_1"]["weights"].update(group_size=16))
    for k in [k for k in t if k.endswith("weight_scale") and ".experts." in k]:
        t[k] = ("F32", np.repeat(t[k][1], 2, axis=1))
    t[n + ".weight_g_idx"] = ("I32", np.arange(32, dtype=np.int32) % 2)
    write_safetensors(src / "model.safetensors", t)
    m = import_checkpoint(str(src))
    assert any("activation reordering) applied exactly" in x for x in m.notes)
    s = t[n + ".weight_scale"][1].copy()
    s[:, 1] *= 2                         # interleaved groups with different scales
    t[n + ".weight_scale"] = ("F32", s)
    write_safetensors(src / "model.safetensors", t)
    with pytest.raises(CheckpointError, match=r"weight_g_idx.*cannot be stored exactly"):
        import_checkpoint(str(src))


@pytest.mark.parametrize("edit,match", [
    (lambda q: q.update(format="float-quantized"), "format 'float-quantized'"),
    (lambda q: (q.update(format="mixed-precision"),
                q["config_groups"]["group_0"].update(format="float-quantized")),
     "group_0: format 'float-quantized'"),
    (lambda q: q.update(quant_method="gptq"), "quant_method 'gptq'"),
    (lambda q: q["config_groups"]["group_1"].update(
        input_activations={"num_bits": 8, "type": "int"}), "input_activations"),
    (lambda q: q["config_groups"]["group_1"]["weights"].update(num_bits=5), "num_bits 5"),
    (lambda q: q["config_groups"]["group_1"]["weights"].update(type="float"), "weights.type"),
    (lambda q: q["config_groups"]["group_1"].update(targets=["re:nothing"]),
     "no config group targets"),
])
def test_unsupported_schemes_are_refused_by_name(tmp_path: Path, edit, match):
    src = copy_fixture("ct_w4g32_sym_mixed", tmp_path)
    _edit_config(src, edit)
    with pytest.raises(CheckpointError, match=match):
        import_checkpoint(str(src))


# ---------------------------------------------------------------------------------------
# files


def test_pickle_checkpoints_are_refused_never_opened(tmp_path: Path):
    d = tmp_path / "pkl"
    d.mkdir()
    (d / "config.json").write_text((FIXTURES / "ct_w4g32_sym_mixed" / "config.json").read_text())
    # an unreadable file: any attempt to open or unpickle it would fail differently
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04not a pickle")
    os.chmod(d / "pytorch_model.bin", 0)
    with pytest.raises(CheckpointError, match="pickle files are refused and never unpickled"):
        import_checkpoint(str(d))
    (d / "card.json").write_text(json.dumps({"known_limitations": ["x"]}))
    r = subprocess.run([sys.executable, "-m", "fwassist", "export", "-q", str(d), "-o",
                        str(tmp_path / "o.fwa")], capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "pickle files are refused" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o.fwa").exists()


def _raw(header: bytes, data: bytes = b"") -> bytes:
    return struct.pack("<Q", len(header)) + header + data


@pytest.mark.parametrize("blob,match", [
    (b"\x10\x00", "shorter than the 8-byte header length"),
    (struct.pack("<Q", 1 << 40), "header length"),
    (struct.pack("<Q", 64) + b"{}", "runs past the end"),
    (_raw(b"[1]"), "not a JSON object"),
    (_raw(b"{\"a\": 1, \"a\": 2}"), "not valid JSON"),
    (_raw(b"[" * 200000 + b"]" * 200000), "not valid JSON"),
    (_raw(b"{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}}", b"\0" * 8),
     "needs 8 bytes"),
    (_raw(b"{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", b"\0" * 4),
     "run past the data region"),
    (_raw(b"{\"w\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, "
          b"\"v\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [2, 6]}}", b"\0" * 8),
     "overlap"),
    (_raw(b"{\"w\": {\"dtype\": \"X9\", \"shape\": [1], \"data_offsets\": [0, 4]}}", b"\0" * 4),
     "unknown dtype"),
    (_raw(b"{\"w\": {\"dtype\": \"F32\", \"shape\": [-1], \"data_offsets\": [0, 4]}}", b"\0" * 4),
     "non-negative"),
])
def test_malformed_safetensors_are_refused(tmp_path: Path, blob: bytes, match: str):
    p = tmp_path / "model.safetensors"
    p.write_bytes(blob)
    with pytest.raises(CheckpointError, match=match):
        SafetensorsFile(str(p))


def test_shard_names_must_stay_in_the_directory(tmp_path: Path):
    src = copy_fixture("ct_w3g32_asym_sharded", tmp_path)
    idx = json.loads((src / "model.safetensors.index.json").read_text())
    k = next(iter(idx["weight_map"]))
    idx["weight_map"][k] = "../model-00001-of-00002.safetensors"
    (src / "model.safetensors.index.json").write_text(json.dumps(idx))
    with pytest.raises(CheckpointError, match="not a plain file name"):
        import_checkpoint(str(src))


def test_3bit_size_that_fits_both_layouts_needs_the_version(tmp_path: Path):
    """K = 36 at 3 bits is 4 words in both layouts: without the writer's version the codes
    cannot be read unambiguously, so the import is refused."""
    src = copy_fixture("ct_w3ch_asym_k36", tmp_path)
    _edit_config(src, lambda q: q.pop("version"))
    with pytest.raises(CheckpointError, match="records no version"):
        import_checkpoint(str(src))


_BLOCK = ("import sys\n"
          "for m in ('onnx', 'onnxruntime', 'torch', 'safetensors'):\n"
          "    sys.modules[m] = None\n"
          "from fwassist.cli import main\n"
          "sys.exit(main(sys.argv[1:]))\n")


def test_safetensors_export_needs_neither_onnx_nor_torch(tmp_path: Path):
    out = tmp_path / "m.fwa"
    r = subprocess.run([sys.executable, "-c", _BLOCK, "export", "-q",
                        str(FIXTURES / "ct_w4g32_sym_mixed"), "-o", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.exists() and r.stdout.startswith("sha256:")


def test_onnx_export_without_onnx_says_what_to_install(tmp_path: Path):
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07")
    (tmp_path / "card.json").write_text(json.dumps({"known_limitations": ["x"]}))
    (tmp_path / "config.json").write_text(
        (FIXTURES / "ct_w4g32_sym_mixed" / "config.json").read_text())
    r = subprocess.run([sys.executable, "-c", _BLOCK, "export", "-q",
                        str(tmp_path / "model.onnx"), "-o", str(tmp_path / "o.fwa")],
                       capture_output=True, text=True)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "pip install 'fwassist[export]'" in lines[0], r.stderr


def test_group_wider_than_the_row_is_one_short_group(tmp_path: Path):
    """compressed-tensors <= 0.19 accepted K < group_size (one group of K columns; 0.20 refuses
    it): the same scales as the channel-wise fixture, so the same weights."""
    src = copy_fixture("ct_w3ch_asym_k36", tmp_path)
    base = import_checkpoint(str(src))
    _edit_config(src, lambda q: q["config_groups"]["group_0"]["weights"].update(
        strategy="group", group_size=128))
    grouped = import_checkpoint(str(src))
    for a, b in zip(base.tensors, grouped.tensors):
        assert a.name == b.name
        if isinstance(a.value, QuantizedWeight):
            assert np.array_equal(a.value.q, b.value.q)
            assert np.array_equal(a.value.scales, b.value.scales)
            assert np.array_equal(a.value.zero_points, b.value.zero_points)


def test_tensors_without_a_role_are_refused_by_name(tmp_path: Path):
    src = copy_fixture("float_bf16_per_expert", tmp_path)
    t = read_all(src)
    t["model.layers.0.self_attn.q_proj.bias"] = ("F32", np.zeros(32, np.float32))
    write_safetensors(src / "model.safetensors", t)
    with pytest.raises(CheckpointError, match=r"q_proj.bias.*no role for 'bias'"):
        import_checkpoint(str(src))
    del t["model.layers.0.self_attn.q_proj.bias"]
    del t["model.layers.1.mlp.experts.2.up_proj.weight"]
    write_safetensors(src / "model.safetensors", t)
    with pytest.raises(CheckpointError, match="missing expert_up of layer 1, expert 2"):
        import_checkpoint(str(src))


def test_unpacked_zero_points_of_older_checkpoints(tmp_path: Path):
    """Before zero points were packed, group/channel checkpoints stored them as plain integers
    of the scale's shape: the same weights."""
    src = copy_fixture("ct_w3ch_asym_k36", tmp_path)
    base = import_checkpoint(str(src))
    t = read_all(src)
    for n in [n for n in t if n.endswith("weight_zero_point")]:
        N = int(t[n.replace("weight_zero_point", "weight_shape")][1][0])
        vals = unpack_rows(np.ascontiguousarray(t[n][1].T), N, 3, True, n).T - 4
        t[n] = ("I8", vals.astype(np.int8))
    write_safetensors(src / "model.safetensors", t)
    plain = import_checkpoint(str(src))
    for a, b in zip(base.tensors, plain.tensors):
        if isinstance(a.value, QuantizedWeight):
            assert np.array_equal(a.value.zero_points, b.value.zero_points)
            assert np.array_equal(a.value.q, b.value.q)


@pytest.mark.parametrize("strategy", ["block", "tensor"])
def test_block_and_tensor_strategies(tmp_path: Path, strategy: str):
    """The attention group of the mixed fixture re-declared as block [2, 32] (one scale per two
    rows) or tensor (one scale): the codes stay, the scales are the declared ones replicated."""
    src = copy_fixture("ct_w4g32_sym_mixed", tmp_path)
    w = {"strategy": strategy}
    if strategy == "block":
        w["block_structure"] = [2, 32]
    _edit_config(src, lambda q: q["config_groups"]["group_0"]["weights"].update(w))
    base = import_checkpoint(str(FIXTURES / "ct_w4g32_sym_mixed"))
    t = read_all(src)
    declared = {}
    for n in [n for n in t if "self_attn" in n and n.endswith("weight_scale")]:
        s = t[n][1]
        s2 = s[::2] if strategy == "block" else s[:1, 0]
        t[n] = ("F32", np.ascontiguousarray(s2))
        declared[n.replace(".weight_scale", ".weight")] = (
            np.repeat(s[::2], 2, axis=0) if strategy == "block" else np.full_like(s, s[0, 0]))
    write_safetensors(src / "model.safetensors", t)
    m = import_checkpoint(str(src))
    checked = 0
    for a, b in zip(base.tensors, m.tensors):
        if a.name in declared:
            assert np.array_equal(a.value.q, b.value.q)
            assert np.array_equal(b.value.scales.astype(np.float32)[:, :1], declared[a.name])
            checked += 1
    assert checked == 8


def test_mixed_precision_of_pack_quantized_groups(tmp_path: Path):
    src = copy_fixture("ct_w4g32_sym_mixed", tmp_path)
    _edit_config(src, lambda q: q.update(format="mixed-precision"))
    m = import_checkpoint(str(src))
    assert sum(isinstance(t.value, QuantizedWeight) for t in m.tensors) == 32


def test_symlinked_weights_are_refused(tmp_path: Path):
    src = copy_fixture("float_bf16_per_expert", tmp_path)
    (src / "model.safetensors").rename(tmp_path / "elsewhere.safetensors")
    (src / "model.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    with pytest.raises(CheckpointError, match="symbolic link"):
        import_checkpoint(str(src))


Q = "model.layers.0.self_attn.q_proj"


@pytest.mark.parametrize("edit,match", [
    (lambda d: d.update(_type="Int4Tensor"), "torchao tensor type 'Int4Tensor' is not supported"),
    (lambda d: d["_data"].update(activation_quantization="int8_asym_per_token"),
     "activation_quantization"),
    (lambda d: d["_data"].update(target_dtype={"_type": "torch.dtype", "_data": "int5"}),
     "target_dtype int5"),
    (lambda d: d["_data"].update(block_size=[1, 5]), "does not divide"),
])
def test_torchao_forms_refused_by_name(tmp_path: Path, edit, match):
    src = copy_fixture("torchao_w4g32_sym", tmp_path)
    f = SafetensorsFile(str(src / "model.safetensors"))
    meta = dict(f.metadata)
    d = json.loads(meta[Q + ".weight"])
    edit(d)
    meta[Q + ".weight"] = json.dumps(d)
    write_safetensors(src / "model.safetensors", read_all(src), meta)
    with pytest.raises(ValueError, match=match):
        import_checkpoint(str(src))


def test_torchao_float_zero_points_must_be_integers(tmp_path: Path):
    src = copy_fixture("torchao_w4g32_sym", tmp_path)
    meta = SafetensorsFile(str(src / "model.safetensors")).metadata
    t = read_all(src)
    z = t[Q + "._weight_zero_point"][1].astype(np.float32)
    t[Q + "._weight_zero_point"] = ("F32", z)
    write_safetensors(src / "model.safetensors", t, meta)
    import_checkpoint(str(src))                  # integral float zero points: the same
    z[0, 0] = 0.5
    t[Q + "._weight_zero_point"] = ("F32", z)
    write_safetensors(src / "model.safetensors", t, meta)
    with pytest.raises(CheckpointError, match="not integers"):
        import_checkpoint(str(src))
