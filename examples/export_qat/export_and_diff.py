# SPDX-License-Identifier: Apache-2.0
"""From QAT ONNX to verified artifacts, and what changes between two expert bit widths.

Exports two QAT ONNX graphs of the same float weights that differ only in the bits of the MoE
experts (A: 4-bit, B: 2-bit by default) with ``fwassist export``, verifies each against the pin
the export printed (``fwassist verify --pin``), and writes ``fwassist inspect`` of both and
``fwassist diff A B`` as text and JSON, plus a summary table: file size, bits per parameter,
pin, and from each artifact's own evidence the exact-mode max relative logit error and the
fast-mode top-1 agreement against onnxruntime. Every step runs the ``fwassist`` command line,
as a user would.

Without ``--onnx`` the script builds a small Qwen3-MoE itself (64 experts, top-8, random
weights, a byte-level tokenizer) with ``fwassist.export.qat_builder``: attention projections
4-bit in both graphs, experts ``--bits-a`` vs ``--bits-b``, integer codes -> DequantizeLinear
with float16 scales; router, embedding and lm_head stay float. With ``--onnx`` graph A is yours
and graph B is rebuilt from A's dequantized weights with the experts at ``--bits-b`` and every
other quantized weight at A's format (re-quantizing may move a few of their codes: the diff
then also lists those tensors as weight changes).

Run::

    python examples/export_qat/export_and_diff.py --out /tmp/qat-demo
    python examples/export_qat/export_and_diff.py --out /tmp/mine --onnx model.onnx \\
        --config config.json --tokenizer tokenizer.json [--card card.json] [--bits-b 2]

Output in DIR: ``a.fwa``, ``b.fwa``, ``inspect-{a,b}.{txt,json}``, ``diff.{txt,json}``,
``summary.{txt,json}`` (and ``a/``, ``b/``: the generated QAT ONNX graphs). Exit codes: 0 ok,
1 an export was refused, 2 bad arguments, 3 an artifact failed verification.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

EXIT_OK, EXIT_EXPORT, EXIT_USAGE, EXIT_INVALID = 0, 1, 2, 3
EXPERT_ROLES = ("expert_gate", "expert_up", "expert_down")
ATTENTION_ROLES = ("q_proj", "k_proj", "v_proj", "o_proj")
DIFF_USAGE, DIFF_INVALID = 2, 3          # the other `fwassist diff` exit codes are classes
LIMITATION = "example export (examples/export_qat): random weights, generates noise, not code"


class Failure(Exception):
    """A step failed; ``code`` is the script's exit code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Variant:
    """One QAT ONNX graph and the artifact exported from it."""

    key: str                      # "a" or "b": file names in the output directory
    label: str                    # what differs, for the summary
    onnx: Path
    config: Optional[Path]
    tokenizer: Optional[Path]
    card: Optional[Path]
    fwa: Path


def log(msg: str) -> None:
    print(f"[export_and_diff] {msg}", file=sys.stderr, flush=True)


def fwassist(*args: str) -> subprocess.CompletedProcess:
    """Runs the ``fwassist`` command line of this interpreter; progress goes to our stderr."""
    return subprocess.run([sys.executable, "-m", "fwassist", *args], stdout=subprocess.PIPE,
                          text=True)


# ---------------------------------------------------------------------------------------------
# the QAT ONNX graphs


def spec(bits: int, block: Optional[int], symmetric: bool = True, f16: bool = True) -> Any:
    """A QuantSpec: integer codes -> DequantizeLinear (2, 4, 8 bits) or fake quant
    Q -> Clip -> DQ (3 bits, which no ONNX integer type declares; float32 scales)."""
    from fwassist.export.qat_builder import QuantSpec

    if bits == 3:
        return QuantSpec(pattern="qcdq", bits=3, block=block, symmetric=symmetric)
    return QuantSpec(pattern="dq", bits=bits, block=block, symmetric=symmetric,
                     scale_dtype="float16" if f16 else "float32")


