# SPDX-License-Identifier: Apache-2.0
"""The C ABI (libfwassist, include/fwassist/fwassist.h) driven through cffi's ABI mode, the way
a host-side firmware test harness uses it. The same scenarios as the nanobind tests (load, pin
mismatch, tampered file, logits, generation, stats) must give the same results bit for bit,
and every entry point given bad input must answer with its specific status.

The library comes from an installed C package: $FWA_C_PREFIX (tests/run_all.sh installs one),
else this module builds and installs one into a temporary prefix with cmake."""

from __future__ import annotations

import gc
import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

import fwassist
from fwassist._cffi import CError, CLibrary, cdef_from_header

ROOT = Path(__file__).resolve().parents[1]
HEADER = ROOT / "csrc" / "include" / "fwassist" / "fwassist.h"
PROMPT = "int main(int argc, char **argv) {\n    "


def _install_prefix(tmp: Path) -> Path:
    build = tmp / "build"
    prefix = tmp / "prefix"
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    subprocess.run(["cmake", "-S", str(ROOT), "-B", str(build), *gen, "-DCMAKE_BUILD_TYPE=Release",
                    "-DFWA_BUILD_CAPI=ON"], check=True, capture_output=True)
    subprocess.run(["cmake", "--build", str(build), "--target", "fwassist", "-j2"], check=True,
                   capture_output=True)
    subprocess.run(["cmake", "--install", str(build), "--prefix", str(prefix), "--component", "c"],
                   check=True, capture_output=True)
    return prefix


@pytest.fixture(scope="module")
def prefix(tmp_path_factory) -> Path:
    env = os.environ.get("FWA_C_PREFIX")
    return Path(env) if env else _install_prefix(tmp_path_factory.mktemp("capi"))


@pytest.fixture(scope="module")
def c(prefix) -> CLibrary:
    libs = sorted(prefix.glob("lib*/libfwassist.so"))
    assert libs, f"no libfwassist.so under {prefix}"
    return CLibrary(str(libs[0]))


@pytest.fixture(scope="module")
def built(build_tiny_model):
    return build_tiny_model(bits=4)


@pytest.fixture(scope="module")
def bare(build_tiny_model):
    return build_tiny_model(bits=4, tokenizer=False)


@pytest.fixture(scope="module")
def nb_model(built) -> "fwassist.Model":
    return fwassist.Model.load(built[0])


@pytest.fixture(scope="module")
def ids(built) -> list[int]:
    rng = np.random.default_rng(7)
    return [int(i) for i in rng.integers(0, built[2]["vocab_size"], size=20)]


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32))


# ---------------------------------------------------------------------------------------------
# The package: header, symbols, versions


def test_installed_package_layout(prefix, c):
    assert (prefix / "include" / "fwassist" / "fwassist.h").read_bytes() == HEADER.read_bytes()
    cmake_dir = next(prefix.glob("lib*/cmake/fwassist"))
    for f in ("fwassistConfig.cmake", "fwassistConfigVersion.cmake", "fwassistTargets.cmake"):
        assert (cmake_dir / f).is_file(), f
    so = Path(c.path).resolve()
    m = re.fullmatch(r"libfwassist\.so\.(\d+)\.(\d+)\.(\d+)", so.name)
    assert m, so.name
    assert (so.parent / f"libfwassist.so.{c.abi_version}").resolve() == so  # SONAME link
    assert c.version == fwassist.__version__ == ".".join(m.groups())
    major, minor, patch = (int(x) for x in m.groups())
    assert c.version_number == major * 10000 + minor * 100 + patch
    header = HEADER.read_text()
    assert f"#define FWA_ABI_VERSION {c.abi_version}\n" in header
    assert f'#define FWA_VERSION_STRING "{c.version}"' in header


