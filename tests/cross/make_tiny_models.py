# SPDX-License-Identifier: Apache-2.0
"""Builds, on the host, the tiny models that test_runtime_api.py and test_capi_cffi.py load
(tests/model_fixtures.py: QAT ONNX graph, onnxruntime's check of its logits, export to .fwa),
so that their aarch64 run under qemu-user, which cannot import onnxruntime, finds them ready:
tests/cross/run_python_aarch64.sh points FWA_TINY_MODELS (tests/conftest.py) at DIR.

Usage: python tests/cross/make_tiny_models.py DIR
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from model_fixtures import build_model  # noqa: E402  (tests/ joins the path first)


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    # Every build_tiny_model(...) call of the two test files: the 4-bit model with and without
    # a tokenizer.
    for tokenizer in (True, False):
        built = build_model(out, bits=4, tokenizer=tokenizer)
        print(f"bits=4 tokenizer={tokenizer}: {built.fwa_path}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
