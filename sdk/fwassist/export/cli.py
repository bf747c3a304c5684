"""``fwassist export MODEL.onnx -o OUT.fwa`` (exit 0, or 1 when the model is refused)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def _cmd_export(args: argparse.Namespace) -> int:
    from .pipeline import export_onnx
    from .tensors import OnnxImportError

    try:
        pin = export_onnx(args.model, args.output, config_path=args.config,
                          tokenizer_path=args.tokenizer, card_path=args.card,
                          evidence=not args.no_evidence, quiet=args.quiet)
    except (OnnxImportError, ValueError, OSError) as e:
        print(f"fwassist export: error: {e}", file=sys.stderr)
        return 1
    except ImportError as e:    # an optional package of the [export] extra is missing
        print(f"fwassist export: error: {e}", file=sys.stderr)
        return 1
    print(pin)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("export", help="QAT ONNX or safetensors checkpoint -> pinned .fwa")
    p.add_argument("model", help="the checkpoint: an ONNX file or a Hugging Face safetensors "
                                 "directory (float, compressed-tensors pack-quantized or "
                                 "torchao intx)")
    p.add_argument("-o", "--output", required=True, help="the artifact to write")
    p.add_argument("--config", help="Hugging Face config.json (default: beside the model)")
    p.add_argument("--tokenizer", help="tokenizer.json (default: beside the model)")
    p.add_argument("--card", help="model card JSON with known_limitations (default: card.json "
                                  "beside the model)")
    p.add_argument("--no-evidence", action="store_true",
                   help="skip the onnxruntime equivalence measurement")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(fn=_cmd_export)
