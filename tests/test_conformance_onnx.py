"""ONNX graphs made by the real tools (tests/conformance/make_onnx.py: torch 2.13 CPU
torch.onnx dynamo export of transformers 4.57 / 5.25 Qwen3-MoE, onnxruntime 1.32's
MatMulNBitsQuantizer in QOperator and QDQ forms, Brevitas 0.13.4 export_onnx_qcdq) export to a
pinned artifact: exact-mode logits vs the tool's reference (onnxruntime, graph optimizations
disabled) <= 1e-4 relative, fast mode within the int8-activation bound of
test_runtime_vs_onnx, the same bytes twice. Needs neither torch nor transformers nor brevitas."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fwassist.export.model import QuantizedWeight
from fwassist.export.onnx_import import import_onnx
from fwassist.export.pipeline import export_onnx

FIXTURES = Path(__file__).parent / "conformance" / "fixtures" / "onnx"
CASES = sorted(p.name for p in FIXTURES.iterdir() if p.is_dir()) if FIXTURES.is_dir() else []


def _expected(name: str) -> tuple[dict, np.ndarray]:
    d = FIXTURES / name
    exp = json.loads((d / "expected.json").read_text())
    return exp, np.load(d / "expected_logits.npy").astype(np.float64)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("onnx")
    out = {}
    for name in CASES:
        p = d / f"{name}.fwa"
        export_onnx(str(FIXTURES / name / "model.onnx"), str(p), quiet=True)
        out[name] = p
    return out


def test_every_form_has_a_fixture():
    """The matrix in README.md: the tool-made forms this suite covers."""
    want = {"tf4_dynamo_float", "tf4_dynamo_ortq_qop_w4g32_asym_k48",
            "tf4_dynamo_ortq_qdq_w4g32_sym", "tf4_dynamo_ortq_qop_w8g32_sym",
            "tf4_dynamo_ortq_qop_w2g32_asym", "tf4_dynamo_ortq_qdq_w4g64_asym",
            "tf4_brevitas_qcdq_w3ch", "tf5_dynamo_float"}
    assert want <= set(CASES), sorted(want - set(CASES))


@pytest.mark.parametrize("name", CASES)
def test_exact_logits_match_the_tools_reference(name: str, exported: dict[str, Path]):
    from fwassist.runtime import Model

    exp, want = _expected(name)
    with Model.load(str(exported[name])).session(mode="exact") as s:
        got = s.logits(np.asarray(exp["probe"], np.int64)).astype(np.float64)
    rel = np.abs(got - want).max() / np.abs(want).max()
    print(f"\n[{name}] exact vs {exp['tool']}: max rel {rel:.2e}")
    assert rel <= 1e-4, f"{name}: exact-mode logits differ from the tool's by {rel:.2e}"


@pytest.mark.parametrize("name", CASES)
def test_quantized_forms_stay_quantized(name: str):
    m = import_onnx(FIXTURES / name / "model.onnx")
    bits = {t.value.bits for t in m.tensors if isinstance(t.value, QuantizedWeight)}
    if "_float" in name:
        assert not bits
    else:
        want = int(name.rsplit("_w", 1)[1][0])
        assert bits == {want}, f"{name}: quantized widths {bits}"


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
    the tool's reference, unless the documented int8 arithmetic itself (model_fixtures.
    FastOracle) cannot reach that on these tiny random models; then as well as that arithmetic
    (one tie of slack)."""
    from fwassist.export.reference import Reference
    from fwassist.runtime import Model
    from model_fixtures import FastOracle

    exp, want = _expected(name)
    ids = np.asarray(exp["probe"], np.int64)
    path = FIXTURES / name / "model.onnx"
    amb = Reference(import_onnx(path)).forward(ids).first_ambiguous
    k = ids.size if amb is None else amb
    if k == 0:
        pytest.skip("router near-tie at the first position")
    with Model.load(str(exported[name])).session(mode="fast") as s:
        fast = s.logits(ids).astype(np.float64)
    oracle = FastOracle(str(path)).forward(ids, tie_rel=0.0, round_eps=-1.0)[0]
    miss, kl = _miss_kl(fast[:k], want[:k])
    o_miss, o_kl = _miss_kl(oracle[:k], want[:k])
    allowed = max(int(np.floor(0.01 * k + 1e-9)), o_miss + 1)
    kl_bound = max(1e-3, 1.25 * o_kl + 1e-4)
    print(f"\n[{name}] fast: {k - miss}/{k} top-1, mean KL {kl:.2e} (int8 arithmetic: "
          f"{k - o_miss}/{k}, {o_kl:.2e})")
    assert miss <= allowed and kl < kl_bound


@pytest.mark.parametrize("name", CASES)
def test_export_is_deterministic(name: str, tmp_path: Path, exported: dict[str, Path]):
    again = tmp_path / "again.fwa"
    pin = export_onnx(str(FIXTURES / name / "model.onnx"), str(again), quiet=True)
    assert again.read_bytes() == exported[name].read_bytes()
    assert pin.startswith("sha256:")
