"""``fwassist export``: QAT ONNX → verified, pinned ``.fwa`` artifact.

import (bit-exact codes) → equivalence evidence (reference forward vs onnxruntime on probe
inputs) → atomic, deterministic write. Only file names, never host paths, enter the artifact,
so the same inputs give the same bytes on any machine.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Optional

import numpy as np

from .model import ImportedModel
from .onnx_import import import_onnx
from .reference import Reference

PROBE_LENGTHS = (1, 7, 16)
PROBE_SEED = 20261125


def _log(msg: str, quiet: bool) -> None:
    if not quiet:
        print(f"fwassist export: {msg}", file=sys.stderr, flush=True)


def probe_inputs(vocab_size: int) -> list[np.ndarray]:
    """Deterministic token-id probes (PCG64 is platform-independent)."""
    rng = np.random.Generator(np.random.PCG64(PROBE_SEED))
    return [rng.integers(0, vocab_size, size=n, dtype=np.int64) for n in PROBE_LENGTHS]


def _onnxruntime_logits(onnx_path: str) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    so = ort.SessionOptions()
    # Unfused: the optimizer's DQ+MatMul fusion would switch to int8 activations.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name

    def run(ids: np.ndarray) -> np.ndarray:
        out = sess.run(None, {name: ids.reshape(1, -1)})[0]
        return np.asarray(out, dtype=np.float64).reshape(ids.size, -1)

    return run


def measure_evidence(model: ImportedModel, onnx_path: str) -> dict[str, Any]:
    """Logits of the numpy reference forward (float64, dequantized weights) vs onnxruntime
    running the source graph, per probe: max abs/rel error and top-1 agreement."""
    ref = Reference(model)
    ort_run = _onnxruntime_logits(onnx_path)
    probes = []
    for ids in probe_inputs(int(model.config["vocab_size"])):
        r = ref.forward(ids)
        o = ort_run(ids)
        keep = np.ones(ids.size, bool)
        keep[r.ambiguous_tokens] = False  # router near-ties: either expert choice is right
        diff = np.abs(r.logits - o)[keep]
        scale = float(np.max(np.abs(o[keep]))) if keep.any() else 1.0
        probes.append({
            "tokens": int(ids.size),
            "excluded_router_ties": int((~keep).sum()),
            "max_abs_error": float(diff.max()) if diff.size else 0.0,
            "max_rel_error": float(diff.max() / scale) if diff.size and scale else 0.0,
            "top1_agreement": float(np.mean(np.argmax(r.logits[keep], 1) == np.argmax(o[keep], 1)))
            if keep.any() else 1.0,
        })
    return {
        "reference": "numpy float64 forward of the dequantized weights (fwassist.export."
                     "reference); the C++ runtime's exact/fast modes are not measured yet",
        "oracle": "onnxruntime, graph optimizations disabled, on the source ONNX",
        "probe_seed": PROBE_SEED,
        "probes": probes,
    }


def _beside(onnx_path: str, name: str) -> Optional[str]:
    p = os.path.join(os.path.dirname(os.path.abspath(onnx_path)), name)
    return p if os.path.isfile(p) else None


def export_onnx(onnx_path: str, out_path: str, *, config_path: Optional[str] = None,
                tokenizer_path: Optional[str] = None, card_path: Optional[str] = None,
                evidence: bool = True, quiet: bool = False) -> str:
    """Exports ``onnx_path`` to ``out_path`` and returns the pin. The model card (card.json
    beside the model or ``card_path``) must list known limitations."""
    from .. import __version__
    from ..artifact.writer import write_artifact

    config_path = config_path or _beside(onnx_path, "config.json")
    tokenizer_path = tokenizer_path or _beside(onnx_path, "tokenizer.json")
    card_path = card_path or _beside(onnx_path, "card.json")
    if card_path is None:
        raise ValueError("a model card is required: pass --card card.json (or put card.json "
                         "beside the model) with a non-empty \"known_limitations\" list")
    with open(card_path, "r", encoding="utf-8") as f:
        card = json.load(f)
    _log(f"importing {os.path.basename(onnx_path)}", quiet)
    model = import_onnx(onnx_path, config_path=config_path, tokenizer_path=tokenizer_path)
    n_q = sum(1 for t in model.tensors if not isinstance(t.value, np.ndarray))
    _log(f"{len(model.tensors)} tensors ({n_q} quantized)", quiet)
    ev: dict[str, Any] = {"measured": False}
    if evidence:
        _log("measuring equivalence evidence against onnxruntime", quiet)
        ev = {"measured": True, **measure_evidence(model, onnx_path)}
    options = {
        "source": os.path.basename(onnx_path),
        "config": os.path.basename(config_path) if config_path else None,
        "tokenizer": os.path.basename(tokenizer_path) if tokenizer_path else None,
        "evidence": evidence,
        "importer_notes": list(model.notes),
    }
    _log(f"writing {os.path.basename(out_path)}", quiet)
    pin = write_artifact(out_path, model, model_card=card, options=options, evidence=ev,
                         exporter_version=__version__)
    _log(f"done: {pin}", quiet)
    return pin
