# SPDX-License-Identifier: Apache-2.0
"""Builds the ONNX conformance fixtures with the real tools (not needed to run the tests).

Pinned: torch 2.13.0 (CPU), transformers 4.57.6 or 5.25.0, onnx 1.23.2, onnxruntime 1.32.0
(its quantizer ``onnxruntime.quantization.matmul_nbits_quantizer.MatMulNBitsQuantizer``),
onnxscript 0.7.2, onnx-ir 1.1.0, brevitas 0.13.4 (+ onnxoptimizer) and optimum-onnx 0.1.0
(optimum 2.1.0; it requires transformers < 4.58) beside transformers 4.57.6, torchao 0.18.0
beside 5.25.0. Install them in a scratch virtualenv (``pip install torch==2.13.0`` takes the
CPU wheel; never a CUDA build) and run ``python tests/conformance/make_onnx.py`` once under
transformers 4.57.6 and once under 5.25.0; each run writes the fixtures its transformers line
can make. The runs are deterministic: a rerun writes the committed files byte for byte.

Each fixture is a small random Qwen3-MoE (2 layers, 4 experts top-2, hidden 32 to 64) exported by
``torch.onnx.export(dynamo=True)`` with a dynamic sequence axis, then, where named, quantized:

* ``tf4_*``: transformers 4.57 (per-expert ``nn.Linear`` experts). Its expert loop iterates over
  ``nonzero()`` of the routing mask, which no exporter can trace (data-dependent length), so the
  sparse MoE block's forward is replaced by the usual export form: every expert runs and its
  output is multiplied by its column of the dense routing weights (same numbers).
* ``tf5_*``: transformers 5.25 with ``experts_implementation="batched_mm"``: fused 3-D experts
  read through GatherND and multiplied by MatMul, as transformers itself exports them.
* ``*_ortq_{qop,qdq}_*``: onnxruntime's ``MatMulNBitsQuantizer`` (QOperator: MatMulNBits;
  QDQ: DequantizeLinear -> MatMul) over every MatMul with a constant 2-D weight.
* ``*_brevitas_qcdq_*``: Brevitas 0.13.4 ``QuantLinear`` layers replacing the linear layers,
  ``export_onnx_qcdq(dynamo=True)`` (QuantizeLinear -> Clip -> DequantizeLinear);
  ``*_brevitas_qonnx_*``: the same through ``export_qonnx`` (qonnx ``Quant`` nodes);
* ``*_torchscript_*``: ``torch.onnx.export(dynamo=False)``; under transformers 5.25 the fused
  3-D experts are read by ``Gather`` and the gate/up product is cut by two ``Slice`` nodes;
* ``*_optimum_*``: optimum-onnx's exporter (``optimum-cli export onnx``'s task for a causal LM,
  text-generation-with-past, with its own patched Qwen3-MoE block), under transformers 4.57.6;
* ``tf5_torchao_*``: torchao's QAT (prepare, convert) over per-expert ``nn.Linear`` experts,
  exported by ``torch.onnx.export(dynamo=True)``, whose optimizer folds torchao's
  dequantization into float32 initializers (the weights arrive as float).

Beside each fixture, ``expected.json`` names the tool and the probe ids, and
``expected_logits.npy`` holds the tool's own reference: onnxruntime 1.32.0 with graph
optimizations disabled (ORT_DISABLE_ALL) on the final graph, or, for QONNX (which onnxruntime
cannot run), Brevitas' own forward (weights fake-quantized in float32). The exporters' debugging
node metadata is dropped (see strip_debug_metadata); nothing else is changed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys

import numpy as np
import onnx
import onnxruntime as ort
import torch
import transformers

PINS = {"torch": "2.13.0", "transformers": ("4.57.6", "5.25.0"), "onnx": "1.23.2",
        "onnxruntime": "1.32.0", "optimum-onnx": "0.1.0", "torchao": "0.18.0"}
TF4 = transformers.__version__.startswith("4.")
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "onnx")
PROBE = [3, 17, 42, 5, 60, 11, 29, 8, 51, 33, 2, 47, 19, 38, 24, 14]


def check_pins() -> None:
    got = {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
           "onnx": onnx.__version__, "onnxruntime": ort.__version__}
    if (got["torch"], got["onnx"], got["onnxruntime"]) != (
            PINS["torch"], PINS["onnx"], PINS["onnxruntime"]) \
            or got["transformers"] not in PINS["transformers"]:
        sys.exit(f"pinned versions {PINS}, found {got}")


SUFFIX = ""   # appended to the fixture names by --variants

# The model's other dimensions: the committed fixtures use these; --variants others.
SIZE = {"layers": 2, "experts": 4, "top_k": 2, "moe_inter": 32, "mlp_only": [], "heads": 2,
        "kv_heads": 1, "norm_topk": True, "sparse_step": 1}


def config(tie: bool = False, hidden: int = 64):
    from transformers import Qwen3MoeConfig

    return Qwen3MoeConfig(vocab_size=64, hidden_size=hidden, intermediate_size=64,
                          moe_intermediate_size=SIZE["moe_inter"],
                          num_hidden_layers=SIZE["layers"], num_attention_heads=SIZE["heads"],
                          num_key_value_heads=SIZE["kv_heads"], head_dim=hidden // 2,
                          num_experts=SIZE["experts"], num_experts_per_tok=SIZE["top_k"],
                          mlp_only_layers=SIZE["mlp_only"],
                          decoder_sparse_step=SIZE["sparse_step"],
                          norm_topk_prob=SIZE["norm_topk"],
                          tie_word_embeddings=tie, max_position_embeddings=64,
                          rope_theta=10000.0)


def _dense_moe_forward(self, hidden_states):
    """transformers 4.57's Qwen3MoeSparseMoeBlock.forward without the data-dependent loop."""
    import torch.nn.functional as F

    b, t, h = hidden_states.shape
    router_logits = self.gate(hidden_states.view(-1, h))
    rw = F.softmax(router_logits, dim=1, dtype=torch.float)
    rw, sel = torch.topk(rw, self.top_k, dim=-1)
    if self.norm_topk_prob:
        rw = rw / rw.sum(dim=-1, keepdim=True)
    full = torch.zeros_like(router_logits).scatter(1, sel, rw.to(hidden_states.dtype))
    full = full.view(b, t, -1)
    out = torch.zeros_like(hidden_states)
    for e in range(self.num_experts):
        out = out + self.experts[e](hidden_states) * full[:, :, e:e + 1]
    return out, router_logits


