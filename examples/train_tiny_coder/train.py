# SPDX-License-Identifier: Apache-2.0
"""Trains the bundled tiny C-code model and exports it through fwassist's own pipeline.

    python examples/train_tiny_coder/train.py --corpus DIR --out DIR [--float-steps N]
        [--qat-steps N] [--seed S]

DIR (corpus) holds train.jsonl, test.jsonl, manifest.json (corpus.py) and tokenizer.json
(tokenizer_train.py). Steps, all deterministic for a seed and a thread count:

1. tokenize both splits with Hugging Face ``tokenizers``; files joined by <|endoftext|> (id 0);
2. float training (AdamW, warm-up + cosine), then quantization-aware training with
   straight-through fake quantization in the runtime's formats (model.QuantPlan: attention
   4-bit, experts 3-bit, embedding and lm_head 8-bit, blocks of 32, float16 scales);
3. held-out next-token accuracy and perplexity of the float and the QAT model (PyTorch);
4. the QAT checkpoint written as a QAT ONNX graph (fwassist.export.qat_builder: integer codes
   -> DequantizeLinear, 3-bit experts as Q -> Clip -> DQ), with config.json, tokenizer.json and
   a model card; ``fwassist export`` makes a provisional artifact, the runtime's exact and fast
   modes are measured on it, and the final artifact is exported with every figure in its card
   (same tensors: the tensor-table digest is checked equal).

Writes OUT/quality.json, OUT/train_log.jsonl, OUT/float.pt, OUT/qat.pt, OUT/onnx/ and
OUT/tiny-coder.fwa (+ .pin).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from model import QuantPlan, TinyCoder, TinyConfig  # noqa: E402

EOS_ID = 0
MODEL_NAME = "fwassist-tiny-coder"
MODEL_VERSION = "1.0.0"


def log(msg: str) -> None:
    print(f"[train {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- data ------------------------------------------------------------------------------------


def token_stream(corpus: str, split: str, tokenizer_path: str) -> np.ndarray:
    """Every file of the split tokenized, in manifest order, each followed by EOS (uint16)."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(tokenizer_path)
    texts = []
    with open(os.path.join(corpus, f"{split}.jsonl"), "r", encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
    ids: list[int] = []
    for enc in tok.encode_batch(texts, add_special_tokens=False):
        ids.extend(enc.ids)
        ids.append(EOS_ID)
    return np.asarray(ids, dtype=np.uint16)


class Batches:
    """Random windows of seq+1 tokens from the train stream (PCG64: the same on any host)."""

    def __init__(self, stream: np.ndarray, seq: int, batch: int, seed: int):
        self.s, self.seq, self.batch = stream, seq, batch
        self.rng = np.random.Generator(np.random.PCG64(seed))

    def next(self) -> torch.Tensor:
        starts = self.rng.integers(0, self.s.size - self.seq - 1, size=self.batch)
        w = np.stack([self.s[i:i + self.seq + 1] for i in starts]).astype(np.int64)
        return torch.from_numpy(w)


def eval_windows(stream: np.ndarray, seq: int, n: int) -> np.ndarray:
    """The first n non-overlapping windows of seq+1 tokens of the test stream."""
    n = min(n, (stream.size - 1) // seq)
    return np.stack([stream[i * seq:i * seq + seq + 1] for i in range(n)]).astype(np.int64)


def metrics_from_logits(logits: np.ndarray, targets: np.ndarray) -> tuple[int, float, int]:
    """(correct top-1, summed negative log-likelihood, count) over [T, V] logits."""
    lg = logits.astype(np.float64)
    lg = lg - lg.max(axis=1, keepdims=True)
    lse = np.log(np.exp(lg).sum(axis=1))
    nll = lse - lg[np.arange(targets.size), targets]
    return int((logits.argmax(1) == targets).sum()), float(nll.sum()), int(targets.size)


def summarize(correct: int, nll: float, count: int) -> dict[str, float]:
    return {"next_token_accuracy": round(correct / count, 5),
            "perplexity": round(math.exp(nll / count), 4), "tokens": count}


@torch.no_grad()
def eval_torch(model: TinyCoder, windows: np.ndarray, batch: int = 8) -> dict[str, float]:
    model.eval()
    c = n = 0
    nll = 0.0
    for i in range(0, len(windows), batch):
        w = torch.from_numpy(windows[i:i + batch])
        logits, _ = model(w[:, :-1])
        for b in range(w.shape[0]):
            cc, ll, nn = metrics_from_logits(logits[b].numpy(), w[b, 1:].numpy())
            c, nll, n = c + cc, nll + ll, n + nn
    model.train()
    return summarize(c, nll, n)


def eval_runtime(artifact: str, windows: np.ndarray, mode: str) -> dict[str, float]:
    from fwassist import Model

    m = Model.load(artifact)
    c = n = 0
    nll = 0.0
    with m.session(mode=mode, max_context=windows.shape[1] - 1, threads=torch.get_num_threads()) as s:
        for w in windows:
            s.reset()
            cc, ll, nn = metrics_from_logits(s.logits(w[:-1].tolist()), w[1:])
            c, nll, n = c + cc, nll + ll, n + nn
    return summarize(c, nll, n)


# -- training --------------------------------------------------------------------------------


def lr_at(step: int, total: int, peak: float, floor: float, warmup: int) -> float:
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, total - warmup)
    return floor + 0.5 * (peak - floor) * (1 + math.cos(math.pi * min(1.0, t)))


def make_optimizer(model: TinyCoder, wd: float) -> torch.optim.Optimizer:
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    keep = [p for n, p in model.named_parameters() if p.dim() <= 1]
    return torch.optim.AdamW([{"params": decay, "weight_decay": wd},
                              {"params": keep, "weight_decay": 0.0}], betas=(0.9, 0.95), eps=1e-8)


def run_phase(name: str, model: TinyCoder, batches: Batches, steps: int, peak: float,
              floor: float, warmup: int, aux_coef: float, logf: Any) -> None:
    opt = make_optimizer(model, 0.1)
    V = model.c.vocab_size
    t0 = time.time()
    for step in range(steps):
        lr = lr_at(step, steps, peak, floor, warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        w = batches.next()
        logits, aux = model(w[:, :-1])
        ce = F.cross_entropy(logits.reshape(-1, V), w[:, 1:].reshape(-1))
        loss = ce + aux_coef * aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0 or step == steps - 1:
            el = time.time() - t0
            rec = {"phase": name, "step": step, "ce": round(ce.item(), 4),
                   "aux": round(aux.item(), 4), "lr": lr,
                   "tokens_per_s": round((step + 1) * w.numel() / max(el, 1e-9))}
            logf.write(json.dumps(rec) + "\n")
            logf.flush()
            log(f"{name} {step}/{steps} ce {ce.item():.3f} aux {aux.item():.3f} "
                f"lr {lr:.2e} {rec['tokens_per_s']} tok/s")


# -- export ----------------------------------------------------------------------------------


def quant_spec_fn(plan: QuantPlan):
    from fwassist.export.qat_builder import QuantSpec

    def spec(name: str, role: str) -> Optional[Any]:
        f16 = "float16"
        if role in ("q_proj", "k_proj", "v_proj", "o_proj"):
            return QuantSpec(pattern="dq", bits=plan.attention, block=32, scale_dtype=f16)
        if role in ("expert_gate", "expert_up", "expert_down"):
            layer = int(name.split(".")[2])
            b = plan.experts[layer]
            if b in (2, 4, 8):
                return QuantSpec(pattern="dq", bits=b, block=32, scale_dtype=f16)
            # 3-bit: Q -> Clip[-4, 3] -> DQ. QuantizeLinear takes float32 scales only; they hold
            # float16 values, which the importer stores as float16 (lossless).
            return QuantSpec(pattern="qcdq", bits=b, block=32, scale_dtype="float32",
                             scale_round="float16")
        if role == "embed":
            return QuantSpec(pattern="dq", bits=plan.embed, block=32, scale_dtype=f16)
        if role == "lm_head":
            return QuantSpec(pattern="dq", bits=plan.lm_head, block=32, scale_dtype=f16)
        return None                     # router and norms stay float32

    return spec


def active_parameters(c: TinyConfig, total: int) -> int:
    """Parameters a token's forward pass multiplies with: all but the embedding table and the
    experts the router did not pick."""
    per_expert = 3 * c.hidden_size * c.moe_intermediate_size
    unused = c.num_hidden_layers * (c.num_experts - c.num_experts_per_tok) * per_expert
    return total - c.vocab_size * c.hidden_size - unused


def crypto_policy_note(manifest: dict[str, Any]) -> str:
    """The corpus's export-control policy (corpus.py --exclude-crypto) in words."""
    policy = manifest.get("crypto_policy")
    tot = manifest["totals"]
    if policy == "exclude":
        return (f"crypto policy exclude: {tot['files_crypto_excluded']} files implementing "
                "cryptographic primitives left out")
    if policy == "flag":
        return (f"crypto policy flag: {tot['files_crypto_flagged']} files implementing "
                "cryptographic primitives kept and listed in the manifest")
    return "crypto policy none: the corpus format predates the export-control flag"


def model_card(corpus: str, quality: dict[str, Any], plan: QuantPlan,
               train_info: dict[str, Any], c: TinyConfig) -> dict[str, Any]:
    with open(os.path.join(corpus, "manifest.json"), "rb") as f:
        raw = f.read()
    import hashlib

    man = json.loads(raw)
    tot = man["totals"]
    export_control = crypto_policy_note(man)
    total = int(train_info["parameters"])
    active = active_parameters(c, total)
    metrics = []
    for key, label in (("float", "PyTorch float"), ("qat", "PyTorch QAT"),
                       ("runtime_exact", "fwassist exact"), ("runtime_fast", "fwassist fast")):
        if key in quality:
            q = quality[key]
            metrics.append({"type": "next-token accuracy", "value": str(q["next_token_accuracy"]),
                            "slice": f"held-out C files, {label}"})
            metrics.append({"type": "perplexity", "value": str(q["perplexity"]),
                            "slice": f"held-out C files, {label}"})
    return {
        "name": MODEL_NAME, "version": MODEL_VERSION,
        "description": "A tiny Qwen3-MoE C-code completion model (64 experts, top-8) trained "
                       "from scratch on permissively licensed C sources, quantization-aware, "
                       "for demonstrating and testing fwassist. Not a production assistant.",
        "license": "Apache-2.0",
        "supplier": "fwassist",
        "task": "text-generation",
        "approach": "self-supervised",
        "datasets": [{
            "name": "fwassist-tiny-c-corpus",
            "description": (f"{tot['files_train']} train / {tot['files_test']} held-out C source "
                            f"and header files ({tot['bytes_train']} / {tot['bytes_test']} "
                            f"bytes) from {tot['packages_accepted']} permissively licensed "
                            "PyPI source distributions; license-gated per package and per "
                            f"file, deduplicated, split by file; {export_control}"),
            "licenses": list(man["license_set"]),
            "sha256": hashlib.sha256(raw).hexdigest(),
            "files": tot["files_train"] + tot["files_test"],
            "sources": [f"{s['name']}=={s['version']}" for s in man["sources"]
                        if s["verdict"] == "accepted"],
        }],
        "use_cases": ["demonstrating and testing on-device completion of C code"],
        "performance_tradeoffs": [
            f"attention {plan.attention}-bit, experts {'/'.join(map(str, plan.experts))}-bit, "
            f"embedding and lm_head {plan.embed}-bit, blocks of 32, float16 scales"],
        "metrics": metrics,
        # No wall-clock figures: a re-run must give the same card, so the same artifact bytes.
        "training": {k: v for k, v in train_info.items() if not k.endswith("_minutes")},
        "quality": quality,
        "known_limitations": [
            f"a tiny model ({total / 1e6:.1f} M parameters, {active / 1e6:.1f} M active per "
            "token) trained for about an hour on two CPU cores: it continues C code "
            "with plausible syntax and idioms but does not understand programs; its code is "
            "not correct and must never be used unreviewed",
            "greedy decoding soon repeats itself; a repetition penalty (fwassist demo uses "
            "1.15) helps",
            "trained on 512-token windows: quality falls beyond 512 tokens of context",
            "trained only on C (general-purpose open-source libraries, not automotive or "
            "medical firmware); other languages and natural-language instructions are out of "
            "scope",
            "no instruction tuning, no safety tuning, no evaluation beyond next-token accuracy "
            "and perplexity on held-out files",
        ],
    }


def export(model: TinyCoder, plan: QuantPlan, tokenizer_path: str, out: str,
           card: dict[str, Any], name: str) -> tuple[str, str]:
    """QAT ONNX + config + tokenizer + card -> fwassist export -> (artifact path, pin)."""
    import shutil

    from fwassist.export.pipeline import export_onnx
    from fwassist.export.qat_builder import build_qat_onnx

    d = os.path.join(out, "onnx")
    os.makedirs(d, exist_ok=True)
    onnx_path = os.path.join(d, "model.onnx")
    if not os.path.exists(onnx_path):
        build_qat_onnx(onnx_path, model.hf_weights(), model.c.hf(), quant_spec_fn(plan),
                       naming="hf", config_json=True)
        shutil.copyfile(tokenizer_path, os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "card.json"), "w", encoding="utf-8") as f:
        json.dump(card, f, indent=1, sort_keys=True)
    art = os.path.join(out, name)
    pin = export_onnx(onnx_path, art)
    with open(art + ".pin", "w", encoding="ascii") as f:
        f.write(pin + "\n")
    return art, pin


def tensors_digest(path: str) -> str:
    from fwassist.artifact.inspect import inspect

    return inspect(path)["sections"]["tensors"]


def train_and_evaluate(model: TinyCoder, plan: QuantPlan, train: np.ndarray,
                       windows: np.ndarray, a: argparse.Namespace) -> tuple[dict, dict]:
    """Float phase, float evaluation, QAT phase, QAT evaluation; saves float.pt and qat.pt."""
    batches = Batches(train, a.seq, a.batch, a.seed)
    quality: dict[str, Any] = {}
    with open(os.path.join(a.out, "train_log.jsonl"), "w", encoding="utf-8") as logf:
        t0 = time.time()
        if a.init_float:
            model.load_state_dict(torch.load(a.init_float))
        else:
            run_phase("float", model, batches, a.float_steps, a.peak_lr, a.peak_lr / 10, 100,
                      a.aux, logf)
        t_float = time.time() - t0
        torch.save(model.state_dict(), os.path.join(a.out, "float.pt"))
        quality["float"] = eval_torch(model, windows)
        log(f"float: {quality['float']}")
        model.plan = plan
        quality["float_quantized_rtn"] = eval_torch(model, windows)
        log(f"float weights rounded to the plan (no QAT): {quality['float_quantized_rtn']}")
        t0 = time.time()
        run_phase("qat", model, batches, a.qat_steps, a.qat_lr, a.qat_lr / 10, 20, a.aux, logf)
        t_qat = time.time() - t0
    torch.save(model.state_dict(), os.path.join(a.out, "qat.pt"))
    quality["qat"] = eval_torch(model, windows)
    log(f"qat: {quality['qat']}")
    quality["qat_retains_float_accuracy"] = round(
        quality["qat"]["next_token_accuracy"] / quality["float"]["next_token_accuracy"], 4)
    train_info = {
        "seed": a.seed, "threads": a.threads, "torch": torch.__version__,
        "seq": a.seq, "batch": a.batch, "float_steps": a.float_steps, "qat_steps": a.qat_steps,
        "init_float": os.path.basename(a.init_float) if a.init_float else None,
        "tokens_seen": (a.float_steps + a.qat_steps) * a.batch * a.seq,
        "train_tokens": int(train.size),
        "float_minutes": round(t_float / 60, 1), "qat_minutes": round(t_qat / 60, 1),
    }
    return quality, train_info


def load_trained(model: TinyCoder, plan: QuantPlan, out: str) -> tuple[dict, dict, float]:
    """--export-only: the QAT weights, the PyTorch figures, the training info and the total
    minutes of an earlier run in OUT."""
    model.load_state_dict(torch.load(os.path.join(out, "qat.pt")))
    model.plan = plan
    with open(os.path.join(out, "quality.json"), "r", encoding="utf-8") as f:
        prev = json.load(f)
    keep = ("float", "float_quantized_rtn", "qat", "qat_retains_float_accuracy")
    return {k: prev[k] for k in keep}, prev["training"], float(prev["total_minutes"])


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--corpus", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokenizer", help="default: CORPUS/tokenizer.json")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--float-steps", type=int, default=1400)
    ap.add_argument("--qat-steps", type=int, default=350)
    ap.add_argument("--peak-lr", type=float, default=3e-3)
    ap.add_argument("--qat-lr", type=float, default=6e-4)
    ap.add_argument("--aux", type=float, default=0.01, help="balance-loss coefficient")
    ap.add_argument("--eval-windows", type=int, default=48)
    ap.add_argument("--expert-bits", default="3,3,3,3", help="per layer, e.g. 3,3,2,2")
    ap.add_argument("--moe-intermediate", type=int, default=64)
    ap.add_argument("--init-float", metavar="FLOAT_PT",
                    help="start from these float weights (skips the float phase), e.g. to try "
                         "other --expert-bits")
    ap.add_argument("--export-only", action="store_true",
                    help="re-export OUT/qat.pt with the figures of OUT/quality.json (no training)")
    a = ap.parse_args(argv)

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    torch.use_deterministic_algorithms(True)
    os.makedirs(a.out, exist_ok=True)
    tok_path = a.tokenizer or os.path.join(a.corpus, "tokenizer.json")
    t_start = time.time()

    train = token_stream(a.corpus, "train", tok_path)
    test = token_stream(a.corpus, "test", tok_path)
    with open(tok_path, "r", encoding="utf-8") as f:
        vocab = len(json.load(f)["model"]["vocab"])
    log(f"train {train.size} tokens, test {test.size} tokens, vocab {vocab}")
    windows = eval_windows(test, a.seq, a.eval_windows)

    cfg = TinyConfig(vocab_size=vocab, moe_intermediate_size=a.moe_intermediate,
                     max_position_embeddings=max(1024, a.seq))
    plan = QuantPlan(experts=tuple(int(b) for b in a.expert_bits.split(",")))
    if len(plan.experts) != cfg.num_hidden_layers:
        raise SystemExit("--expert-bits needs one width per layer")
    model = TinyCoder(cfg)
    model.init_weights(torch.Generator().manual_seed(a.seed))
    n_params = sum(p.numel() for p in model.parameters())
    log(f"{n_params / 1e6:.2f} M parameters")
    if a.export_only:
        quality, train_info, minutes = load_trained(model, plan, a.out)
    else:
        quality, train_info = train_and_evaluate(model, plan, train, windows, a)
        train_info.update(parameters=n_params, test_tokens=int(test.size))
    card = model_card(a.corpus, quality, plan, train_info, cfg)
    prov, _ = export(model, plan, tok_path, a.out, card, "provisional.fwa")
    for mode in ("exact", "fast"):
        quality[f"runtime_{mode}"] = eval_runtime(prov, windows, mode)
        log(f"runtime {mode}: {quality[f'runtime_{mode}']}")
    card = model_card(a.corpus, quality, plan, train_info, cfg)
    art, pin = export(model, plan, tok_path, a.out, card, "tiny-coder.fwa")
    if tensors_digest(art) != tensors_digest(prov):
        raise SystemExit("the final artifact's tensors differ from the measured provisional one")
    os.remove(prov)
    os.remove(prov + ".pin")
    quality["artifact"] = {"file": os.path.basename(art), "bytes": os.path.getsize(art),
                           "pin": pin}
    quality["training"] = train_info
    if not a.export_only:
        minutes = round((time.time() - t_start) / 60, 1)
    quality["total_minutes"] = minutes
    with open(os.path.join(a.out, "quality.json"), "w", encoding="utf-8") as f:
        json.dump(quality, f, indent=1, sort_keys=True)
    log(f"done: {art} {os.path.getsize(art)} bytes, {pin}; {quality['total_minutes']} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
