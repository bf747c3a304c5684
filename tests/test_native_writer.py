# SPDX-License-Identifier: Apache-2.0
"""The C++ streaming artifact writer (csrc/artifact/writer.h, ``write_artifact(native=True)``)
against the Python writer, and the synthetic Qwen3-Coder-30B-A3B-shaped model of
benchmarks/synth_30b.py at its small CI shape: same bytes, determinism, atomicity, and the
runtime loading what it wrote."""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import fwassist
from fwassist import ArtifactError
from fwassist.artifact.model import BF16Array, ImportedModel, ModelTensor, PackedTensor
from fwassist.artifact.writer import write_artifact
from fwassist.export.synthetic import synthetic_config, synthetic_model

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "sdk" / "fwassist" / "models" / "tiny-coder.fwa"
sys.path.insert(0, str(ROOT / "benchmarks"))

import synth_30b  # noqa: E402

CARD = {"name": "test", "known_limitations": ["a test model"]}


def sha_file(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def from_artifact(path: Path) -> tuple[ImportedModel, dict[str, Any]]:
    """An artifact's model and write_artifact arguments, read back from its manifest and
    bytes: writing them again must give the same file."""
    art = fwassist.load_artifact(str(path))
    m = art.manifest
    tensors = []
    for t in m["tensors"]:
        raw = np.array(art.tensor_bytes(t["name"]), dtype=np.uint8)
        value: Any
        if t["dtype"] == "packed":
            q = t["quant"]
            value = PackedTensor(t["shape"][0], t["shape"][1], q["bits"], q["block"],
                                 q["zero_points"], q["scale"], lambda raw=raw: raw)
        elif t["dtype"] == "bf16":
            value = BF16Array(raw.view("<u2").reshape(t["shape"]))
        else:
            value = raw.view({"f32": "<f4", "f16": "<f2"}[t["dtype"]]).reshape(t["shape"])
        tensors.append(ModelTensor(t["name"], t["role"], t["layer"], t["expert"], value))
    art.close()
    prov = m["provenance"]
    model = ImportedModel(config=m["config"], tensors=tensors, tokenizer=m["tokenizer"],
                          source_name=prov["source"]["name"],
                          source_sha256=prov["source"]["sha256"],
                          notes=prov["importer_notes"], generation=m.get("generation"))
    kwargs = {"model_card": m["model_card"], "options": prov["exporter"]["options"],
              "evidence": m["evidence"], "exporter_version": prov["exporter"]["version"]}
    return model, kwargs


def test_native_rewrites_the_bundled_model_byte_for_byte(tmp_path: Path) -> None:
    """The shipped artifact (made by the Python writer at export) rewritten from its own
    contents by the C++ writer, and by the Python writer: both the same bytes and pin."""
    model, kwargs = from_artifact(BUNDLED)
    native = tmp_path / "native.fwa"
    py = tmp_path / "python.fwa"
    pin_n = write_artifact(native, model, native=True, **kwargs)
    pin_p = write_artifact(py, model, **kwargs)
    assert pin_n == pin_p
    assert native.read_bytes() == BUNDLED.read_bytes() == py.read_bytes()
    assert oct(native.stat().st_mode & 0o777) == oct(0o644)


@pytest.mark.parametrize("check", ["full", "lazy"])
def test_native_matches_python_on_a_synthetic_model(tmp_path: Path, check: str) -> None:
    """QuantizedWeight values (packed while writing) at 3 bits with 64 experts."""
    model = synthetic_model(synthetic_config(num_hidden_layers=2), bits=3, seed=5)
    args: dict[str, Any] = dict(model_card=CARD, options={"o": 1}, evidence={},
                                exporter_version="t")
    a, b = tmp_path / "a.fwa", tmp_path / "b.fwa"
    assert write_artifact(a, model, native=True, check=check, **args) == \
        write_artifact(b, model, **args)
    assert a.read_bytes() == b.read_bytes()
    fwassist.load_artifact(str(a)).close()    # every byte verified by the C++ reader


def _direct_io_supported(d: Path) -> bool:
    try:
        fd = os.open(d / "probe", os.O_CREAT | os.O_WRONLY | getattr(os, "O_DIRECT", 0))
    except OSError:
        return False
    os.close(fd)
    os.unlink(d / "probe")
    return hasattr(os, "O_DIRECT")


@pytest.mark.parametrize("direct_io", [True, False])
def test_native_writer_staging_places_every_byte(tmp_path: Path, direct_io: bool) -> None:
    """Tensors larger than and across the writer's 4 MiB staging buffers, gaps before, inside
    and after an expert block, a data region that is not a page multiple (the last page
    written O_DIRECT reaches past it): the file holds exactly the planned bytes, digests are
    hashlib's, and the data went O_DIRECT where the filesystem takes it."""
    from fwassist import _core
    rng = np.random.default_rng(3)
    data_offset = 8192
    # (offset, length, block) from data_offset; block 0 spans [4096, 4096 + 3 pages + 9 MiB)
    tensors = [(0, 1000, -1), (4096, (9 << 20) + 64, 0), (4096 + (9 << 20) + 128, 4032, 0),
               (4096 + (9 << 20) + 3 * 4096, (3 << 20) + 192, -1)]
    blocks = [(4096, (9 << 20) + 3 * 4096)]
    data_length = tensors[-1][0] + tensors[-1][1]
    assert data_length % 64 == 0 and data_length % 4096 != 0
    bufs = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for _, n, _ in tensors]
    head = rng.integers(0, 256, 300, dtype=np.uint8).tobytes()
    want = bytearray(data_offset + data_length)
    want[:len(head)] = head
    for (off, n, _), b in zip(tensors, bufs):
        want[data_offset + off:data_offset + off + n] = b
    probe = tmp_path / "probe-dir"
    probe.mkdir()
    supported = _direct_io_supported(probe)
    target = tmp_path / "m.fwa"
    w = _core.ArtifactWriter(str(target), data_offset, data_length, tensors, blocks,
                             direct_io=direct_io)
    for b in bufs:
        assert w.write_tensor(b) == hashlib.sha256(b).digest()
    boff, blen = blocks[0]
    assert w.block_digest(0) == hashlib.sha256(
        want[data_offset + boff:data_offset + boff + blen]).digest()
    w.finish(head)
    assert w.direct() == (direct_io and supported)
    w.publish()
    assert target.read_bytes() == want
    assert sorted(os.listdir(tmp_path)) == ["m.fwa", "probe-dir"]