def write_graph(d: Path, weights: dict, config: dict, quant: Callable[[str, str], Any],
                tokenizer: Optional[dict], card: dict) -> None:
    """model.onnx, config.json, tokenizer.json (if any) and card.json in ``d``."""
    from fwassist.export.qat_builder import build_qat_onnx

    d.mkdir(parents=True, exist_ok=True)
    build_qat_onnx(str(d / "model.onnx"), weights, config, quant, config_json=True)
    if tokenizer is not None:
        (d / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    (d / "card.json").write_text(json.dumps(card, indent=1), encoding="utf-8")


def variant_in(out: Path, key: str, label: str, d: Path) -> Variant:
    tok = d / "tokenizer.json"
    return Variant(key, label, d / "model.onnx", d / "config.json",
                   tok if tok.is_file() else None, d / "card.json", out / f"{key}.fwa")


def builtin_variants(out: Path, bits_a: int, bits_b: int, seed: int) -> list[Variant]:
    """Two graphs of one random 64-expert top-8 model: experts at bits_a and bits_b."""
    from fwassist.export.qat_builder import random_weights, tiny_config
    from fwassist.export.synthetic import byte_tokenizer

    # Experts of 3 x 128 x 64 weights: big enough that the bit width shows in the file size
    # (each expert block is padded to a 4 KiB page, docs/artifact-format.md).
    config = tiny_config(vocab_size=320, hidden_size=128, head_dim=32, intermediate_size=128,
                         moe_intermediate_size=64, num_experts=64, num_experts_per_tok=8)
    weights = random_weights(config, seed=seed)
    card = {"name": "export-qat-example", "known_limitations": [LIMITATION]}
    variants = []
    for key, bits in (("a", bits_a), ("b", bits_b)):
        def quant(name: str, role: str, bits: int = bits) -> Any:
            if role in EXPERT_ROLES:
                return spec(bits, 32)
            return spec(4, 32) if role in ATTENTION_ROLES else None

        write_graph(out / key, weights, config, quant, byte_tokenizer(), card)
        variants.append(variant_in(out, key, f"experts {bits}-bit, attention 4-bit",
                                   out / key))
    log(f"built two QAT ONNX graphs (64 experts, top-8): experts {bits_a}-bit and "
        f"{bits_b}-bit, attention 4-bit, DequantizeLinear with float16 scales")
    return variants


def derived_variants(out: Path, args: argparse.Namespace) -> list[Variant]:
    """A: the user's graph. B: its dequantized weights with the experts at --bits-b."""
    from fwassist.export.model import QuantizedWeight
    from fwassist.export.onnx_import import import_onnx
    from fwassist.export.reference import dequantize

    onnx = Path(args.onnx)
    card_path = Path(args.card) if args.card else onnx.parent / "card.json"
    if not onnx.is_file():
        raise Failure(EXIT_USAGE, f"{onnx}: no such file")
    if not card_path.is_file():
        raise Failure(EXIT_USAGE, "export needs a model card: pass --card card.json (or put "
                                  "card.json beside the model) with \"known_limitations\"")
    from fwassist.export.tensors import OnnxImportError

    try:
        model = import_onnx(str(onnx), config_path=args.config, tokenizer_path=args.tokenizer)
    except OnnxImportError as e:
        raise Failure(EXIT_EXPORT, f"cannot import {onnx}: {e}") from None
    formats = {t.name: t.value for t in model.tensors if isinstance(t.value, QuantizedWeight)}

    def quant(name: str, role: str) -> Any:
        v = formats.get(name)
        if role in EXPERT_ROLES:
            return spec(args.bits_b, v.block if v is not None else 32)
        if v is None:
            return None
        K = v.q.shape[1]
        return spec(v.bits, v.block if v.block <= K else None, v.zero_points is None,
                    v.scales.dtype.itemsize == 2)

    card = json.loads(card_path.read_text(encoding="utf-8"))
    card = dict(card, known_limitations=list(card.get("known_limitations") or []) + [
        f"example re-quantization of {onnx.name} with {args.bits_b}-bit experts"])
    weights = {t.name: dequantize(t.value) for t in model.tensors}
    write_graph(out / "b", weights, model.config, quant, model.tokenizer, card)
    bits_a = sorted({formats[t.name].bits for t in model.tensors
                     if t.role in EXPERT_ROLES and t.name in formats})
    a = Variant("a", f"{onnx.name}: experts {'/'.join(map(str, bits_a)) or 'float'}-bit",
                onnx, Path(args.config) if args.config else None,
                Path(args.tokenizer) if args.tokenizer else None, card_path, out / "a.fwa")
    b = variant_in(out, "b", f"re-quantized: experts {args.bits_b}-bit", out / "b")
    log(f"A is {onnx}; built B from its dequantized weights with {args.bits_b}-bit experts")
    return [a, b]


# ---------------------------------------------------------------------------------------------
# export, verify, inspect, diff (the command line)


def export(v: Variant) -> str:
    cmd = ["export", str(v.onnx), "-o", str(v.fwa), "--force"]  # a rerun replaces its output
    for flag, p in (("--config", v.config), ("--tokenizer", v.tokenizer), ("--card", v.card)):
        if p is not None:
            cmd += [flag, str(p)]
    log(f"fwassist {' '.join(cmd)}")
    r = fwassist(*cmd)
    if r.returncode != 0:
        raise Failure(EXIT_EXPORT, f"fwassist export refused {v.onnx} (exit {r.returncode})")
    return r.stdout.strip().splitlines()[-1]


def verify(v: Variant, pin: str) -> None:
    r = fwassist("verify", str(v.fwa), "--pin", pin)
    if r.returncode != 0:
        raise Failure(EXIT_INVALID, f"{v.fwa} failed verification against {pin} "
                                    f"(exit {r.returncode})")
    log(f"verified {v.fwa.name}: {r.stdout.strip().splitlines()[0]}")


def report(out: Path, name: str, *args: str, ok: Callable[[int], bool]) -> tuple[str, Any]:
    """Runs ``fwassist ARGS`` and ``... --json``, writes NAME.txt and NAME.json."""
    text = fwassist(*args)
    js = fwassist(*args, "--json")
    for r in (text, js):
        if not ok(r.returncode):
            raise Failure(EXIT_INVALID, f"fwassist {' '.join(args)} failed (exit "
                                        f"{r.returncode})")
    (out / f"{name}.txt").write_text(text.stdout, encoding="utf-8")
    (out / f"{name}.json").write_text(js.stdout, encoding="utf-8")
    return text.stdout, json.loads(js.stdout)


# ---------------------------------------------------------------------------------------------
# the summary


def evidence_figures(ev: dict[str, Any]) -> tuple[Optional[float], Optional[float]]:
    """(exact-mode max relative logit error over the probes, fast-mode top-1 agreement over
    the compared positions), from an artifact's evidence; None when not measured."""
    probes = [p for p in ev.get("probes", []) if "runtime_exact_max_rel_error" in p]
    if not ev.get("measured") or not probes:
        return None, None
    exact = max(float(p["runtime_exact_max_rel_error"]) for p in probes)
    n = [int(p["tokens"]) - int(p["excluded_router_ties"]) for p in probes]
    agree = sum(k * float(p["runtime_fast_top1_agreement"]) for k, p in zip(n, probes))
    return exact, round(agree / sum(n), 4) if sum(n) else None


def summary_row(v: Variant, pin: str, info: dict[str, Any]) -> dict[str, Any]:
    exact, fast = evidence_figures(info["evidence"])
    return {"artifact": v.fwa.name, "label": v.label, "file_bytes": info["file_length"],
            "bits_per_param": info["totals"]["bits_per_param"],
            "exact_max_rel_error": exact, "fast_top1_agreement": fast, "pin": pin,
            "path": str(v.fwa)}


def render_summary(rows: list[dict[str, Any]], diff_class: str, diff_code: int) -> str:
    def fmt(x: Optional[float], f: str) -> str:
        return "n/a" if x is None else format(x, f)

    head = ("artifact", "size KiB", "bits/param", "exact max rel err", "fast top-1", "pin")
    cells = [head] + [(r["artifact"], f"{r['file_bytes'] / 1024:.1f}",
                       f"{r['bits_per_param']:.3f}", fmt(r["exact_max_rel_error"], ".2e"),
                       fmt(r["fast_top1_agreement"], ".3f"), r["pin"]) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    lines += [""] + [f"{r['artifact']}: {r['label']}" for r in rows]
    lines.append(f"fwassist diff a.fwa b.fwa: class {diff_class} (exit {diff_code})")
    return "\n".join(lines) + "\n"


def head(text: str, n: int) -> str:
    lines = text.splitlines()
    more = f"\n  ... ({len(lines) - n} more lines)" if len(lines) > n else ""
    return "\n".join(lines[:n]) + more


def inspect_digest(text: str) -> str:
    """The identity lines and the totals by format of an ``fwassist inspect`` report."""
    lines = text.splitlines()
    try:
        cut, fmt, role = (lines.index(k) for k in ("config", "totals by format",
                                                    "totals by role"))
    except ValueError:
        return head(text, 12)
    return "\n".join(lines[:cut] + lines[fmt:role])


def run(args: argparse.Namespace) -> int:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    variants = (derived_variants(out, args) if args.onnx else
                builtin_variants(out, args.bits_a, args.bits_b, args.seed))
    rows = []
    for v in variants:
        pin = export(v)
        verify(v, pin)
        text, info = report(out, f"inspect-{v.key}", "inspect", str(v.fwa),
                            ok=lambda c: c == 0)
        print(f"== fwassist inspect {v.fwa} (full report: inspect-{v.key}.txt/.json)")
        print(inspect_digest(text) + "\n")
        rows.append(summary_row(v, pin, info))
    a, b = (str(v.fwa) for v in variants)
    text, d = report(out, "diff", "diff", a, b, ok=lambda c: c not in (DIFF_USAGE, DIFF_INVALID))
    print(f"== fwassist diff {a} {b} (full report: diff.txt/.json)")
    print(head(text, 8) + "\n")
    summary = render_summary(rows, d["class"], d["exit_code"])
    (out / "summary.txt").write_text(summary, encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(
        {"rows": rows, "diff": {"class": d["class"], "exit_code": d["exit_code"]}}, indent=1),
        encoding="utf-8")
    print("== summary (summary.txt/.json; evidence measured at export against onnxruntime)")
    print(summary, end="")
    return EXIT_OK


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--out", required=True, metavar="DIR", help="output directory")
    p.add_argument("--onnx", metavar="MODEL.onnx",
                   help="your QAT ONNX as graph A (default: build a small one)")
    p.add_argument("--config", help="config.json of --onnx (default: beside it or metadata)")
    p.add_argument("--tokenizer", help="tokenizer.json of --onnx (default: beside it)")
    p.add_argument("--card", help="card.json of --onnx (default: beside it)")
    p.add_argument("--bits-a", type=int, choices=(2, 3, 4, 8), default=4,
                   help="expert bits of the built-in graph A (default 4)")
    p.add_argument("--bits-b", type=int, choices=(2, 3, 4, 8), default=2,
                   help="expert bits of graph B (default 2)")
    p.add_argument("--seed", type=int, default=7, help="seed of the built-in random weights")
    args = p.parse_args(argv)
    if not args.onnx and (args.config or args.tokenizer or args.card):
        p.error("--config, --tokenizer and --card go with --onnx")
    if args.onnx and not os.path.isfile(args.onnx):
        p.error(f"--onnx {args.onnx}: no such file")
    try:
        return run(args)
    except Failure as e:
        print(f"export_and_diff: error: {e}", file=sys.stderr)
        return e.code


if __name__ == "__main__":
    sys.exit(main())