def test_only_fwa_symbols_are_exported(c):
    nm = shutil.which("nm")
    assert nm, "nm (binutils) is needed"
    out = subprocess.run([nm, "-D", "--defined-only", c.path], check=True, capture_output=True,
                         text=True).stdout
    names = [line.split()[-1] for line in out.splitlines() if line.strip()]
    assert names and all(n.startswith("fwa_") for n in names), \
        [n for n in names if not n.startswith("fwa_")][:20]
    # Every function the header declares is exported, and nothing else.
    declared = set(re.findall(r"\b(fwa_[a-z0-9_]+)\s*\(", cdef_from_header(HEADER.read_text())))
    declared.discard("fwa_token_callback")
    assert declared == {n.split("@")[0] for n in names}


def test_header_block_has_no_preprocessor_lines():
    block = cdef_from_header(HEADER.read_text())
    assert not [line for line in block.splitlines() if line.lstrip().startswith("#")]


def test_status_names_and_values(c):
    lib = c.lib
    # Explicit values, never renumbered: they are part of the ABI.
    fixed = {"FWA_OK": 0, "FWA_ERR_INVALID_ARGUMENT": 1, "FWA_ERR_BUFFER_TOO_SMALL": 5,
             "FWA_ERR_IO": 10, "FWA_ERR_BAD_MAGIC": 12, "FWA_ERR_DIGEST_MISMATCH": 20,
             "FWA_ERR_PIN_MISMATCH": 21, "FWA_ERR_NULL_ARGUMENT": 30, "FWA_ERR_BAD_HANDLE": 31,
             "FWA_ERR_BAD_STRUCT_SIZE": 32, "FWA_ERR_BAD_TOKEN": 33, "FWA_ERR_CONTEXT_FULL": 34,
             "FWA_ERR_INTERNAL": 99}
    for name, value in fixed.items():
        assert getattr(lib, name) == value, name
    assert c.status_name(lib.FWA_ERR_PIN_MISMATCH) == "pin_mismatch"
    assert c.status_name(lib.FWA_ERR_BAD_HANDLE) == "bad_handle"
    assert c.status_name(12345) == "unknown_status"


def test_cpu_features_and_kernels_match_the_python_module(c):
    info = fwassist.cpu_info()
    assert c.kernel_choices() == info["kernels"]
    assert c.cpu_features().split(",") == info["features"]


# ---------------------------------------------------------------------------------------------
# Models: open, pin, identity, tampering


def test_open_identity_and_manifest(c, built, nb_model):
    fwa, _, cfg = built
    with c.open_file(fwa, pin=nb_model.pin) as m:
        info = m.info()
        assert info["pin"] == nb_model.pin
        assert (info["format_version_major"], info["format_version_minor"]) == (1, 0)
        assert info["vocab_size"] == cfg["vocab_size"] and info["num_layers"] == 3
        assert info["num_experts"] == cfg["num_experts"]
        assert info["experts_per_token"] == cfg["num_experts_per_tok"]
        assert info["has_tokenizer"] == 1
        import json
        card = json.loads(m.manifest_json("model_card"))
        assert card["known_limitations"]
        assert json.loads(m.manifest_json("config"))["num_experts"] == cfg["num_experts"]
        with pytest.raises(CError) as e:
            m.manifest_json("no_such_section")
        assert e.value.name == "not_found"
    with c.open_memory(Path(fwa).read_bytes(), pin=nb_model.pin) as m:
        assert m.pin == nb_model.pin


