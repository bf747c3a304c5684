# SPDX-License-Identifier: Apache-2.0
"""``fwassist export``: QAT ONNX → verified, pinned ``.fwa`` artifact.

import (bit-exact codes) → equivalence evidence → atomic, deterministic write. The evidence
compares, on probe inputs, onnxruntime running the source graph (optimizations off) with the
numpy float64 reference forward and with the C++ runtime in both compute modes, run on a
provisional artifact holding the same tensors: exact-mode max relative logit error, fast-mode
top-1 agreement and mean KL divergence, and a 32-token greedy decode in exact mode. Figures are
rounded to 3 significant digits. Only file names, never host paths, enter the artifact, so the
same inputs give the same bytes on any machine.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Optional

import numpy as np

from ..artifact.model import ImportedModel
from ..artifact.writer import write_artifact
from ..errors import require
from ..progress import Progress
from .generation import FILES as GENERATION_FILES
from .generation import load_generation
from .onnx_import import import_onnx
from .tensors import OnnxImportError
from .reference import Reference

PROBE_LENGTHS = (1, 7, 16)
PROBE_SEED = 20261125
GREEDY_TOKENS = 32




def probe_inputs(vocab_size: int) -> list[np.ndarray]:
    """Deterministic token-id probes (PCG64 is platform-independent)."""
    rng = np.random.Generator(np.random.PCG64(PROBE_SEED))
    return [rng.integers(0, vocab_size, size=n, dtype=np.int64) for n in PROBE_LENGTHS]


def decoder_feeds(inputs: list[Any]) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """onnxruntime feeds for a Hugging Face decoder graph (its ``get_inputs()``): the token
    ids, and where the graph declares them (optimum's exports) an all-ones ``attention_mask``,
    ``position_ids`` 0..n-1 and an empty KV cache (``past_key_values.*``, past length 0): a
    plain causal forward of the probe. Any other input is refused by name."""
    names = [i.name for i in inputs]
    ids_name = "input_ids" if "input_ids" in names else names[0]
    past: dict[str, tuple[tuple[int, ...], type[np.floating[Any]]]] = {}
    cache_types: dict[str, type[np.floating[Any]]] = {"tensor(float)": np.float32,
                                                      "tensor(float16)": np.float16}
    for i in inputs:
        if i.name in (ids_name, "attention_mask", "position_ids"):
            continue
        if not i.name.startswith("past_key_values."):
            raise OnnxImportError(f"evidence: the source graph has an input '{i.name}' besides "
                                  f"the token ids (known: attention_mask, position_ids, "
                                  f"past_key_values.*); pass --no-evidence")
        if i.type not in cache_types:
            raise OnnxImportError(f"evidence: cache input '{i.name}' has type {i.type}; pass "
                                  f"--no-evidence")
        # batch 1; every other symbolic axis of a cache input is its past length, 0
        past[i.name] = (tuple(d if isinstance(d, int) else (1 if k == 0 else 0)
                              for k, d in enumerate(i.shape)), cache_types[i.type])

    def feeds(ids: np.ndarray) -> dict[str, np.ndarray]:
        n = ids.size
        out = {ids_name: ids.reshape(1, -1).astype(np.int64)}
        if "attention_mask" in names:
            out["attention_mask"] = np.ones((1, n), np.int64)
        if "position_ids" in names:
            out["position_ids"] = np.arange(n, dtype=np.int64).reshape(1, -1)
        out.update({k: np.zeros(shape, dt) for k, (shape, dt) in past.items()})
        return out

    return feeds


def _onnxruntime_logits(onnx_path: str) -> Callable[[np.ndarray], np.ndarray]:
    ort = require("onnxruntime", "export",
                  "the equivalence evidence of an ONNX source (or pass --no-evidence)")

    so = ort.SessionOptions()
    # Unfused: the optimizer's DQ+MatMul fusion would switch to int8 activations.
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 1
    try:
        sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        msg = " ".join(str(e).split())[:300]
        raise OnnxImportError(f"evidence: onnxruntime cannot load the source graph ({msg}); a "
                              f"graph with ops onnxruntime lacks (e.g. qonnx Quant) exports "
                              f"with --no-evidence") from None
    feeds = decoder_feeds(sess.get_inputs())

    def run(ids: np.ndarray) -> np.ndarray:
        try:
            out = sess.run(None, feeds(ids))[0]
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            msg = " ".join(str(e).split())[:300]
            raise OnnxImportError(
                f"evidence: onnxruntime cannot run the source graph on a {ids.size}-token probe "
                f"({msg}); the graph may fix the sequence length (a traced export with static "
                f"shapes): export it with a dynamic sequence axis, or pass --no-evidence") from None
        return np.asarray(out, dtype=np.float64).reshape(ids.size, -1)

    return run


def _sig3(x: float) -> float:
    """3 significant digits: the evidence states magnitudes, and must not carry the last-bit
    noise of a host's float kernels into the artifact's bytes."""
    return float(f"{float(x):.3g}")


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    out: np.ndarray = x - np.log(np.exp(x).sum(axis=-1, keepdims=True))
    return out


def measure_evidence(model: ImportedModel, onnx_path: str,
                     runtime_path: Optional[str] = None) -> dict[str, Any]:
    """Per probe: the numpy float64 reference and (with ``runtime_path``, a provisional
    artifact of the same model) the runtime's exact and fast modes against onnxruntime.
    Positions from the first router near-tie on (the k-th and (k+1)-th expert scores within
    float noise) are left out and counted: either expert choice is right there, and later
    positions attend to that choice."""
    ref = Reference(model)
    ort_run: Callable[[np.ndarray], np.ndarray]
    if os.path.isdir(onnx_path):
        # A safetensors checkpoint has no graph to run: the oracle is the float64 forward of
        # its codes and scales dequantized in float32 (float weights as stored).
        def ref_run(ids: np.ndarray) -> np.ndarray:
            return ref.forward(ids).logits

        ort_run = ref_run

        oracle = ("the numpy float64 reference forward of the checkpoint's weights (codes and "
                  "scales dequantized in float32: (q - zp) * s, one float32 multiply); no "
                  "onnxruntime for a safetensors source")
    else:
        ort_run = _onnxruntime_logits(onnx_path)
        oracle = "onnxruntime, graph optimizations disabled, on the source ONNX"
    rt = None
    if runtime_path is not None:
        from ..runtime import Model

        rt = Model.load(runtime_path)
    probes = []
    for ids in probe_inputs(int(model.config["vocab_size"])):
        r = ref.forward(ids)
        o = ort_run(ids)
        keep = np.ones(ids.size, bool)
        if r.first_ambiguous is not None:
            keep[r.first_ambiguous:] = False
        scale = float(np.max(np.abs(o[keep]))) if keep.any() else 1.0
        diff = np.abs(r.logits - o)[keep]
        p: dict[str, Any] = {
            "tokens": int(ids.size),
            "excluded_router_ties": int((~keep).sum()),
            "max_abs_error": _sig3(diff.max()) if diff.size else 0.0,
            "max_rel_error": _sig3(diff.max() / scale) if diff.size and scale else 0.0,
            "top1_agreement": _sig3(np.mean(np.argmax(r.logits[keep], 1) ==
                                            np.argmax(o[keep], 1))) if keep.any() else 1.0,
        }
        if rt is not None and keep.any():
            ok = o[keep]
            with rt.session(mode="exact") as s:
                ex = s.logits(ids).astype(np.float64)[keep]
            with rt.session(mode="fast") as s:
                fa = s.logits(ids).astype(np.float64)[keep]
            lo, lf = _log_softmax(ok), _log_softmax(fa)
            p["runtime_exact_max_rel_error"] = _sig3(np.abs(ex - ok).max() / scale)
            p["runtime_exact_top1_agreement"] = _sig3(np.mean(ex.argmax(1) == ok.argmax(1)))
            p["runtime_fast_max_rel_error"] = _sig3(np.abs(fa - ok).max() / scale)
            p["runtime_fast_top1_agreement"] = _sig3(np.mean(fa.argmax(1) == ok.argmax(1)))
            p["runtime_fast_mean_kl"] = _sig3(np.mean(np.sum(np.exp(lo) * (lo - lf), axis=1)))
        probes.append(p)
    ev: dict[str, Any] = {
        "reference": "numpy float64 forward of the dequantized weights (fwassist.export."
                     "reference)" + ("; the C++ runtime (fwassist.Model) in exact and fast "
                                     "mode" if rt is not None else ""),
        "oracle": oracle,
        "probe_seed": PROBE_SEED,
        "probes": probes,
    }
    if rt is not None:
        ev["greedy"] = _greedy_evidence(rt, ort_run, ref, probe_inputs(
            int(model.config["vocab_size"]))[1])
    return ev


def _greedy_evidence(rt: Any, ort_run: Callable[[np.ndarray], np.ndarray], ref: Reference,
                     prompt: np.ndarray) -> dict[str, Any]:
    """Greedy decode of GREEDY_TOKENS tokens: the runtime in exact mode vs onnxruntime
    (recomputing the whole sequence each step); compared up to a router near-tie, if any."""
    with rt.session(mode="exact") as s:
        # All GREEDY_TOKENS tokens, as onnxruntime's: no stop at a pinned end-of-sequence id.
        got = s.generate(prompt_ids=prompt.tolist(), max_tokens=GREEDY_TOKENS,
                         stop_ids=()).token_ids
    seq = prompt.tolist()
    want: list[int] = []
    for _ in range(GREEDY_TOKENS):
        want.append(int(np.argmax(ort_run(np.asarray(seq, np.int64))[-1])))
        seq.append(want[-1])
    amb = ref.forward(np.asarray(seq[:-1], np.int64)).first_ambiguous
    n = GREEDY_TOKENS if amb is None else max(0, min(GREEDY_TOKENS, amb - prompt.size))
    return {"prompt_tokens": int(prompt.size), "tokens": GREEDY_TOKENS, "compared": n,
            "identical": got[:n] == want[:n]}


def _evidence_with_runtime(model: ImportedModel, onnx_path: str) -> dict[str, Any]:
    """Writes a provisional artifact (same tensors, no evidence) into a private directory under
    the OS temp directory, measures the evidence on it with the runtime, and removes both. Never
    beside the output: a process killed there (SIGKILL) would leave it in the user's tree; the
    command line turns SIGTERM into an exception, so this ``finally`` runs then too. The copy is
    as large as the artifact: TMPDIR chooses where it goes."""
    import shutil
    import tempfile

    d = tempfile.mkdtemp(prefix="fwassist-evidence-")
    try:
        tmp = os.path.join(d, "provisional.fwa")
        write_artifact(tmp, model, model_card={"known_limitations": ["provisional"]},
                       options={}, evidence={"measured": False}, exporter_version="provisional")
        return measure_evidence(model, onnx_path, runtime_path=tmp)
    finally:
        shutil.rmtree(d, ignore_errors=True)


def _beside(onnx_path: str, name: str) -> Optional[str]:
    d = onnx_path if os.path.isdir(onnx_path) else os.path.dirname(os.path.abspath(onnx_path))
    p = os.path.join(d, name)
    return p if os.path.isfile(p) else None


def weight_files(path: str) -> list[str]:
    """The files an export reads its weights from: the ONNX file and its external data, or
    every file of a checkpoint directory."""
    if os.path.isdir(path):
        return [os.path.join(path, n) for n in sorted(os.listdir(path))]
    from .onnx_import import source_files

    return source_files(path)


def export_onnx(onnx_path: str, out_path: str, *, config_path: Optional[str] = None,
                tokenizer_path: Optional[str] = None, card_path: Optional[str] = None,
                evidence: bool = True, quiet: bool = False, map_path: Optional[str] = None,
                explain: Optional[list[dict[str, Any]]] = None) -> str:
    """Exports ``onnx_path`` to ``out_path`` and returns the pin. The model card (card.json
    beside the model or ``card_path``) must list known limitations. ``map_path``: a role map
    for ONNX graphs (see mapping.load_role_map); ``explain`` receives the mapping table."""
    from .. import __version__
    from ..outpath import check_input_file, same_file
    from .jsonfile import load_file

    # The inputs first, so that a missing model is reported as such.
    if os.path.isdir(onnx_path):    # "dir/" and "dir" name the same source
        onnx_path = os.path.normpath(onnx_path)
    else:
        check_input_file(onnx_path, "model")
    for what, p in (("config", config_path), ("tokenizer", tokenizer_path),
                    ("model card", card_path), ("role map", map_path)):
        if p is not None:
            check_input_file(p, what)
    config_path = config_path or _beside(onnx_path, "config.json")
    tokenizer_path = tokenizer_path or _beside(onnx_path, "tokenizer.json")
    card_path = card_path or _beside(onnx_path, "card.json")
    if card_path is None:
        raise ValueError("a model card is required: pass --card card.json (or put card.json "
                         "beside the model) with a non-empty \"known_limitations\" list")
    generation_files = [_beside(onnx_path, n) for n in GENERATION_FILES]
    if os.path.lexists(out_path):  # only an existing file can be an input
        for p in [config_path, tokenizer_path, card_path] + generation_files + \
                weight_files(onnx_path):
            if p is not None and same_file(out_path, p):
                raise ValueError(f"the output {out_path} is also an input of the export ({p})")
    card = load_file(card_path, "model card")
    # Progress on a terminal only (fwassist.progress): phases, then the bytes written.
    progress = Progress("fwassist export", quiet=quiet)
    progress.phase(f"importing {os.path.basename(onnx_path)}")
    if os.path.isdir(onnx_path):
        from .hf_checkpoint import import_checkpoint

        if map_path is not None:
            raise ValueError("--map applies to ONNX graphs; a checkpoint's tensors are named")
        model = import_checkpoint(onnx_path, config_path=config_path,
                                  tokenizer_path=tokenizer_path)
        if explain is not None:
            explain.extend({"weight": t.name, "node": "", "role": t.role, "layer": t.layer,
                            "expert": t.expert, "signal": "Hugging Face name"}
                           for t in model.tensors)
    else:
        model = import_onnx(onnx_path, config_path=config_path, tokenizer_path=tokenizer_path,
                            map_path=map_path, explain=explain)
    # EOS ids and chat template from the files beside the model (format 1.1 when present).
    model.generation = load_generation(
        onnx_path if os.path.isdir(onnx_path) else os.path.dirname(os.path.abspath(onnx_path)),
        model.tokenizer, int(model.config["vocab_size"]))
    n_q = sum(1 for t in model.tensors if not isinstance(t.value, np.ndarray))
    progress.phase(f"{len(model.tensors)} tensors ({n_q} quantized)")
    ev: dict[str, Any] = {"measured": False}
    if evidence:
        progress.phase("measuring equivalence evidence against onnxruntime")
        ev = {"measured": True, **_evidence_with_runtime(model, onnx_path)}
    options = {
        "source": os.path.basename(onnx_path),
        "config": os.path.basename(config_path) if config_path else None,
        "tokenizer": os.path.basename(tokenizer_path) if tokenizer_path else None,
        "evidence": evidence,
        **({"role_map": os.path.basename(map_path)} if map_path is not None else {}),
        "importer_notes": list(model.notes),
    }
    progress.phase(f"writing {os.path.basename(out_path)}")
    started = time.monotonic()
    pin = write_artifact(out_path, model, model_card=card, options=options, evidence=ev,
                         exporter_version=__version__,
                         progress=lambda done, total: progress.bytes_done(
                             "written", done, total, started))
    progress.end()
    progress.phase(f"done: {pin}")
    return pin
