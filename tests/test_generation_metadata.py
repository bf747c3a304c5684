# SPDX-License-Identifier: Apache-2.0
"""Generation metadata (docs/artifact-format.md §3.9, format 1.1): the EOS ids and chat template
of a checkpoint's tokenizer_config.json, generation_config.json and chat_template.jinja, read
from files written by transformers 4.57.6 and 5.25.0 themselves
(tests/conformance/make_generation.py), pinned by export, exposed by the runtime, the C ABI,
inspect and diff; a checkpoint without them still exports to a byte-identical format 1.0
artifact."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from fwassist import ExportError, Model
from fwassist.artifact import pyverify
from fwassist.artifact.diff import diff
from fwassist.artifact.inspect import inspect, render_text
from fwassist.export.generation import GenerationError, load_generation
from fwassist.export.pipeline import export_onnx

CONF = Path(__file__).resolve().parent / "conformance" / "fixtures"
GEN = CONF / "generation"
# A 64-token float Qwen3-MoE made by transformers 5.25.0 (make_compressed_tensors.py).
MODEL = CONF / "safetensors" / "float_bf16_per_expert"
FORMS = [f"{v}/{n}" for v in ("tf4", "tf5") for n in ("jinja", "inline_named", "inline_string")]


def expected(form: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads((GEN / form / "expected.json").read_text("utf-8"))
    return out


def checkpoint(tmp_path: Path, form: str | None, name: str = "ckpt") -> Path:
    """The conformance model's weights, config and card, with the generation files of
    ``form`` beside them (None: none of them)."""
    d = tmp_path / name
    d.mkdir()
    for f in ("config.json", "model.safetensors", "card.json"):
        shutil.copy(MODEL / f, d / f)
    if form is not None:
        for f in (GEN / form).iterdir():
            if f.is_file() and f.name != "expected.json":
                shutil.copy(f, d / f.name)
    return d


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.mark.parametrize("form", FORMS)
def test_export_pins_what_transformers_loads(tmp_path, form: str):
    """Round trip: the real tool's files → export → load: the EOS ids, bos/pad ids and chat
    template equal what transformers itself loads from the same files."""
    want = expected(form)
    src = checkpoint(tmp_path, form)
    out = tmp_path / "m.fwa"
    pin = export_onnx(str(src), str(out), evidence=False, quiet=True)
    m = Model.load(out, pin=pin)
    assert m.eos_token_ids == want["eos_token_ids"]
    assert m.chat_template == want["chat_template"]
    assert m.eos_ids() == want["eos_token_ids"]
    g = m.generation
    assert g is not None
    assert (g["bos_token_id"], g["pad_token_id"]) == (want["bos_token_id"], want["pad_token_id"])
    assert g["sources"] == {n: (sha(src / n) if (src / n).exists() else None)
                            for n in ("chat_template.jinja", "generation_config.json",
                                      "tokenizer_config.json")}
    art = pyverify.verify(str(out), pin=pin)
    assert art.manifest["format_version"] == [1, 1]
    assert art.manifest["generation"] == g
    # Deterministic: the same inputs give the same pin.
    assert export_onnx(str(src), str(tmp_path / "again.fwa"), evidence=False,
                       quiet=True) == pin


@pytest.mark.parametrize("version", ["tf4", "tf5"])
def test_named_templates_without_default_are_refused_by_name(tmp_path, version: str):
    """transformers refuses to pick one of several named templates without a default
    (expected.json holds its error); so does the export, naming them."""
    assert "no default" in expected(f"{version}/no_default")["error"]
    src = checkpoint(tmp_path, f"{version}/no_default")
    with pytest.raises(ExportError, match=r"\['rag', 'tool_use'\].*'default'"):
        export_onnx(str(src), str(tmp_path / "m.fwa"), evidence=False, quiet=True)
    assert not (tmp_path / "m.fwa").exists()


def test_unknown_eos_token_is_named(tmp_path):
    src = checkpoint(tmp_path, "tf5/inline_string")
    tc = json.loads((src / "tokenizer_config.json").read_text("utf-8"))
    tc["eos_token"] = "<|nope|>"
    (src / "tokenizer_config.json").write_text(json.dumps(tc), "utf-8")
    with pytest.raises(GenerationError, match=r"eos_token '<\|nope\|>' is not a token"):
        export_onnx(str(src), str(tmp_path / "m.fwa"), evidence=False, quiet=True)


def test_added_token_dict_and_generation_config_int(tmp_path):
    """eos_token as an AddedToken object (the form transformers 4.x writes to
    special_tokens_map.json and older versions to tokenizer_config.json), resolved through
    tokenizer.json; generation_config's integer eos_token_id united with it."""
    src = GEN / "tf4" / "inline_named"
    tok = json.loads((src / "tokenizer.json").read_text("utf-8"))
    tc = json.loads((src / "tokenizer_config.json").read_text("utf-8"))
    tc.pop("added_tokens_decoder")           # only tokenizer.json can resolve it now
    tc["eos_token"] = {"__type": "AddedToken", "content": "<|endoftext|>", "lstrip": False,
                       "normalized": False, "rstrip": False, "single_word": False}
    d = tmp_path / "d"
    d.mkdir()
    (d / "tokenizer_config.json").write_text(json.dumps(tc), "utf-8")
    shutil.copy(src / "generation_config.json", d / "generation_config.json")
    ids = {a["content"]: a["id"] for a in tok["added_tokens"]}
    g = load_generation(str(d), tok, 64)
    assert g is not None
    assert g["eos_token_ids"] == sorted({ids["<|endoftext|>"], ids["<|im_end|>"]})
    assert g["bos_token_id"] == ids["<s>"]
    # Without tokenizer.json (and no added_tokens_decoder) the id is unknown: refused.
    with pytest.raises(GenerationError, match="no tokenizer.json"):
        load_generation(str(d), None, 64)
    # An id past the model's vocabulary.
    with pytest.raises(GenerationError, match="outside the model's vocabulary"):
        load_generation(str(d), tok, 30)