def make_model(seed: int, tie: bool = False, hidden: int = 64):
    from transformers import Qwen3MoeForCausalLM

    cfg = config(tie, hidden)
    if TF4:
        import transformers.models.qwen3_moe.modeling_qwen3_moe as qm

        qm.Qwen3MoeSparseMoeBlock.forward = _dense_moe_forward
        m = Qwen3MoeForCausalLM(cfg)
    else:
        m = Qwen3MoeForCausalLM._from_config(cfg, experts_implementation="batched_mm")
    torch.manual_seed(seed)
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "norm" in n:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / p.shape[-1] ** 0.5)
    return m.eval(), cfg


class LinearExperts(torch.nn.ModuleList):
    """transformers 5.x fused experts as per-expert ``nn.Linear`` modules (named
    ``experts.N.{gate,up,down}_proj``, for tools that quantize only ``nn.Linear``: torchao),
    with the 5.x experts interface and the export form of ``_dense_moe_forward``: every expert
    runs and its output is multiplied by its column of the dense routing weights."""

    def __init__(self, experts) -> None:
        import torch.nn.functional as F

        super().__init__()
        I = experts.gate_up_proj.shape[1] // 2
        for gu, dn in zip(experts.gate_up_proj.detach(), experts.down_proj.detach()):
            e = torch.nn.Module()
            for name, w in (("gate_proj", gu[:I]), ("up_proj", gu[I:]), ("down_proj", dn)):
                lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False)
                with torch.no_grad():
                    lin.weight.copy_(w)
                setattr(e, name, lin)
            self.append(e)
        self.act = F.silu

    def forward(self, hidden_states, top_k_index, top_k_weights):
        full = torch.zeros(hidden_states.shape[0], len(self), dtype=hidden_states.dtype)
        full = full.scatter(1, top_k_index, top_k_weights.to(hidden_states.dtype))
        out = torch.zeros_like(hidden_states)
        for i, e in enumerate(self):
            y = e.down_proj(self.act(e.gate_proj(hidden_states)) * e.up_proj(hidden_states))
            out = out + y * full[:, i:i + 1]
        return out


def linearize_experts(model) -> None:
    for layer in model.model.layers:
        layer.mlp.experts = LinearExperts(layer.mlp.experts)


