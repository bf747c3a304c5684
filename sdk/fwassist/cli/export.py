# SPDX-License-Identifier: Apache-2.0
"""``fwassist export MODEL.onnx -o OUT.fwa`` (exit 0; 1 when the model is refused; 2 when an
input is missing or the output cannot be written, found before any work).

The output is written atomically. An existing output is replaced only with ``--force``, and
never when it is one of the export's inputs: the model, its external data files, the config,
the tokenizer or the model card. The evidence step writes a provisional copy of the artifact
into a private directory under the temporary directory ($TMPDIR), removed on exit, SIGTERM and
Ctrl-C; a killed export leaves nothing beside its output.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Optional


def _beside(model: str, name: str) -> str:
    d = model if os.path.isdir(model) else os.path.dirname(os.path.abspath(model))
    return os.path.join(d, name)


def check_paths(args: argparse.Namespace) -> None:
    """Before any work: the output's directory is writable, the output is not an input, and it
    exists only with --force. ValueError otherwise."""
    from ..outpath import check_output_file
    from ..export.pipeline import weight_files

    inputs: list[Optional[str]] = [args.model, args.config, args.tokenizer, args.card,
                                  args.map]
    inputs += [_beside(args.model, n) for n in ("config.json", "tokenizer.json", "card.json")]
    if os.path.lexists(args.output):
        # Only an existing file can be an input: the external data files are looked up (the
        # graph parsed without its data) only then.
        inputs += weight_files(args.model)
    check_output_file(args.output, "export -o", inputs, force=args.force)


def _cmd_export(args: argparse.Namespace) -> int:
    from ..textsafe import printable
    from ..export.pipeline import export_onnx
    from ..export.tensors import OnnxImportError

    try:
        check_paths(args)
    except OnnxImportError as e:  # the model's external data cannot be resolved
        print(f"fwassist export: error: {printable(e)}", file=sys.stderr)
        return 1
    table: Optional[list[dict[str, Any]]] = [] if args.explain else None
    try:
        pin = export_onnx(args.model, args.output, config_path=args.config,
                          tokenizer_path=args.tokenizer, card_path=args.card,
                          evidence=not args.no_evidence, quiet=args.quiet,
                          map_path=args.map, explain=table)
    except (OnnxImportError, ValueError, OSError) as e:
        if table:
            print_table(table)
        print(f"fwassist export: error: {printable(e)}", file=sys.stderr)
        return 1
    except ImportError as e:    # an optional package of the [export] extra is missing
        print(f"fwassist export: error: {printable(e)}", file=sys.stderr)
        return 1
    if table is not None:
        print_table(table)
    print(pin)
    return 0


def print_table(rows: list[dict[str, Any]]) -> None:
    """--explain: every weight -> role, layer, expert, and the signal that decided it."""
    from ..textsafe import printable

    head = ("weight", "node", "role", "layer", "expert", "decided by")
    cells = [[printable(str(r["weight"])), printable(str(r["node"])), r["role"],
              "" if r["layer"] is None else str(r["layer"]),
              "" if r["expert"] is None else str(r["expert"]), r["signal"]] for r in rows]
    w = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
         for i, h in enumerate(head)]
    for line in [list(head)] + cells:
        print("  ".join(c.ljust(w[i]) for i, c in enumerate(line)).rstrip())


def register(subparsers: Any) -> None:
    from . import input_file

    def source(s: str) -> str:  # an ONNX file, or a checkpoint directory
        return s if os.path.isdir(s) else input_file(s)

    p = subparsers.add_parser("export", help="QAT ONNX or safetensors checkpoint -> pinned .fwa",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", type=source,
                   help="the checkpoint: an ONNX file or a Hugging Face safetensors directory "
                        "(float, compressed-tensors pack-quantized or torchao intx)")
    p.add_argument("-o", "--output", required=True,
                   help="the artifact to write (its directory must exist)")
    p.add_argument("--force", action="store_true",
                   help="replace an existing output file (never one of the inputs)")
    p.add_argument("--config", type=input_file,
                   help="Hugging Face config.json (default: beside the model)")
    p.add_argument("--tokenizer", type=input_file,
                   help="tokenizer.json (default: beside the model)")
    p.add_argument("--card", type=input_file,
                   help="model card JSON with known_limitations (default: card.json beside "
                        "the model)")
    p.add_argument("--no-evidence", action="store_true",
                   help="skip the onnxruntime equivalence measurement")
    p.add_argument("--explain", action="store_true",
                   help="print the mapping table: every weight -> role, layer, expert, and the "
                        "signal that decided it (Hugging Face name, node name_scopes, "
                        "neighbours' name_scopes, graph structure, --map)")
    p.add_argument("--map", type=input_file, metavar="MAPPING.json",
                   help="role map overriding the automatic mapping: a JSON object of "
                        "initializer or node name -> Hugging Face parameter name, e.g. "
                        "{\"val_117_Q4\": \"model.layers.0.mlp.experts.1.gate_proj.weight\"}")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    p.set_defaults(fn=_cmd_export)
