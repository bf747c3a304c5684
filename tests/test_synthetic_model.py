# SPDX-License-Identifier: Apache-2.0
"""The synthetic models of fwassist.export.synthetic (CI smoke runs, tests, benchmarks) route
like a MoE model should: consecutive tokens pick different experts. Version 1 did not (every
weight at 1/sqrt(K): the attention output, near the same for every token, drowned the token's
embedding): 17-36 distinct experts of 64 per layer over 16 random tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np

import fwassist
from fwassist.artifact.writer import write_artifact
from fwassist.export.synthetic import synthetic_config, synthetic_model


def test_random_tokens_route_like_random_routing(tmp_path: Path) -> None:
    cfg = synthetic_config()
    path = tmp_path / "synthetic.fwa"
    write_artifact(str(path), synthetic_model(cfg, bits=3, seed=0),
                   model_card={"known_limitations": ["random weights"]}, options={},
                   evidence={"measured": False}, exporter_version="test")
    E, k, n = cfg["num_experts"], cfg["num_experts_per_tok"], 16
    feed = [int(t) for t in np.random.default_rng(1).integers(0, 256, n + 1)]
    with fwassist.Model.load(path).session(max_context=32, mode="exact", threads=1) as s:
        s.logits(feed[:1])          # the first token attends to itself only: not counted
        before = s.expert_tokens().copy()
        for t in feed[1:]:
            s.logits([t])
        routed = s.expert_tokens() - before
    assert routed.shape == (cfg["num_hidden_layers"], E)
    assert [int(r.sum()) for r in routed] == [n * k] * cfg["num_hidden_layers"]
    # Uniformly random top-k routing reaches E (1 - (1 - k/E)^n) = 56.4 distinct experts.
    random_distinct = E * (1 - (1 - k / E) ** n)
    distinct = [int(np.count_nonzero(r)) for r in routed]
    assert min(distinct) >= 0.85 * random_distinct, distinct
    # The k most used experts of a layer take ~27 % of the routings under random routing.
    top_share = [float(np.sort(r)[::-1][:k].sum()) / (n * k) for r in routed]
    assert max(top_share) < 0.4, top_share