class LogitsOnly(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids):
        return self.m(input_ids=input_ids, use_cache=False).logits


def torch_export(model, path: str) -> None:
    ids = torch.tensor([PROBE])
    torch.onnx.export(LogitsOnly(model).eval(), (ids,), path, dynamo=True, input_names=["input_ids"],
                      output_names=["logits"],
                      dynamic_shapes={"input_ids": {1: torch.export.Dim("seq", max=64)}})


class LogitsWithMask(LogitsOnly):
    def forward(self, input_ids):
        return self.m(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                      use_cache=False).logits


def torchscript_export(model, path: str) -> None:
    """The TorchScript exporter (dynamo=False). transformers 4.57 builds its attention mask with
    torch.vmap on torch >= 2.6, which the tracer cannot record ("unordered_map::at"); its own
    pre-2.6 mask function is put in its place (transformers 5.x builds it without vmap). The
    trace fixes the sequence length in the graph's Reshapes (onnxruntime then runs only the
    traced length)."""
    import transformers.masking_utils as mu

    saved = mu.sdpa_mask, mu.ALL_MASK_ATTENTION_FUNCTIONS._global_mapping["sdpa"]
    if TF4:
        mu.sdpa_mask = mu.sdpa_mask_older_torch
        mu.ALL_MASK_ATTENTION_FUNCTIONS._global_mapping["sdpa"] = mu.sdpa_mask_older_torch
    try:
        torch.onnx.export(LogitsWithMask(model).eval(), (torch.tensor([PROBE]),), path,
                          dynamo=False, opset_version=18, input_names=["input_ids"],
                          output_names=["logits"], dynamic_axes={"input_ids": {1: "seq"}})
    finally:   # the other exporters trace transformers' own mask function
        mu.sdpa_mask, mu.ALL_MASK_ATTENTION_FUNCTIONS._global_mapping["sdpa"] = saved


def ort_feeds(s) -> dict:
    """The probe as a plain causal forward: besides the token ids, optimum's exports take an
    all-ones attention_mask, position_ids 0..n-1 and an empty KV cache (past length 0)."""
    n = len(PROBE)
    feeds = {}
    for i in s.get_inputs():
        if i.name == "input_ids":
            feeds[i.name] = np.asarray([PROBE], np.int64)
        elif i.name == "attention_mask":
            feeds[i.name] = np.ones((1, n), np.int64)
        elif i.name == "position_ids":
            feeds[i.name] = np.arange(n, dtype=np.int64).reshape(1, -1)
        elif i.name.startswith("past_key_values."):
            shape = [d if isinstance(d, int) else (1 if k == 0 else 0)
                     for k, d in enumerate(i.shape)]
            feeds[i.name] = np.zeros(shape, np.float32)
        else:
            sys.exit(f"unexpected graph input {i.name}")
    return feeds


def ort_logits(path: str) -> np.ndarray:
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    return s.run(["logits"], ort_feeds(s))[0][0].astype(np.float32)


def ort_quantize(src: str, dst: str, bits: int, block: int, sym: bool, qdq: bool,
                 external: bool) -> None:
    from onnxruntime.quantization import QuantFormat
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    q = MatMulNBitsQuantizer(onnx.load(src), bits=bits, block_size=block, is_symmetric=sym,
                             quant_format=QuantFormat.QDQ if qdq else QuantFormat.QOperator)
    q.process()
    save(q.model.model, dst, external)


def save(model, dst: str, external: bool) -> None:
    if external:
        onnx.save_model(model, dst, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=os.path.basename(dst) + ".data")
    else:
        onnx.save_model(model, dst)


DEBUG_METADATA = ("pkg.torch.onnx.stack_trace", "pkg.torch.onnx.fx_node",
                  "pkg.torch.onnx.class_hierarchy", "namespace")


def strip_debug_metadata(path: str) -> None:
    """Drops the exporter's debugging node metadata (stack traces with the generating machine's
    file paths, FX node dumps, class hierarchies: four fifths of a small graph's bytes). Every
    other byte the tools wrote is kept, ``pkg.torch.onnx.name_scopes`` included."""
    m = onnx.load(path, load_external_data=False)
    for n in m.graph.node:
        keep = [p for p in n.metadata_props if p.key not in DEBUG_METADATA]
        del n.metadata_props[:]
        n.metadata_props.extend(keep)
    onnx.save_model(m, path)


