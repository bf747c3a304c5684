# SPDX-License-Identifier: Apache-2.0
"""The runtime fails closed (issue 14): NaN/Inf weights refused at open (or on a lazily
verified expert's first use), values that overflow float32 reported as ``non_finite`` in both
modes, sampling parameters that would overflow refused by name, and a stream superseded by a
later call on its session refused instead of continuing from another context."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest

import fwassist
from artifact_fixtures import assemble, sha, split
from fwassist.loader import ArtifactError

MODES = ("exact", "fast")


@pytest.fixture(scope="module")
def built(build_tiny_model):
    return build_tiny_model(bits=4)


@pytest.fixture(scope="module")
def model(built) -> fwassist.Model:
    return fwassist.Model.load(built[0])


def resealed(src: str, dst: Path, names: list[str],
             patch: Callable[[np.ndarray, dict], None]) -> str:
    """A copy of `src` with patch(bytes of the tensor, its entry) applied to each tensor of
    `names`, and its digests (tensor, expert block, sections, header) resealed."""
    manifest, data = split(Path(src).read_bytes())
    buf = np.frombuffer(bytearray(data), dtype=np.uint8)
    for name in names:
        t = next(t for t in manifest["tensors"] if t["name"] == name)
        view = buf[t["offset"]:t["offset"] + t["length"]]
        patch(view, t)
        t["sha256"] = sha(view.tobytes())
        for b in manifest["expert_blocks"]:
            if b["offset"] <= t["offset"] < b["offset"] + b["length"]:
                b["sha256"] = sha(buf[b["offset"]:b["offset"] + b["length"]].tobytes())
    dst.write_bytes(assemble(manifest, buf.tobytes()))
    return str(dst)


def set_f32(index: int, value: float) -> Callable[[np.ndarray, dict], None]:
    def patch(view: np.ndarray, t: dict) -> None:
        assert t["dtype"] == "f32"
        view.view("<f4")[index] = value
    return patch


def norm_name(model_path: str, role: str, layer: int | None) -> str:
    manifest, _ = split(Path(model_path).read_bytes())
    return next(t["name"] for t in manifest["tensors"]
                if t["role"] == role and t["layer"] == layer)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_norm_refused_at_open(built, tmp_path, value):
    name = norm_name(built[0], "input_norm", 0)
    path = resealed(built[0], tmp_path / "nan.fwa", [name], set_f32(3, value))
    for lazy in (False, True):
        with pytest.raises(ArtifactError) as e:
            fwassist.Model.load(path, lazy=lazy)
        assert e.value.status == "non_finite"
        assert name in e.value.message and "column 3" in e.value.message


def test_resealing_alone_keeps_the_model_loadable(built, tmp_path):
    name = norm_name(built[0], "input_norm", 0)
    path = resealed(built[0], tmp_path / "same.fwa", [name], lambda v, t: None)
    fwassist.Model.load(path)


@pytest.mark.parametrize("mode", MODES)
def test_overflow_is_non_finite_in_both_modes(built, tmp_path, mode):
    # Finite but huge final-norm weights: the logits overflow float32. Exact mode used to
    # emit token 0 forever.
    name = norm_name(built[0], "final_norm", None)
    manifest, _ = split(Path(built[0]).read_bytes())
    n = next(t for t in manifest["tensors"] if t["name"] == name)["shape"][0]

    def huge(view: np.ndarray, t: dict) -> None:
        view.view("<f4")[:] = np.float32(3e38)
    path = resealed(built[0], tmp_path / "huge.fwa", [name], huge)
    m = fwassist.Model.load(path)
    assert n > 0
    with m.session(mode=mode) as s:
        with pytest.raises(ArtifactError) as e:
            s.logits([1, 2, 3])
        assert e.value.status == "non_finite"
        assert s.n_past == 0
        with pytest.raises(ArtifactError, match="non_finite"):
            s.generate(prompt_ids=[1, 2, 3], max_tokens=4)


@pytest.mark.parametrize("kw", [dict(temperature=1e-38), dict(temperature=1e-45),
                                dict(temperature=1e-50), dict(temperature=1e-300),
                                dict(temperature=5e-4), dict(temperature=1e39),
                                dict(temperature=float("inf")), dict(temperature=2000.0),
                                dict(top_p=float("nan")), dict(top_p=1e-50),
                                dict(repetition_penalty=1e-38), dict(repetition_penalty=1e38),
                                dict(repetition_penalty=float("nan"))])
def test_sampling_parameters_that_overflow_are_refused(model, kw):
    (name, _), = kw.items()
    with model.session() as s:
        with pytest.raises(ValueError, match=name):
            s.stream(prompt_ids=[1, 2, 3], max_tokens=2, **kw)
        assert s.n_past == 0  # refused before any work


def test_sampling_range_edges_are_accepted(model):
    with model.session() as s:
        for kw in (dict(temperature=1e-3, repetition_penalty=1e3),
                   dict(temperature=1e3, repetition_penalty=1e-3), dict(temperature=0.0)):
            s.generate(prompt_ids=[1, 2, 3], max_tokens=2, seed=1, **kw)


def test_interleaved_streams_are_refused(model):
    with model.session() as s:
        a = s.stream(prompt_ids=[5, 6, 7], max_tokens=8)
        next(a)
        b = s.stream(prompt_ids=[9, 10, 11, 12], max_tokens=8)
        with pytest.raises(RuntimeError, match="superseded"):
            next(a)
        with pytest.raises(RuntimeError, match="superseded"):  # for good
            next(a)
        got = [t.id for t in b]
    with model.session() as ref:
        want = ref.generate(prompt_ids=[9, 10, 11, 12], max_tokens=8).token_ids
    assert got == want  # b continued from its own prompt only


@pytest.mark.parametrize("call", ["logits", "truncate", "reset", "generate"])
def test_any_context_change_supersedes_a_stream(model, call):
    with model.session() as s:
        a = s.stream(prompt_ids=[5, 6, 7], max_tokens=8)
        next(a)
        if call == "logits":
            s.logits([3])
        elif call == "truncate":
            s.truncate(2)
        elif call == "reset":
            s.reset()
        else:
            s.generate(prompt_ids=[1, 2], max_tokens=2)
        with pytest.raises(RuntimeError, match="superseded"):
            next(a)


def test_a_finished_stream_just_stops(model):
    with model.session() as s:
        a = s.stream(prompt_ids=[5, 6, 7], max_tokens=2)
        list(a)
        s.logits([4])
        with pytest.raises(StopIteration):
            next(a)
        assert a.result is not None and len(a.result.token_ids) == 2