def test_no_generation_files_keep_format_1_0(tmp_path):
    """A checkpoint without EOS ids or a template (the fixture's own generation_config.json
    has none) exports as format 1.0, as before; the runtime then pins no EOS id."""
    src = checkpoint(tmp_path, None)
    shutil.copy(MODEL / "generation_config.json", src / "generation_config.json")
    out = tmp_path / "m.fwa"
    pin = export_onnx(str(src), str(out), evidence=False, quiet=True)
    assert pyverify.verify(str(out)).manifest["format_version"] == [1, 0]
    assert "generation" not in pyverify.verify(str(out)).manifest
    m = Model.load(out, pin=pin)
    assert m.eos_token_ids == [] and m.chat_template is None and m.generation is None


def test_a_chat_template_without_eos_is_refused(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    shutil.copy(GEN / "tf5" / "jinja" / "chat_template.jinja", d / "chat_template.jinja")
    with pytest.raises(GenerationError, match="no end-of-sequence token"):
        load_generation(str(d), None, 64)


def test_generation_stops_at_a_pinned_eos(tmp_path):
    """Python generation stops at the pinned EOS ids by default (stop_ids=None), not at all
    with stop_ids=(); a 1.0 export of the same weights does not stop."""
    plain = tmp_path / "plain.fwa"
    export_onnx(str(checkpoint(tmp_path, None, "a")), str(plain), evidence=False, quiet=True)
    with Model.load(plain).session() as s:
        free = s.generate(prompt_ids=[1, 2, 3], max_tokens=12).token_ids
    assert len(free) == 12
    stop_at = free[5]
    first = free.index(stop_at)
    src = checkpoint(tmp_path, "tf5/jinja", "b")
    cfg = json.loads((src / "generation_config.json").read_text("utf-8"))
    cfg["eos_token_id"] = [stop_at]
    (src / "generation_config.json").write_text(json.dumps(cfg), "utf-8")
    pinned = tmp_path / "pinned.fwa"
    export_onnx(str(src), str(pinned), evidence=False, quiet=True)
    m = Model.load(pinned)
    assert stop_at in m.eos_token_ids
    with m.session() as s:
        g = s.generate(prompt_ids=[1, 2, 3], max_tokens=12)
    assert g.stop_reason == "stop_id" and g.token_ids == free[:first]
    with m.session() as s:
        assert s.generate(prompt_ids=[1, 2, 3], max_tokens=12, stop_ids=()).token_ids == free


def test_inspect_and_diff_show_generation(tmp_path):
    a, b = tmp_path / "a.fwa", tmp_path / "b.fwa"
    export_onnx(str(checkpoint(tmp_path, None, "a")), str(a), evidence=False, quiet=True)
    src = checkpoint(tmp_path, "tf4/jinja", "b")
    (src / "chat_template.jinja").write_text("{{ '\x1b[31m' }}\n{{ messages }}", "utf-8")
    export_onnx(str(src), str(b), evidence=False, quiet=True)
    info = inspect(b)
    assert info["generation"]["eos_token_ids"] == expected("tf4/jinja")["eos_token_ids"]
    text = render_text(info)
    assert "generation eos [" in text and "\x1b" not in text and "\\x1b" in text
    assert "generation none pinned" in render_text(inspect(a))
    # 1.0 -> 1.1 with the same weights: the generation metadata was added ("tokenizer"
    # class); the format version alone is metadata.
    r = diff(a, b)
    assert r.klass == "tokenizer"
    assert {"section": "generation", "change": "added"} in r.changes["tokenizer"]
    assert {"key": "format_version", "a": [1, 0], "b": [1, 1]} in r.changes["metadata-only"]
    assert not r.changes["weights"] and not r.changes["architecture"]
    # Another EOS id only.
    src2 = checkpoint(tmp_path, "tf4/jinja", "c")
    (src2 / "chat_template.jinja").write_text("{{ '\x1b[31m' }}\n{{ messages }}", "utf-8")
    cfg = json.loads((src2 / "generation_config.json").read_text("utf-8"))
    cfg["eos_token_id"] = [5]
    (src2 / "generation_config.json").write_text(json.dumps(cfg), "utf-8")
    c = tmp_path / "c.fwa"
    export_onnx(str(src2), str(c), evidence=False, quiet=True)
    r = diff(b, c)
    assert r.klass == "tokenizer"
    assert r.changes["tokenizer"] == [{"section": "generation",
                                       "keys": ["eos_token_ids", "sources"]}]


def test_evidence_greedy_decode_ignores_the_pinned_eos(tmp_path):
    """The export's greedy evidence compares every one of its tokens with the oracle's: a
    pinned EOS id must not cut the runtime's decode short."""
    src = checkpoint(tmp_path, "tf5/jinja")
    out = tmp_path / "m.fwa"
    export_onnx(str(src), str(out), evidence=True, quiet=True)
    ev = pyverify.verify(str(out)).manifest["evidence"]
    assert ev["measured"] is True
    assert ev["greedy"]["identical"] is True and ev["greedy"]["compared"] > 0


@pytest.mark.parametrize("version", ["tf4", "tf5"])
def test_the_saved_tokenizer_encodes_as_tokenizers_does(tmp_path, version: str):
    """transformers 5 saves a no-op TemplateProcessing post-processor ("single": [A], no
    special tokens); the runtime's tokenizer accepts it and encodes as the tokenizers library
    does, special tokens included."""
    tokenizers = pytest.importorskip("tokenizers")
    form = f"{version}/jinja"
    ref = tokenizers.Tokenizer.from_file(str(GEN / form / "tokenizer.json"))
    out = tmp_path / "m.fwa"
    export_onnx(str(checkpoint(tmp_path, form)), str(out), evidence=False, quiet=True)
    m = Model.load(out)
    text = expected(form)["rendered"] + "hello world<|im_end|>"
    assert m.encode(text) == ref.encode(text).ids


def test_only_a_no_op_template_processing_is_accepted():
    """The runtime accepts transformers 5's TemplateProcessing only when it adds nothing; one
    that inserts a special token (a bos) is still refused by name."""
    from fwassist import Tokenizer

    tok = json.loads((GEN / "tf5" / "jinja" / "tokenizer.json").read_text("utf-8"))
    Tokenizer.from_json(json.dumps(tok))
    bos = {"SpecialToken": {"id": "<|im_start|>", "type_id": 0}}
    tok["post_processor"]["single"].insert(0, bos)
    tok["post_processor"]["special_tokens"] = {"<|im_start|>": {"id": "<|im_start|>",
                                                                "ids": [30],
                                                                "tokens": ["<|im_start|>"]}}
    with pytest.raises(ValueError, match="post_processor TemplateProcessing"):
        Tokenizer.from_json(json.dumps(tok))


@pytest.mark.parametrize("form", FORMS)
def test_apply_chat_template_renders_as_transformers(tmp_path, form: str):
    """The pinned template rendered by the runtime equals transformers' own
    apply_chat_template(tokenize=False, add_generation_prompt=True) output (expected.json)."""
    pytest.importorskip("jinja2")
    out = tmp_path / "m.fwa"
    export_onnx(str(checkpoint(tmp_path, form)), str(out), evidence=False, quiet=True)
    m = Model.load(out)
    conversation = [{"role": "user", "content": "hi"}]
    assert m.apply_chat_template(conversation) == expected(form)["rendered"]


def test_apply_chat_template_refusals(tmp_path):
    pytest.importorskip("jinja2")
    src = checkpoint(tmp_path, "tf5/jinja", "a")
    (src / "chat_template.jinja").write_text(
        "{% if messages|length > 1 %}{{ raise_exception('one message only') }}{% endif %}"
        "{{ messages[0]['content'] }}{{ eos_token }}", "utf-8")
    out = tmp_path / "a.fwa"
    export_onnx(str(src), str(out), evidence=False, quiet=True)
    m = Model.load(out)
    assert len(m.eos_token_ids) == 2
    with pytest.raises(ValueError, match="eos_token.*ambiguous"):
        m.apply_chat_template([{"role": "user", "content": "x"}])
    assert m.apply_chat_template([{"role": "user", "content": "x"}],
                                 eos_token="<|im_end|>") == "x<|im_end|>"
    with pytest.raises(ValueError, match="one message only"):
        m.apply_chat_template([{"role": "user", "content": "x"}] * 2, eos_token="")
    plain = tmp_path / "plain.fwa"
    export_onnx(str(checkpoint(tmp_path, None, "b")), str(plain), evidence=False, quiet=True)
    with pytest.raises(ValueError, match="no chat template"):
        Model.load(plain).apply_chat_template([])


def test_the_writer_refuses_generation_no_reader_accepts(tmp_path):
    """The writer checks §3.9 before writing (the readers would refuse the file): ids out of
    the vocabulary, no EOS id, an over-long template, a bad source digest; and it sorts and
    de-duplicates the EOS ids (64 distinct ones, the cap, are written)."""
    from fwassist.artifact import writer
    from fwassist.export.hf_checkpoint import import_checkpoint

    model = import_checkpoint(str(MODEL))
    good = {"bos_token_id": None, "chat_template": "t", "eos_token_ids": [5, 3, 5],
            "pad_token_id": None, "sources": {"chat_template.jinja": None,
                                              "generation_config.json": None,
                                              "tokenizer_config.json": "0" * 64}}
    card = {"known_limitations": ["test"]}
    model.generation = good
    out = tmp_path / "ok.fwa"
    writer.write_artifact(out, model, model_card=card, options={}, evidence={},
                          exporter_version="t")
    assert pyverify.verify(str(out)).manifest["generation"]["eos_token_ids"] == [3, 5]
    bad = [({"eos_token_ids": [64]}, "not a token id"), ({"eos_token_ids": []}, "non-empty"),
           ({"chat_template": "x" * ((256 << 10) + 1)}, "256 KiB"),
           ({"bos_token_id": True}, "not a token id"),
           ({"sources": {"chat_template.jinja": "X"}}, "sources must map")]
    # 64 distinct ids (duplicates dropped first) is the cap, and allowed.
    model.generation = dict(good, eos_token_ids=list(range(64)) + [3, 63])
    writer.write_artifact(tmp_path / "cap.fwa", model, model_card=card, options={},
                          evidence={}, exporter_version="t")
    for change, message in bad:
        model.generation = dict(good, **change)
        with pytest.raises(ValueError, match=message):
            writer.write_artifact(tmp_path / "bad.fwa", model, model_card=card, options={},
                                  evidence={}, exporter_version="t")
        assert not (tmp_path / "bad.fwa").exists()


def test_onnx_export_finds_the_files_beside_the_graph(tmp_path):
    """Beside an ONNX file (a torch.onnx dynamo export, transformers 4.57.6) as beside a
    checkpoint directory."""
    pytest.importorskip("onnx")
    src = tmp_path / "onnx"
    shutil.copytree(CONF / "onnx" / "tf4_dynamo_float", src)
    form = "tf4/inline_named"
    for f in (GEN / form).iterdir():
        if f.name != "expected.json":
            shutil.copy(f, src / f.name)
    out = tmp_path / "m.fwa"
    export_onnx(str(src / "model.onnx"), str(out), evidence=False, quiet=True)
    m = Model.load(out)
    assert m.eos_token_ids == expected(form)["eos_token_ids"]
    assert m.chat_template == expected(form)["chat_template"]