def write_fixture(name: str, cfg, build, reference: np.ndarray | None = None,
                  extra: dict | None = None) -> None:
    name += SUFFIX
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    path = os.path.join(d, "model.onnx")
    tool = build(path)
    strip_debug_metadata(path)
    with open(os.path.join(d, "config.json"), "w") as f:
        f.write(cfg.to_json_string())
    with open(os.path.join(d, "card.json"), "w") as f:
        json.dump({"known_limitations": ["random weights: a conformance fixture"]}, f)
    tool += f", transformers {transformers.__version__}, torch {torch.__version__}"
    if reference is None:
        reference = ort_logits(path)
        tool += f", onnxruntime {ort.__version__} (ORT_DISABLE_ALL reference)"
    else:
        tool += " (the tool's own float32 forward as reference)"
    np.save(os.path.join(d, "expected_logits.npy"), reference.astype(np.float32))
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump({"tool": tool, "probe": PROBE, **(extra or {})}, f)
    print(name, sorted(os.listdir(d)))


def optimum_export(model, path: str) -> str:
    """optimum-onnx's exporter with the task ``optimum-cli export onnx`` picks for a causal LM
    (text-generation-with-past: input_ids, attention_mask, position_ids, past_key_values.*),
    its own Qwen3-MoE patcher (every expert runs over the tokens routed to it, index_add_) and
    its validation against the PyTorch model; TorchScript exporter, opset 18."""
    import optimum.version
    from optimum.exporters.onnx import onnx_export_from_model
    from importlib.metadata import version

    if version("optimum-onnx") != PINS["optimum-onnx"]:
        sys.exit(f"pinned optimum-onnx {PINS['optimum-onnx']}, found {version('optimum-onnx')}")
    tmp = path + ".optimum"
    onnx_export_from_model(model, tmp, task="text-generation-with-past", do_validation=True)
    os.replace(os.path.join(tmp, "model.onnx"), path)
    shutil.rmtree(tmp)
    return (f"optimum-onnx {version('optimum-onnx')} (optimum {optimum.version.__version__}) "
            f"onnx_export_from_model(task='text-generation-with-past')")


EXPORTERS = {"dynamo": torch_export, "torchscript": torchscript_export}


def ortq_fixture(prefix: str, seed: int, bits: int, block: int, sym: bool, qdq: bool,
                 external: bool, tie: bool = False, hidden: int = 64,
                 exporter: str = "dynamo") -> None:
    form = "qdq" if qdq else "qop"
    name = f"{prefix}_{exporter}_ortq_{form}_w{bits}g{block}_{'sym' if sym else 'asym'}"
    if hidden % block:
        name += f"_k{hidden}"
    model, cfg = make_model(seed, tie, hidden)

    def build(path: str) -> str:
        tmp = path + ".float.onnx"
        if exporter == "optimum":
            src = optimum_export(model, tmp)
        else:
            EXPORTERS[exporter](model, tmp)
            src = f"torch.onnx.export(dynamo={exporter == 'dynamo'})"
        ort_quantize(tmp, path, bits, block, sym, qdq, external)
        for f in os.listdir(os.path.dirname(path)):
            if f.startswith("model.onnx.float"):
                os.remove(os.path.join(os.path.dirname(path), f))
        return (f"{src} + onnxruntime MatMulNBitsQuantizer "
                f"({form.upper()}, {bits}-bit, block {block}, "
                f"{'symmetric' if sym else 'asymmetric'})")
    write_fixture(name, cfg, build)


def float_fixture(prefix: str, seed: int, hidden: int = 48, suffix: str = "") -> None:
    model, cfg = make_model(seed, hidden=hidden)

    def build(path: str) -> str:
        torch_export(model, path)
        return "torch.onnx.export(dynamo=True), float weights in external data"
    write_fixture(f"{prefix}_dynamo_float{suffix}", cfg, build)