def test_pin_mismatch_and_tampered_files(c, built, tmp_path):
    fwa = built[0]
    with pytest.raises(CError) as e:
        c.open_file(fwa, pin="sha256:" + "0" * 64)
    assert e.value.name == "pin_mismatch" and "sha256:" + "0" * 64 in e.value.message
    raw = bytearray(Path(fwa).read_bytes())
    raw[len(raw) // 2] ^= 0x40
    bad = tmp_path / "tampered.fwa"
    bad.write_bytes(bytes(raw))
    with pytest.raises(fwassist.ArtifactError) as nb:
        fwassist.Model.load(str(bad))
    for opener in (lambda: c.open_file(bad), lambda: c.open_memory(bytes(raw))):
        with pytest.raises(CError) as e:
            opener()
        assert e.value.name == nb.value.status  # the same verdict as the Python API
    with pytest.raises(CError) as e:
        c.open_file(tmp_path / "missing.fwa")
    assert e.value.name == "io_error"
    with pytest.raises(CError) as e:
        c.open_memory(b"not an artifact" * 10)
    assert e.value.name in ("bad_magic", "truncated")


def test_tampered_expert_fails_closed_on_first_use(c, built, ids, tmp_path):
    data = bytearray(Path(built[0]).read_bytes())
    data_offset = struct.unpack_from("<Q", data, 24)[0]
    with fwassist.load_artifact(built[0]) as a:
        blocks = [b for b in a.expert_blocks() if b["layer"] == 0]
    for b in blocks:
        data[data_offset + b["offset"] + 5] ^= 0x10
    bad = tmp_path / "tampered-expert.fwa"
    bad.write_bytes(bytes(data))
    with pytest.raises(CError) as e:
        c.open_file(bad)
    assert e.value.name == "digest_mismatch"
    with c.open_file(bad, lazy=True) as m, m.session() as s:
        with pytest.raises(CError) as e:
            s.eval(ids[:4])
        assert e.value.name == "digest_mismatch" and "expert" in e.value.message
        assert s.n_past == 0


def test_tokenizer_matches_the_python_api(c, built, nb_model):
    with c.open_file(built[0]) as m:
        ids = m.tokenize(PROMPT)
        assert ids == nb_model.tokenizer.encode(PROMPT)
        assert m.detokenize(ids) == PROMPT
        assert m.tokenize("") == []


# ---------------------------------------------------------------------------------------------
# Sessions and generation: the same bits as the nanobind API


@pytest.mark.parametrize("mode", ["exact", "fast"])
def test_logits_equal_the_python_api(c, built, nb_model, ids, mode):
    with nb_model.session(mode=mode) as s:
        want = s.logits(ids)
    with c.open_file(built[0]) as m:
        with m.session(mode=mode, threads=2) as s:
            s.eval(ids[:7])                      # a prefill in one call ...
            assert same_bits(s.last_logits(), want[6])
            got = s.logits(ids[7:])              # ... then decode steps
            assert same_bits(got, want[7:])
            assert s.n_past == len(ids)
            s.truncate(5)
            assert s.n_past == 5
            assert same_bits(s.logits(ids[5:9]), want[5:9])
            s.reset()
            assert s.n_past == 0
            with pytest.raises(CError) as e:
                s.last_logits()
            assert e.value.name == "no_logits"


@pytest.mark.parametrize("kv", ["f16", "bf16"])
def test_16bit_kv_cache_equals_the_python_api(c, built, nb_model, ids, kv):
    """fwa_session_options.kv_cache selects the same 16-bit cache as Model.session(kv_cache=):
    the same bits, not the float32 cache's; an unknown type is invalid_argument."""
    with nb_model.session(kv_cache=kv) as s:
        want = s.logits(ids)
    with nb_model.session() as s:
        assert not same_bits(s.logits(ids), want)
    with c.open_file(built[0]) as m:
        with m.session(threads=2, kv_cache=kv) as s:
            assert same_bits(s.logits(ids), want)
        opts = c.ffi.new("fwa_session_options*")
        c.lib.fwa_session_options_init(opts)
        assert opts.kv_cache == c.lib.FWA_KV_F32
        opts.kv_cache = 3
        st = c.lib.fwa_session_create(m.handle, opts, c.ffi.new("fwa_session**"))
        assert c.status_name(st) == "invalid_argument"
        assert "kv_cache" in c.last_error()


@pytest.mark.parametrize("sampling", [dict(temperature=0.0),
                                      dict(temperature=0.9, top_k=20, top_p=0.9, seed=5,
                                           repetition_penalty=1.2),
                                      dict(temperature=1.1, top_p=0.8, seed=11)])
def test_generate_equals_the_python_api(c, built, nb_model, ids, sampling):
    with nb_model.session(mode="fast") as s:
        want = s.generate(prompt_ids=ids, max_tokens=12, **sampling)
    with c.open_file(built[0]) as m, m.session(mode="fast") as s:
        got = s.generate(ids, max_tokens=12, **sampling)
    assert got.token_ids == want.token_ids
    assert got.text == want.text
    assert got.stop_reason == want.stop_reason
    assert "".join(p for _, p in got.pieces) == got.text


def test_sampler_and_decode_loop_equal_generate(c, built, ids):
    sampling = dict(temperature=0.8, top_k=30, seed=3)
    with c.open_file(built[0]) as m:
        with m.session() as s:
            ref = s.generate(ids, max_tokens=10, **sampling)
        sampler = m.sampler(**sampling)
        try:
            with m.session() as s:
                s.eval(ids)
                out = []
                for _ in range(10):
                    tok = sampler.sample(s)
                    out.append(tok)
                    s.decode(tok)
        finally:
            sampler.close()
    assert out == ref.token_ids


def test_generate_text_stops_and_stats(c, built, nb_model):
    with nb_model.session() as s:
        want = s.generate(PROMPT, max_tokens=16, temperature=0.0)
    stop = want.text[3:6] if len(want.text) >= 6 else None
    with c.open_file(built[0]) as m, m.session() as s:
        g = s.generate(prompt=PROMPT, max_tokens=16)
        assert g.token_ids == want.token_ids and g.text == want.text
        st = g.stats
        assert st["prompt_tokens"] == len(nb_model.tokenizer.encode(PROMPT))
        assert st["generated_tokens"] == len(g.token_ids)
        assert st["decode_tokens_per_s"] > 0 and st["prefill_tokens_per_s"] > 0
        assert st["ttft_ms"] > 0 and st["process_cpu_s"] >= 0
        cfg = built[2]
        moe_layers = cfg["num_hidden_layers"] - len(cfg["mlp_only_layers"])
        assert moe_layers > 0
        assert cfg["num_experts_per_tok"] <= st["experts_activated_per_layer"] <= cfg["num_experts"]
        per_layer = s.experts_activated()
        for layer, n in enumerate(per_layer):
            assert n == 0 if layer in cfg["mlp_only_layers"] else n >= cfg["num_experts_per_tok"]
        with nb_model.session() as ns:
            ns.generate(PROMPT, max_tokens=16, temperature=0.0)
            assert np.array_equal(s.expert_tokens(), ns.expert_tokens())
        assert per_layer == [int(x) for x in (s.expert_tokens() > 0).sum(axis=1)]
        # the prompt is cached on a second call
        g2 = s.generate(prompt=PROMPT, max_tokens=4)
        assert g2.stats["cached_tokens"] > 0
        if stop:
            g3 = s.generate(prompt=PROMPT, max_tokens=16, stop=[stop])
            assert g3.stop_reason == "stop_string" and g3.text == want.text[:want.text.index(stop)]
        g4 = s.generate(prompt=PROMPT, max_tokens=16, stop_ids=[want.token_ids[2]])
        assert g4.stop_reason == "stop_id"
        assert g4.token_ids == want.token_ids[:want.token_ids.index(want.token_ids[2])]
        g5 = s.generate(prompt=PROMPT, max_tokens=16, cancel_after=3)
        assert g5.stop_reason == "cancelled" and len(g5.token_ids) == 3


def test_structs_from_before_the_guard_still_work(c, built, ids):
    """fwa_generate_params and fwa_generation_stats gained the guard's fields at their end: a
    program built against the older header (struct_size = the old size) keeps working, gets
    the same tokens and never has bytes written past its older stats struct."""
    ffi, lib = c.ffi, c.lib
    params_v1 = ffi.offsetof("fwa_generate_params", "policy")
    stats_v1 = ffi.offsetof("fwa_generation_stats", "interventions")
    with c.open_file(built[0]) as m, m.session() as s:
        want = s.generate(ids, max_tokens=6)
        p = ffi.new("fwa_generate_params*")
        lib.fwa_generate_params_init(p)
        p.max_tokens = 6
        p.struct_size = params_v1
        p.interventions_capacity = 5   # beyond the old size: must not be read
        raw = ffi.new("char[]", ffi.sizeof("fwa_generation_stats") + 16)
        ffi.memmove(raw, b"\xa5" * len(raw), len(raw))
        st = ffi.cast("fwa_generation_stats*", raw)
        st.struct_size = stats_v1
        prompt = ffi.new("int32_t[]", list(ids))
        assert c.status_name(lib.fwa_generate(s.handle, prompt, len(ids), p, ffi.NULL, ffi.NULL,
                                              st)) == "ok"
        assert st.generated_tokens == len(want.token_ids) and st.struct_size == stats_v1
        assert ffi.buffer(raw)[stats_v1:] == b"\xa5" * (len(raw) - stats_v1)
        p.struct_size = params_v1 - 8
        assert c.status_name(lib.fwa_generate(s.handle, prompt, len(ids), p, ffi.NULL, ffi.NULL,
                                              ffi.NULL)) == "bad_struct_size"


def test_policy_changes_threads_not_results(c, built, ids):
    with c.open_file(built[0]) as m, m.session(threads=3, mode="fast") as s:
        assert s.policy()["max_active_cores"] == 3
        a = s.logits(ids[:6])
        s.set_policy(max_active_cores=1)
        assert s.policy()["max_active_cores"] == 1
        s.reset()
        assert same_bits(s.logits(ids[:6]), a)
        for bad in (dict(max_active_cores=4), dict(max_active_cores=-1)):
            with pytest.raises(CError) as e:
                s.set_policy(**bad)
            assert e.value.name == "invalid_argument"
        with pytest.raises(CError) as e:
            s.set_policy(target_ms_per_token=-1.0)
        assert e.value.name == "invalid_argument"
        s.set_policy(max_active_cores=2, target_ms_per_token=1e9)  # any step meets it
        assert s.policy()["target_ms_per_token"] == 1e9
        s.reset()
        g = s.generate(ids[:4], max_tokens=40)
        assert g.stats["active_cores"] == 1            # shed after the first 16 steps
        assert g.stop_reason == "max_tokens"


# ---------------------------------------------------------------------------------------------
# Bad input: specific statuses, never a crash


def test_bad_tokens_and_context(c, built, ids):
    with c.open_file(built[0]) as m, m.session(max_context=16) as s:
        vocab = m.info()["vocab_size"]
        for bad in (-1, vocab):
            with pytest.raises(CError) as e:
                s.eval([1, bad])
            assert e.value.name == "bad_token" and "position 1" in e.value.message
            with pytest.raises(CError) as e:
                s.decode(bad)
            assert e.value.name == "bad_token"
        assert s.n_past == 0
        s.eval(ids[:10])
        with pytest.raises(CError) as e:
            s.eval(ids[:7])
        assert e.value.name == "context_full"
        assert s.n_past == 10
        with pytest.raises(CError) as e:
            s.generate(ids[:17], max_tokens=2)
        assert e.value.name == "context_full"
        with pytest.raises(CError) as e:
            m.detokenize([vocab])
        assert e.value.name == "bad_token"
        g = s.generate(ids[:14], max_tokens=8)
        assert g.stop_reason == "context_full" and len(g.token_ids) == 2


def test_bad_handles_structs_buffers(c, built, bare):
    ffi, lib = c.ffi, c.lib
    name = c.status_name
    m = c.open_file(built[0])
    s = m.session()
    # NULL everywhere a pointer is required.
    assert name(lib.fwa_session_create(ffi.NULL, ffi.NULL, ffi.new("fwa_session**"))) == "null_argument"
    assert name(lib.fwa_session_create(m.handle, ffi.NULL, ffi.NULL)) == "null_argument"
    assert name(lib.fwa_model_open_file(ffi.NULL, ffi.NULL, ffi.new("fwa_model**"))) == "null_argument"
    assert name(lib.fwa_session_eval(s.handle, ffi.NULL, 3)) == "null_argument"
    assert name(lib.fwa_session_logits(s.handle, ffi.NULL, ffi.new("size_t*"))) == "null_argument"
    assert name(lib.fwa_model_get_info(m.handle, ffi.NULL)) == "null_argument"
    assert name(lib.fwa_cpu_features(ffi.NULL, 0, ffi.NULL)) == "null_argument"
    # A model handle where a session is expected, and a stranger pointer.
    assert name(lib.fwa_session_decode(ffi.cast("fwa_session*", m.handle), 1)) == "bad_handle"
    junk = ffi.new("char[64]")
    assert name(lib.fwa_session_reset(ffi.cast("fwa_session*", junk))) == "bad_handle"
    # Struct sizes the library does not know.
    info = ffi.new("fwa_model_info*")
    lib.fwa_model_info_init(info)
    info.struct_size -= 8
    assert name(lib.fwa_model_get_info(m.handle, info)) == "bad_struct_size"
    opts = ffi.new("fwa_session_options*")
    lib.fwa_session_options_init(opts)
    opts.struct_size = 0
    assert name(lib.fwa_session_create(m.handle, opts, ffi.new("fwa_session**"))) == "bad_struct_size"
    lib.fwa_session_options_init(opts)
    opts.mode = 7
    assert name(lib.fwa_session_create(m.handle, opts, ffi.new("fwa_session**"))) == "invalid_argument"
    lib.fwa_session_options_init(opts)
    opts.n_threads = 0
    out = ffi.new("fwa_session**")
    assert name(lib.fwa_session_create(m.handle, opts, out)) == "invalid_argument"
    assert out[0] == ffi.NULL
    # Too-small buffers report the size needed and write nothing.
    needed = ffi.new("size_t*")
    small = ffi.new("char[4]", b"abc")
    assert name(lib.fwa_model_manifest_json(m.handle, b"config", small, 4, needed)) == "buffer_too_small"
    assert needed[0] > 4 and ffi.string(small) == b"abc"
    ids = ffi.new("int32_t[1]")
    text = "int x = 1;".encode()
    assert name(lib.fwa_tokenize(m.handle, text, len(text), ids, 1, needed)) == "buffer_too_small"
    assert needed[0] > 1
    # Sampling parameters out of range.
    for bad in (dict(temperature=float("nan")), dict(top_p=0.0), dict(top_k=-1),
                dict(repetition_penalty=0.0)):
        with pytest.raises(CError) as e:
            m.sampler(**bad)
        assert e.value.name == "invalid_argument"
    # A model without a tokenizer.
    with c.open_file(bare[0]) as mb:
        with pytest.raises(CError) as e:
            mb.tokenize("x")
        assert e.value.name == "no_tokenizer"
    # Freed handles are detected; freeing twice or NULL is harmless.
    s_handle, m_handle = s.handle, m.handle
    s.close()
    assert name(lib.fwa_session_decode(s_handle, 1)) == "bad_handle"
    lib.fwa_session_free(s_handle)
    lib.fwa_session_free(ffi.NULL)
    lib.fwa_model_free(ffi.NULL)
    lib.fwa_sampler_free(ffi.NULL)
    m.close()
    assert name(lib.fwa_model_get_info(m_handle, info)) == "bad_handle"
    assert "not a live model handle" in c.last_error()


def test_stale_handles_after_slot_reuse(c, built):
    # A freed handle stays bad when a new handle takes its slot (generation-tagged handles:
    # the slot is the token's low 32 bits), and freeing it again leaves the new handle alone.
    lib = c.lib
    name = c.status_name
    info = c.ffi.new("fwa_model_info*")
    lib.fwa_model_info_init(info)

    def slot(handle) -> int:
        return int(c.ffi.cast("uintptr_t", handle)) & 0xFFFFFFFF

    gc.collect()
    gc.disable()  # no other handle freed in between: the new handles take the freed slots
    try:
        old = c.open_file(built[0])
        old_model = old.handle
        old_session = old.session()
        old_session_handle = old_session.handle
        old_session.close()
        old.close()
        new = c.open_file(built[0])
        new_session = new.session()
    finally:
        gc.enable()
    assert slot(new.handle) == slot(old_model) and new.handle != old_model
    assert slot(new_session.handle) == slot(old_session_handle)
    assert new_session.handle != old_session_handle
    assert name(lib.fwa_model_get_info(old_model, info)) == "bad_handle"
    assert name(lib.fwa_session_decode(old_session_handle, 1)) == "bad_handle"
    assert name(lib.fwa_session_create(old_model, c.ffi.NULL, c.ffi.new("fwa_session**"))) == "bad_handle"
    lib.fwa_model_free(old_model)
    lib.fwa_session_free(old_session_handle)
    assert name(lib.fwa_model_get_info(new.handle, info)) == "ok"
    new_session.eval([1, 2])
    new_session.close()
    new.close()


def test_session_outlives_its_model_handle(c, built, ids, nb_model):
    with nb_model.session() as ns:
        want = ns.logits(ids[:4])
    m = c.open_file(built[0])
    s = m.session()
    m.close()                      # the session keeps the weights alive
    assert same_bits(s.logits(ids[:4]), want)
    s.close()


def test_energy_estimate_equals_the_python_model(c, built, ids):
    """fwa_energy_estimate (csrc/sched/energy.cpp) and fwassist.energy compute the same
    joules and SCI from the same counters and profile."""
    from fwassist import energy

    profile = energy.load_profile("cortex-a76-rpi5")
    power = {"idle_power_w": profile.value("idle_power"),
             "core_busy_power_w": profile.value("core_busy_power"),
             "core_spin_power_w": profile.value("core_spin_power"),
             "core_parked_power_w": profile.value("core_parked_power"),
             "dram_energy_j_per_byte": profile.value("dram_energy_per_byte")}
    with c.open_file(built[0]) as m, m.session(threads=2) as s:
        g = s.generate(ids, max_tokens=8)
    st = g.stats
    assert st["wall_s"] > 0 and st["busy_core_s"] > 0 and st["weight_bytes_read"] > 0
    got = c.energy_estimate(g, power, grid_intensity_g_per_kwh=350.0, embodied_g=0.02)
    act = energy.Activity(wall_s=st["wall_s"], busy_core_s=st["busy_core_s"],
                          spin_core_s=st["spin_core_s"], parked_core_s=st["parked_core_s"],
                          process_cpu_s=st["process_cpu_s"],
                          weight_bytes_read=st["weight_bytes_read"],
                          generated_tokens=st["generated_tokens"])
    want = energy.estimate(act, profile)
    for key in ("static_j", "busy_j", "spin_j", "parked_j", "other_cpu_j", "memory_j", "total_j"):
        assert got[key] == pytest.approx(getattr(want, key), rel=1e-12, abs=1e-18), key
    rep = energy.sci_report(act, profile, grid_intensity_g_per_kwh=350.0, embodied_g=0.02)
    assert got["sci_g_per_1k_tokens"] == pytest.approx(rep.sci_g_per_1k_tokens, rel=1e-12)
    assert got["total_g"] == pytest.approx(rep.total_g, rel=1e-12)
    bad = dict(power, core_busy_power_w=float("nan"))
    with pytest.raises(CError) as e:
        c.energy_estimate(g, bad, grid_intensity_g_per_kwh=350.0)
    assert e.value.name == "invalid_argument" and "core_busy_power_w" in e.value.message


def test_memory_budget_through_the_policy(c, built, ids, nb_model):
    """A budget of two experts' bytes: the same logits as the Python API without a budget,
    with experts released and verified again."""
    with nb_model.session(mode="fast") as ns:
        want = ns.logits(ids)
    with c.open_file(built[0]) as m, m.session(mode="fast", threads=2) as s:
        with fwassist.load_artifact(built[0]) as a:
            block = a.expert_blocks()[0]["length"]
        s.set_policy(memory_budget_bytes=2 * block)
        assert s.policy()["memory_budget_bytes"] == 2 * block
        assert same_bits(s.logits(ids), want)
        r = m.residency()
        assert r["budget_bytes"] == 2 * block and r["releases"] > 0 and r["misses"] > r["releases"]
        assert r["resident_bytes"] <= 2 * block
        with pytest.raises(CError) as e:
            s.set_policy(memory_budget_bytes=-5)
        assert e.value.name == "invalid_argument"


def test_generation_metadata_through_the_c_abi(c, built, tmp_path):
    """A format 1.1 artifact's pinned EOS ids (fwa_model_eos_ids) and its "generation"
    section (fwa_model_manifest_json) equal the nanobind model's; a 1.0 artifact pins none."""
    import json

    from test_generation_metadata import checkpoint

    from fwassist.export.pipeline import export_onnx

    with c.open_file(built[0]) as m:
        assert m.eos_ids() == []
        with pytest.raises(CError, match="not_found"):
            m.manifest_json("generation")
    out = tmp_path / "gen.fwa"
    pin = export_onnx(str(checkpoint(tmp_path, "tf5/jinja")), str(out), evidence=False,
                      quiet=True)
    nb = fwassist.Model.load(out, pin=pin)
    assert len(nb.eos_token_ids) == 2
    with c.open_file(str(out), pin=pin) as m:
        assert m.eos_ids() == nb.eos_token_ids
        assert json.loads(m.manifest_json("generation")) == nb.generation
        lib, ffi = c.lib, c.ffi
        needed = ffi.new("size_t*")
        one = ffi.new("int32_t[1]", [-7])
        assert lib.fwa_model_eos_ids(m.handle, one, 1, needed) == lib.FWA_ERR_BUFFER_TOO_SMALL
        assert needed[0] == 2 and one[0] == -7
        assert lib.fwa_model_eos_ids(m.handle, one, 1, ffi.NULL) == lib.FWA_ERR_NULL_ARGUMENT
        assert lib.fwa_model_eos_ids(ffi.NULL, one, 1, needed) != lib.FWA_OK


def test_expert_prefetch_private_weights_and_stats(c, built, ids, nb_model):
    """FWA_OPEN_PRIVATE_WEIGHTS and fwa_model_set_expert_prefetch: the same logits under a
    tiny budget, the prefetch counters move; a caller compiled before the prefetch fields
    were appended (smaller struct_size) still gets the fields it knows."""
    with nb_model.session(mode="fast") as ns:
        want = np.concatenate([ns.logits([t]) for t in ids])
    with fwassist.load_artifact(built[0]) as a:
        block = a.expert_blocks()[0]["length"]
    with c.open_file(built[0], private_weights=True) as m:
        r = m.residency()
        assert r["private_dense_bytes"] > 0 and r["prefetch"] == 0 and r["expert_bytes"] > 0
        m.set_expert_prefetch(True)
        with m.session(mode="fast", threads=2) as s:
            s.set_policy(memory_budget_bytes=8 * block)
            got = np.concatenate([s.logits([t]) for t in ids])
        assert same_bits(got, want)
        r = m.residency()
        assert r["prefetch"] == 1 and r["prefetch_issued"] > 0 and r["bytes_verified"] > 0
        assert r["prefetch_useful"] + r["prefetch_wasted"] <= r["prefetch_fetched"]
        old = c.ffi.new("fwa_residency_stats*")
        c.lib.fwa_residency_stats_init(old)
        old.struct_size = c.ffi.offsetof("fwa_residency_stats", "prefetch")
        assert c.lib.fwa_model_residency(m.handle, old) == 0
        assert old.misses == r["misses"] and old.prefetch_issued == 0  # not written
        c.lib.fwa_residency_stats_init(old)
        old.struct_size = 12
        assert c.lib.fwa_model_residency(m.handle, old) != 0
