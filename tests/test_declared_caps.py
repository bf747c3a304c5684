# SPDX-License-Identifier: Apache-2.0
"""Caps on the sizes a manifest declares (docs/artifact-format.md §3.8): an artifact whose
tokenizer or config declares more than the caps is refused quickly and without a large
allocation by every reader (Model.load, load_artifact, the Python verifier, the CLI) and is
never written by the exporter. The reviewer's case: one token id of 1e8 in an otherwise valid,
re-sealed artifact cost ~3.2 GB and 4-6 s in Model.load, and `fwassist verify` passed it."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import fwassist
from fwassist import ArtifactError, load_artifact
from fwassist.artifact import pyverify
from fwassist.artifact.writer import write_artifact
from fwassist.models import tiny_coder_path

import artifact_fixtures as fx
from test_artifact_writer import make_model, model_card

TESTS = Path(__file__).resolve().parent
MAX_TOKEN_ID = 1 << 21


def resealed(edit) -> tuple[bytes, str]:
    """The bundled model with its manifest edited and sealed again (sections, digest): a valid
    looking artifact whose correct pin is returned with it."""
    m, data = fx.split(Path(tiny_coder_path()).read_bytes())
    edit(m)
    blob = fx.assemble(m, data)
    return blob, "sha256:" + hashlib.sha256(fx.manifest_bytes(blob)).hexdigest()


def big_added_id(m: dict) -> None:
    m["tokenizer"]["added_tokens"][0]["id"] = 100_000_000


@pytest.fixture(scope="module")
def reviewer_case(tmp_path_factory) -> tuple[Path, str]:
    blob, pin = resealed(big_added_id)
    p = tmp_path_factory.mktemp("caps") / "big-id.fwa"
    p.write_bytes(blob)
    return p, pin


def test_bundled_model_round_trips_through_the_fixture_sealer():
    """resealed() changes nothing but the edit: the unedited manifest gives the same pin."""
    blob, pin = resealed(lambda m: None)
    assert blob == Path(tiny_coder_path()).read_bytes()
    assert load_artifact(blob).pin == pin


def _measure(code: str) -> dict:
    """Runs `code` (which sets `result`) in a fresh interpreter; returns result with the
    wall time and the growth of the peak RSS (MB) during it."""
    prog = textwrap.dedent("""
        import json, resource, time
        import fwassist
        from fwassist.artifact import pyverify
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.perf_counter()
        result = {}
    """) + textwrap.dedent(code) + textwrap.dedent("""
        result["seconds"] = time.perf_counter() - t0
        result["rss_mb"] = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0) / 1024
        print(json.dumps(result))
    """)
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True,
                         timeout=120, cwd=TESTS)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("how", ["Model.load", "load_artifact", "pyverify"])
def test_reviewer_case_is_refused_fast_and_small(reviewer_case, how: str):
    path, pin = reviewer_case
    call = {
        "Model.load": f"fwassist.Model.load({str(path)!r}, pin={pin!r})",
        "load_artifact": f"fwassist.load_artifact({str(path)!r}, pin={pin!r})",
        "pyverify": f"pyverify.verify({str(path)!r}, pin={pin!r})",
    }[how]
    r = _measure(f"""
        try:
            {call}
            result["status"] = "ok"
        except (fwassist.ArtifactError, pyverify.PyArtifactError) as e:
            result["status"], result["message"] = e.status, e.message
    """)
    assert r["status"] == "cap_exceeded", r
    assert "100000000" in r["message"] and str(MAX_TOKEN_ID) in r["message"], r
    assert r["seconds"] < 2.0, r
    assert r["rss_mb"] < 200, r


def test_reviewer_case_fails_fwassist_verify(reviewer_case):
    path, pin = reviewer_case
    out = subprocess.run([sys.executable, "-m", "fwassist", "verify", str(path), "--pin", pin],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "cap_exceeded" in out.stderr and "100000000" in out.stderr


CASES = {
    "vocab id at the cap": (lambda m: m["tokenizer"]["model"]["vocab"].update(
        {"Ġcap": MAX_TOKEN_ID}), "tokenizer.model.vocab"),
    "added token id at the cap": (lambda m: m["tokenizer"]["added_tokens"][0].update(
        id=MAX_TOKEN_ID), "tokenizer.added_tokens"),
    "too many added tokens": (lambda m: m["tokenizer"].update(
        added_tokens=[{}] * 65537), "65537"),
    "too many merges": (lambda m: m["tokenizer"]["model"].update(
        merges=["a b"] * ((1 << 21) + 1)), "model.merges"),
    "config vocab_size": (lambda m: m["config"].update(vocab_size=(1 << 21) + 1),
                          "config.vocab_size"),
    "config num_experts": (lambda m: m["config"].update(num_experts=65537),
                           "config.num_experts"),
    "config max_position_embeddings": (lambda m: m["config"].update(
        max_position_embeddings=(1 << 24) + 1), "config.max_position_embeddings"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_cap_is_refused_by_both_readers(case: str, tmp_path):
    edit, named = CASES[case]
    blob, _ = resealed(edit)
    with pytest.raises(ArtifactError) as native:
        load_artifact(blob)
    p = tmp_path / "a.fwa"
    p.write_bytes(blob)
    with pytest.raises(pyverify.PyArtifactError) as py:
        pyverify.verify(p)
    assert native.value.status == py.value.status == "cap_exceeded"
    assert named in native.value.message and named in py.value.message


def test_sizes_at_the_caps_are_accepted(tmp_path):
    def edit(m: dict) -> None:
        m["tokenizer"]["model"]["vocab"]["Ġcap"] = MAX_TOKEN_ID - 1
        m["config"]["max_position_embeddings"] = 1 << 24

    blob, _ = resealed(edit)
    load_artifact(blob)
    p = tmp_path / "a.fwa"
    p.write_bytes(blob)
    pyverify.verify(p)
    # Model.load: the id below the cap is accepted by the tokenizer; the config's vocab_size
    # (4096) is then smaller than the tokenizer's ids, which the binder reports.
    with pytest.raises(ArtifactError, match="the tokenizer has 2097152 ids"):
        fwassist.Model.load(p)


def test_tokenizer_from_json_refuses_a_huge_id_quickly(tmp_path):
    m, _ = fx.split(Path(tiny_coder_path()).read_bytes())
    bad = copy.deepcopy(m["tokenizer"])
    bad["added_tokens"][0]["id"] = 100_000_000
    p = tmp_path / "tokenizer.json"
    p.write_text(json.dumps(bad), encoding="utf-8")
    r = _measure(f"""
        from fwassist import Tokenizer
        text = open({str(p)!r}, encoding="utf-8").read()
        try:
            Tokenizer.from_json(text)
            result["error"] = ""
        except ValueError as e:
            result["error"] = str(e)
    """)
    assert "cap" in r["error"] and "100000000" in r["error"], r
    assert r["seconds"] < 2.0 and r["rss_mb"] < 200, r


@pytest.mark.parametrize("field", ["vocab", "added", "config"])
def test_export_refuses_to_write_beyond_the_caps(field: str, tmp_path):
    model = make_model()
    if field == "vocab":
        model.tokenizer["model"]["vocab"]["tok0"] = 100_000_000
        want = "model.vocab entry 'tok0' has token id 100000000"
    elif field == "added":
        model.tokenizer["added_tokens"][0]["id"] = MAX_TOKEN_ID
        want = "token ids below 2097152"
    else:
        model.config["num_hidden_layers"] = 5000
        want = "config.num_hidden_layers = 5000 exceeds"
    out = tmp_path / "m.fwa"
    with pytest.raises(ValueError, match=want.replace("(", r"\(")):
        write_artifact(out, model, model_card=model_card(), options={}, evidence={},
                       exporter_version="0")
    assert not out.exists() and os.listdir(tmp_path) == []


def test_a_manifest_of_tiny_values_costs_a_small_multiple_of_its_size(tmp_path):
    """8 MB of `0,` in the tokenizer (valid: the tokenizer ignores unknown keys): the parsed
    forms (the manifest tape, the tokenizer's nodes) stay within a small multiple of the text.
    Before, each value cost a 96-byte tree node plus vector growth (~0.8 GB here)."""
    blob, pin = resealed(lambda m: m["tokenizer"].update(x=[0] * 4_000_000))
    p = tmp_path / "wide.fwa"
    p.write_bytes(blob)
    r = _measure(f"""
        m = fwassist.Model.load({str(p)!r}, pin={pin!r})
        result["vocab"] = m.vocab_size
    """)
    assert r["rss_mb"] < 150, r


@pytest.mark.parametrize("where", ["config", "tokenizer", "model_card"])
def test_export_refuses_deep_nesting_with_a_value_error(where: str, tmp_path):
    """Nesting beyond the manifest's cap is refused by the writer's normalisation before
    Python's recursion limit is reached (a RecursionError traceback before)."""
    deep: object = 0
    for _ in range(5000):
        deep = {"a": deep}
    model = make_model()
    card = model_card()
    if where == "config":
        model.config["extra"] = deep
    elif where == "tokenizer":
        model.tokenizer["extra"] = deep
    else:
        card["extra"] = deep
    with pytest.raises(ValueError, match="nesting of arrays and objects deeper than 64"):
        write_artifact(tmp_path / "m.fwa", model, model_card=card, options={}, evidence={},
                       exporter_version="0")
    assert os.listdir(tmp_path) == []