def brevitas_fixture(seed: int, bits: int, form: str = "qcdq", hidden: int = 64,
                     expert_bits: int | None = None) -> None:
    """Brevitas QuantLinear (signed narrow-range weights, per output channel) in place of every
    attention and expert projection (experts at ``expert_bits`` if given: mixed widths); the
    router and lm_head stay float. ``form`` "qcdq":
    export_onnx_qcdq, reference onnxruntime; "qonnx": export_qonnx (the qonnx ``Quant`` op,
    which onnxruntime cannot run), reference Brevitas' own float32 forward."""
    import brevitas
    from brevitas.export import export_onnx_qcdq, export_qonnx
    from brevitas.nn import QuantLinear

    model, cfg = make_model(seed, hidden=hidden)
    for name, mod in list(model.named_modules()):
        for child, lin in list(mod.named_children()):
            if not isinstance(lin, torch.nn.Linear) or child in ("gate", "lm_head"):
                continue
            b = expert_bits if expert_bits is not None and ".experts." in name else bits
            q = QuantLinear(lin.in_features, lin.out_features, bias=False,
                            weight_bit_width=b, weight_scaling_per_output_channel=True)
            with torch.no_grad():
                q.weight.copy_(lin.weight)
            setattr(mod, child, q)
    model.eval()

    def build(path: str) -> str:
        ids = torch.tensor([PROBE])
        export = export_onnx_qcdq if form == "qcdq" else export_qonnx
        export(LogitsOnly(model).eval(), args=(ids,), export_path=path, dynamo=True,
               optimize=True, input_names=["input_ids"], output_names=["logits"],
               dynamic_shapes={"input_ids": {1: torch.export.Dim("seq", max=64)}})
        widths = f"{bits}-bit" + (f", experts {expert_bits}-bit" if expert_bits else "")
        return (f"brevitas {brevitas.__version__} QuantLinear {widths} per channel, "
                f"export_{'onnx_qcdq' if form == 'qcdq' else 'qonnx'}(dynamo=True)")
    ref = None
    if form == "qonnx":
        with torch.no_grad():
            ref = LogitsOnly(model).eval()(torch.tensor([PROBE]))[0].float().numpy()
    name = f"tf4_brevitas_{form}_w{bits}ch" + (f"_e{expert_bits}" if expert_bits else "")
    write_fixture(name, cfg, build, ref)


def torchscript_float_fixture(prefix: str, seed: int, hidden: int = 64) -> None:
    model, cfg = make_model(seed, hidden=hidden)

    def build(path: str) -> str:
        torchscript_export(model, path)
        return "torch.onnx.export(dynamo=False) (TorchScript), float weights inline"
    write_fixture(f"{prefix}_torchscript_float", cfg, build)


def optimum_float_fixture(seed: int) -> None:
    model, cfg = make_model(seed, hidden=32)

    def build(path: str) -> str:
        return optimum_export(model, path) + ", float weights inline"
    write_fixture("tf4_optimum_float", cfg, build)


def torchao_fixture(seed: int) -> None:
    """torchao's QAT flow (``QATConfig(IntxWeightOnlyConfig(int4, PerGroup(32), symmetric))``,
    prepare then convert) over per-expert ``nn.Linear`` experts (LinearExperts; torchao's QAT
    covers nn.Linear only), exported by ``torch.onnx.export(dynamo=True)``. The exporter's
    optimizer folds torchao's dequantization (``IntxUnpackedToInt8Tensor``: int8 codes, scale,
    zero point) into float32 initializers: the int4 codes do not reach the ONNX file, so the
    weights import as float (they are exactly torchao's dequantized weights)."""
    import torchao
    from torchao.quantization import IntxWeightOnlyConfig, MappingType, quantize_
    from torchao.quantization.granularity import PerGroup
    from torchao.quantization.qat import QATConfig

    if torchao.__version__ != PINS["torchao"]:
        sys.exit(f"pinned torchao {PINS['torchao']}, found {torchao.__version__}")
    model, cfg = make_model(seed, hidden=32)
    linearize_experts(model)
    base = IntxWeightOnlyConfig(weight_dtype=torch.int4, granularity=PerGroup(32),
                                mapping_type=MappingType.SYMMETRIC)
    targets = lambda m, fqn: isinstance(m, torch.nn.Linear) and fqn != "lm_head"  # noqa: E731
    quantize_(model, QATConfig(base, step="prepare"), filter_fn=targets)
    quantize_(model, QATConfig(base, step="convert"), filter_fn=targets)
    # torchao's own dequantization of each quantized weight: the float32 values the ONNX
    # initializers must hold, bit for bit
    deq = {f"{fqn}.weight": hashlib.sha256(
        mod.weight.dequantize().float().contiguous().numpy().tobytes()).hexdigest()
        for fqn, mod in model.named_modules() if isinstance(mod, torch.nn.Linear)
        and type(mod.weight).__name__ == "IntxUnpackedToInt8Tensor"}
    assert deq, "torchao quantized no weight"

    def build(path: str) -> str:
        torch_export(model, path)
        return (f"torchao {torchao.__version__} QATConfig(IntxWeightOnlyConfig(int4, "
                f"PerGroup(32), symmetric)) prepare+convert, torch.onnx.export(dynamo=True) "
                f"(dequantization folded into float32 initializers)")
    write_fixture("tf5_torchao_qat_w4g32_dynamo_float", cfg, build,
                  extra={"dequantized_sha256": deq})