def test_native_writer_failure_mid_write_leaves_nothing(tmp_path: Path) -> None:
    """A tensor whose producer fails halfway: no target, no temporary file; an existing
    target keeps its bytes."""
    c = synth_30b.config("smoke")
    model = synth_30b.model(c, 2)
    # an expert's up projection in the last layer: most of the file is written by then
    victim = next(i for i, t in enumerate(model.tensors)
                  if t.role == "expert_up" and t.layer == 1 and t.expert == 5)

    def boom() -> np.ndarray:
        raise OSError("disk pulled")

    t = model.tensors[victim]
    assert isinstance(t.value, PackedTensor)
    model.tensors[victim] = ModelTensor(t.name, t.role, t.layer, t.expert, PackedTensor(
        t.value.N, t.value.K, t.value.bits, t.value.block, t.value.has_zero, t.value.scale,
        boom))
    target = tmp_path / "m.fwa"
    with pytest.raises(OSError, match="disk pulled"):
        write_artifact(target, model, model_card=CARD, options={}, evidence={},
                       exporter_version="t", native=True, check="lazy")
    assert os.listdir(tmp_path) == []
    target.write_bytes(b"old")
    with pytest.raises(OSError, match="disk pulled"):
        write_artifact(target, model, model_card=CARD, options={}, evidence={},
                       exporter_version="t", native=True, check="lazy")
    assert os.listdir(tmp_path) == ["m.fwa"] and target.read_bytes() == b"old"