def main() -> None:
    check_pins()
    os.makedirs(OUT, exist_ok=True)
    p = "tf4" if TF4 else "tf5"
    float_fixture(p, 1)
    # hidden 48: K % 32 != 0, the quantizer pads the last block (a short last group)
    ortq_fixture(p, 2, 4, 32, False, False, False, hidden=48)
    ortq_fixture(p, 3, 4, 32, True, True, True)
    if TF4:
        ortq_fixture(p, 4, 8, 32, True, False, False, tie=True)
        ortq_fixture(p, 5, 2, 32, False, False, False)
        ortq_fixture(p, 6, 4, 64, False, True, False)
        brevitas_fixture(7, 3)
        brevitas_fixture(10, 2, "qonnx")
        torchscript_float_fixture(p, 8)
        ortq_fixture(p, 9, 4, 32, True, False, False, exporter="torchscript")
        optimum_float_fixture(13)
        ortq_fixture(p, 14, 4, 32, False, False, False, exporter="optimum")
    else:
        torchscript_float_fixture(p, 12, hidden=32)
        torchao_fixture(15)


def variants(out: str) -> None:
    """Other sizes, seeds and widths than the committed fixtures, written to ``out`` (not
    committed): 3 layers, 8 experts top-2, hidden 96, moe_intermediate_size 40 (K = 40 of the
    down projections: no multiple of 32, a short last block), 2/4/8-bit, block 32 and 128
    (beyond K), mixed widths per role, a dense MLP layer; then 4 query / 2 KV heads, top-4 of 8
    without renormalization (Qwen3-MoE's default norm_topk_prob=false) and every second layer
    sparse (decoder_sparse_step 2). Check them with
    ``FWA_ONNX_FIXTURES=out pytest tests/test_conformance_onnx.py``."""
    global OUT
    OUT = out
    SIZE.update(layers=3, experts=8, top_k=2, moe_inter=40)
    p = "tf4" if TF4 else "tf5"
    if TF4:
        ortq_fixture(p, 101, 4, 32, False, False, False, hidden=96)
        ortq_fixture(p, 102, 4, 128, True, True, False, hidden=96)
        brevitas_fixture(105, 4, hidden=96, expert_bits=3)
        ortq_fixture(p, 103, 2, 32, True, False, False, hidden=96, exporter="optimum")
        ortq_fixture(p, 104, 8, 32, False, False, False, hidden=96, exporter="torchscript")
        SIZE["mlp_only"] = [1]
        float_fixture(p, 106, hidden=96, suffix="_mlp1")
        other_heads_and_routing()
        ortq_fixture(p, 107, 4, 32, False, False, False, hidden=64)
        ortq_fixture(p, 108, 4, 32, True, False, False, hidden=64, exporter="optimum")
    else:
        ortq_fixture(p, 111, 8, 32, True, False, True, hidden=96)
        ortq_fixture(p, 113, 4, 32, False, True, False, hidden=96)
        torchscript_float_fixture(p, 112, hidden=96)
        SIZE["mlp_only"] = [1]
        float_fixture(p, 114, hidden=96, suffix="_mlp1")
        other_heads_and_routing()
        ortq_fixture(p, 115, 4, 32, True, True, False, hidden=64)
        torchscript_float_fixture(p, 116, hidden=64)


def other_heads_and_routing() -> None:
    global SUFFIX
    SUFFIX = "_h4top4s2"
    SIZE.update(layers=4, heads=4, kv_heads=2, top_k=4, norm_topk=False, sparse_step=2,
                mlp_only=[])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--variants"] and len(sys.argv) == 3:
        check_pins()
        variants(os.path.abspath(sys.argv[2]))
    elif len(sys.argv) == 1:
        main()
    else:
        sys.exit("usage: make_onnx.py [--variants OUTDIR]")