def test_native_writer_refuses_a_short_tensor(tmp_path: Path) -> None:
    c = synth_30b.config("smoke")
    model = synth_30b.model(c, 4)
    t = model.tensors[0]
    assert isinstance(t.value, PackedTensor)
    v = t.value
    model.tensors[0] = ModelTensor(t.name, t.role, t.layer, t.expert, PackedTensor(
        v.N, v.K, v.bits, v.block, v.has_zero, v.scale, lambda: np.zeros(10, np.uint8)))
    with pytest.raises(RuntimeError, match="10 bytes, planned"):
        write_artifact(tmp_path / "m.fwa", model, model_card=CARD, options={}, evidence={},
                       exporter_version="t", native=True)
    assert os.listdir(tmp_path) == []


def test_native_writer_reports_an_unwritable_directory(tmp_path: Path) -> None:
    model = synth_30b.model(synth_30b.config("smoke"), 4)
    with pytest.raises(OSError, match="cannot create a temporary file"):
        write_artifact(tmp_path / "no" / "such" / "m.fwa", model, model_card=CARD, options={},
                       evidence={}, exporter_version="t", native=True)


@pytest.mark.parametrize("bits", [4, 3, 2])
def test_synth_30b_smoke_is_deterministic_and_runs(tmp_path: Path, bits: int) -> None:
    """The benchmark's generator at the CI shape: two builds identical, the same bytes as the
    Python writer, and the runtime opens it (full and lazy verification) and decodes."""
    c = synth_30b.config("smoke")
    a, b, p = tmp_path / "a.fwa", tmp_path / "b.fwa", tmp_path / "p.fwa"
    pin = synth_30b.write_fwa(str(a), c, bits)
    assert synth_30b.write_fwa(str(b), c, bits) == pin
    assert synth_30b.write_fwa(str(p), c, bits, native=False, check="full") == pin
    assert a.read_bytes() == b.read_bytes() == p.read_bytes()
    assert synth_30b.write_fwa(str(b), c, bits, seed=synth_30b.SEED + 1) != pin
    art = fwassist.load_artifact(str(a), pin=pin)
    man = art.manifest
    art.close()
    assert man["config"]["num_experts"] == 8 and man["config"]["rope_theta"] == "10000000.0"
    assert {t["quant"]["bits"] for t in man["tensors"] if t["role"].startswith("expert")} \
        == {bits}
    for lazy in (False, True):
        m = fwassist.Model.load(str(a), pin=pin, lazy=lazy)
        s = m.session(max_context=64, mode="fast", threads=1)
        out = s.generate(prompt_ids=[1, 2, 3, 4], max_tokens=4, temperature=0.0)
        assert len(out.token_ids) == 4
        s.close()


def test_synth_30b_full_shape_plan() -> None:
    """The full shape is Qwen3-Coder-30B-A3B's: 30.5 B parameters."""
    c = synth_30b.config("full")
    model = synth_30b.model(c, 3)
    n = 0
    for t in model.tensors:
        v = t.value
        n += v.N * v.K if isinstance(v, PackedTensor) else int(np.asarray(v).size)
    assert 30.4e9 < n < 30.6e9
    assert len(model.tensors) == 2 + 1 + 48 * (4 + 4 + 1 + 3 * 128)


def test_our_4bit_codes_are_exactly_q4_0() -> None:
    """Our symmetric block-32 float16-scale 4-bit (and 8-bit) weights converted to Q4_0
    (Q8_0) bytes dequantize, by the gguf package, to exactly our dequantized values."""
    pytest.importorskip("gguf")
    assert synth_30b.check_q4_0() == 0.0


def test_corrupt_expert_block_is_refused_lazily(tmp_path: Path) -> None:
    """An expert block the writer hashed is checked on first use under lazy open."""
    c = synth_30b.config("smoke")
    p = tmp_path / "m.fwa"
    synth_30b.write_fwa(str(p), c, 2)
    art = fwassist.load_artifact(str(p))
    blk = art.manifest["expert_blocks"][3]
    data_offset = int.from_bytes(p.read_bytes()[24:32], "little")
    art.close()
    raw = bytearray(p.read_bytes())
    raw[data_offset + blk["offset"] + 100] ^= 1
    p.write_bytes(bytes(raw))
    lazy = fwassist.load_artifact(str(p), lazy=True)
    with pytest.raises(ArtifactError, match="digest"):
        lazy.verify_expert(blk["layer"], blk["expert"])
    with pytest.raises(ArtifactError):
        fwassist.load_artifact(str(p))
