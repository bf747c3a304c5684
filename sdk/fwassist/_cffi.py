# SPDX-License-Identifier: Apache-2.0
"""An ABI-mode cffi binding of the C library libfwassist: the way a host-side test harness
drives the same C ABI firmware links (``include/fwassist/fwassist.h``), no compiler needed.

The declarations come from the installed header itself (the text between its
``FWA_CDEF_BEGIN`` and ``FWA_CDEF_END`` markers), so the binding can never drift from it::

    from fwassist._cffi import CLibrary
    c = CLibrary("/opt/fwassist/lib/libfwassist.so")      # header: ../include/fwassist/
    with c.open_file("model.fwa", pin="sha256:...") as m, m.session(threads=2) as s:
        result = s.generate_text("int main(void) {", max_tokens=32)

Every failing call raises :class:`CError` with the status name and the library's message.
This module needs ``cffi`` (the ``test`` extra); nothing else imports it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .errors import Error, require

cffi = require("cffi", "test", "the C ABI binding fwassist._cffi")

_BEGIN = "FWA_CDEF_BEGIN"
_END = "/* FWA_CDEF_END */"


class CError(Error):
    """A C ABI call returned a status other than FWA_OK."""

    def __init__(self, function: str, status: int, name: str, message: str) -> None:
        super().__init__(f"{function}: {name} ({status}): {message}")
        self.function = function
        self.status = status
        self.name = name
        self.message = message


def cdef_from_header(header_text: str) -> str:
    """The declarations block of fwassist.h, as cffi's cdef takes it."""
    start = header_text.find(_BEGIN)
    end = header_text.find(_END)
    if start < 0 or end < start:
        raise ValueError(f"fwassist.h: markers {_BEGIN} / {_END} not found")
    start = header_text.index("*/", start) + 2   # the marker sits in a comment
    return header_text[start:end]


def default_header(library: str) -> str:
    """The header of an installed package: <prefix>/include/fwassist/fwassist.h beside
    <prefix>/lib*/libfwassist.so."""
    lib_dir = os.path.dirname(os.path.abspath(library))
    return os.path.join(os.path.dirname(lib_dir), "include", "fwassist", "fwassist.h")


@dataclass
class CGeneration:
    token_ids: list[int]
    text: str
    pieces: list[tuple[int, str]]
    stop_reason: str
    stats: dict[str, Any] = field(default_factory=dict)
    raw_stats: Any = None     # the fwa_generation_stats struct (for fwa_energy_estimate)


_STOP_REASONS = {0: "none", 1: "max_tokens", 2: "stop_string", 3: "stop_id",
                 4: "context_full", 5: "cancelled", 6: "policy"}


class CLibrary:
    """libfwassist loaded with cffi's ABI mode (dlopen)."""

    def __init__(self, library: str, header: Optional[str] = None) -> None:
        header = header or default_header(library)
        with open(header, encoding="utf-8") as f:
            self.cdef = cdef_from_header(f.read())
        self.ffi = cffi.FFI()
        self.ffi.cdef(self.cdef)
        self.lib: Any = self.ffi.dlopen(library)
        self.path = library

    # -- errors and buffers ---------------------------------------------------------------

    def status_name(self, status: int) -> str:
        return str(self.ffi.string(self.lib.fwa_status_string(status)).decode())

    def last_error(self) -> str:
        return str(self.ffi.string(self.lib.fwa_last_error()).decode("utf-8", "replace"))

    def check(self, function: str, status: int) -> None:
        if status != self.lib.FWA_OK:
            raise CError(function, int(status), self.status_name(status), self.last_error())

    def read_text(self, function: str, call: Callable[[Any, int, Any], int]) -> str:
        """Runs a text-writing call twice: once to learn the size, once to fill the buffer."""
        needed = self.ffi.new("size_t*")
        status = call(self.ffi.NULL, 0, needed)
        if status != self.lib.FWA_ERR_BUFFER_TOO_SMALL:
            self.check(function, status)
        buf = self.ffi.new("char[]", needed[0])
        self.check(function, call(buf, needed[0], needed))
        return str(self.ffi.string(buf, needed[0] - 1).decode("utf-8"))

    # -- library --------------------------------------------------------------------------

    @property
    def version(self) -> str:
        return str(self.ffi.string(self.lib.fwa_version_string()).decode())

    @property
    def version_number(self) -> int:
        return int(self.lib.fwa_version_number())

    @property
    def abi_version(self) -> int:
        return int(self.lib.fwa_abi_version())

    def cpu_features(self) -> str:
        return self.read_text("fwa_cpu_features", self.lib.fwa_cpu_features)

    def kernel_choices(self) -> dict[str, str]:
        text = self.read_text("fwa_kernel_choices", self.lib.fwa_kernel_choices)
        return dict(item.split("=", 1) for item in text.split(","))

    def energy_estimate(self, generation: "CGeneration", power: dict[str, float],
                        grid_intensity_g_per_kwh: float, embodied_g: float = 0.0) -> dict[str, float]:
        """fwa_energy_estimate of a generation; power maps fwa_energy_model's field names
        (idle_power_w, core_busy_power_w, ...) to values."""
        model = self.ffi.new("fwa_energy_model*")
        self.lib.fwa_energy_model_init(model)
        for name, value in power.items():
            setattr(model, name, value)
        report = self.ffi.new("fwa_energy_report*")
        self.lib.fwa_energy_report_init(report)
        self.check("fwa_energy_estimate", self.lib.fwa_energy_estimate(
            generation.raw_stats, model, grid_intensity_g_per_kwh, embodied_g, report))
        return {name: float(getattr(report, name))
                for name, _ in self.ffi.typeof("fwa_energy_report").fields
                if name not in ("struct_size", "reserved0")}

    # -- models ---------------------------------------------------------------------------

    def _open_options(self, pin: Optional[str], lazy: bool,
                      private_weights: bool = False) -> tuple[Any, Any]:
        opts = self.ffi.new("fwa_open_options*")
        self.lib.fwa_open_options_init(opts)
        keep = self.ffi.new("char[]", pin.encode()) if pin is not None else self.ffi.NULL
        opts.pin = keep
        opts.flags = ((self.lib.FWA_OPEN_LAZY_VERIFY if lazy else 0)
                      | (self.lib.FWA_OPEN_PRIVATE_WEIGHTS if private_weights else 0))
        return opts, keep

    def open_file(self, path: "str | os.PathLike[str]", pin: Optional[str] = None,
                  lazy: bool = False, private_weights: bool = False) -> "CModel":
        opts, _keep = self._open_options(pin, lazy, private_weights)
        out = self.ffi.new("fwa_model**")
        self.check("fwa_model_open_file",
                   self.lib.fwa_model_open_file(os.fsencode(path), opts, out))
        return CModel(self, out[0], None)

    def open_memory(self, data: bytes, pin: Optional[str] = None, lazy: bool = False) -> "CModel":
        """The buffer is copied into memory the returned model keeps alive (the C ABI borrows
        it for the model's lifetime)."""
        opts, _keep = self._open_options(pin, lazy)
        buf = self.ffi.new("uint8_t[]", data)
        out = self.ffi.new("fwa_model**")
        self.check("fwa_model_open_memory",
                   self.lib.fwa_model_open_memory(buf, len(data), opts, out))
        return CModel(self, out[0], buf)


class CModel:
    def __init__(self, c: CLibrary, handle: Any, buffer: Any) -> None:
        self.c = c
        self.handle = handle
        self._buffer = buffer   # the borrowed artifact bytes of open_memory

    def close(self) -> None:
        if self.handle is not None:
            self.c.lib.fwa_model_free(self.handle)
            self.handle = None

    def __enter__(self) -> "CModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def info(self) -> dict[str, Any]:
        c = self.c
        info = c.ffi.new("fwa_model_info*")
        c.lib.fwa_model_info_init(info)
        c.check("fwa_model_get_info", c.lib.fwa_model_get_info(self.handle, info))
        out: dict[str, Any] = {}
        for name, _ in c.ffi.typeof("fwa_model_info").fields:
            if name == "pin":
                out[name] = c.ffi.string(info.pin).decode()
            elif name != "struct_size":
                out[name] = int(getattr(info, name))
        return out

    @property
    def pin(self) -> str:
        return str(self.info()["pin"])

    def residency(self) -> dict[str, int]:
        c = self.c
        st = c.ffi.new("fwa_residency_stats*")
        c.lib.fwa_residency_stats_init(st)
        c.check("fwa_model_residency", c.lib.fwa_model_residency(self.handle, st))
        return {name: int(getattr(st, name)) for name, _ in c.ffi.typeof("fwa_residency_stats").fields
                if name not in ("struct_size", "reserved0")}

    def set_expert_prefetch(self, on: bool) -> None:
        self.c.check("fwa_model_set_expert_prefetch",
                     self.c.lib.fwa_model_set_expert_prefetch(self.handle, 1 if on else 0))

    def manifest_json(self, section: str) -> str:
        c = self.c
        return c.read_text("fwa_model_manifest_json", lambda b, n, need: c.lib.fwa_model_manifest_json(
            self.handle, section.encode(), b, n, need))

    def eos_ids(self) -> list[int]:
        """The end-of-sequence ids the artifact pins (format 1.1); [] for 1.0."""
        c = self.c
        needed = c.ffi.new("size_t*")
        status = c.lib.fwa_model_eos_ids(self.handle, c.ffi.NULL, 0, needed)
        if status != c.lib.FWA_ERR_BUFFER_TOO_SMALL:
            c.check("fwa_model_eos_ids", status)
            return []
        ids = c.ffi.new("int32_t[]", needed[0])
        c.check("fwa_model_eos_ids", c.lib.fwa_model_eos_ids(self.handle, ids, needed[0],
                                                             needed))
        return list(ids)

    def tokenize(self, text: str) -> list[int]:
        c = self.c
        raw = text.encode("utf-8")
        needed = c.ffi.new("size_t*")
        status = c.lib.fwa_tokenize(self.handle, raw, len(raw), c.ffi.NULL, 0, needed)
        if status != c.lib.FWA_ERR_BUFFER_TOO_SMALL:
            c.check("fwa_tokenize", status)
            return []
        ids = c.ffi.new("int32_t[]", needed[0])
        c.check("fwa_tokenize", c.lib.fwa_tokenize(self.handle, raw, len(raw), ids, needed[0],
                                                   needed))
        return list(ids)

    def detokenize(self, ids: Sequence[int], skip_special: bool = False) -> str:
        c = self.c
        arr = c.ffi.new("int32_t[]", list(ids))
        flags = c.lib.FWA_DETOKENIZE_SKIP_SPECIAL if skip_special else 0
        return c.read_text("fwa_detokenize", lambda b, n, need: c.lib.fwa_detokenize(
            self.handle, arr, len(ids), flags, b, n, need))

    def session(self, *, mode: str = "exact", max_context: int = 0, threads: int = 1,
                prefill_chunk: int = 128, kv_cache: str = "f32") -> "CSession":
        c = self.c
        opts = c.ffi.new("fwa_session_options*")
        c.lib.fwa_session_options_init(opts)
        opts.mode = {"exact": c.lib.FWA_MODE_EXACT, "fast": c.lib.FWA_MODE_FAST}[mode]
        opts.kv_cache = {"f32": c.lib.FWA_KV_F32, "f16": c.lib.FWA_KV_F16,
                         "bf16": c.lib.FWA_KV_BF16}[kv_cache]
        opts.max_context = max_context
        opts.n_threads = threads
        opts.prefill_chunk = prefill_chunk
        out = c.ffi.new("fwa_session**")
        c.check("fwa_session_create", c.lib.fwa_session_create(self.handle, opts, out))
        return CSession(self, out[0])

    def sampler(self, **sampling: Any) -> "CSampler":
        c = self.c
        params = sampling_params(c, **sampling)
        out = c.ffi.new("fwa_sampler**")
        c.check("fwa_sampler_create", c.lib.fwa_sampler_create(self.handle, params, out))
        return CSampler(c, out[0])


def sampling_params(c: CLibrary, *, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                    repetition_penalty: float = 1.0, seed: int = 0, into: Any = None) -> Any:
    p = into if into is not None else c.ffi.new("fwa_sampling_params*")
    c.lib.fwa_sampling_params_init(p)
    p.temperature = temperature
    p.top_k = top_k
    p.top_p = top_p
    p.repetition_penalty = repetition_penalty
    p.seed = seed
    return p


class CSampler:
    def __init__(self, c: CLibrary, handle: Any) -> None:
        self.c = c
        self.handle = handle

    def sample(self, session: "CSession") -> int:
        tok = self.c.ffi.new("int32_t*")
        self.c.check("fwa_sampler_sample",
                     self.c.lib.fwa_sampler_sample(self.handle, session.handle, tok))
        return int(tok[0])

    def close(self) -> None:
        if self.handle is not None:
            self.c.lib.fwa_sampler_free(self.handle)
            self.handle = None


class CSession:
    def __init__(self, model: CModel, handle: Any) -> None:
        self.model = model
        self.c = model.c
        self.handle = handle

    def close(self) -> None:
        if self.handle is not None:
            self.c.lib.fwa_session_free(self.handle)
            self.handle = None

    def __enter__(self) -> "CSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def eval(self, ids: Sequence[int]) -> None:
        arr = self.c.ffi.new("int32_t[]", list(ids))
        self.c.check("fwa_session_eval", self.c.lib.fwa_session_eval(self.handle, arr, len(ids)))

    def decode(self, token: int) -> None:
        self.c.check("fwa_session_decode", self.c.lib.fwa_session_decode(self.handle, token))

    def last_logits(self) -> np.ndarray:
        """A copy of the last evaluated token's logits (float32)."""
        ptr = self.c.ffi.new("float**")
        n = self.c.ffi.new("size_t*")
        self.c.check("fwa_session_logits", self.c.lib.fwa_session_logits(self.handle, ptr, n))
        return np.frombuffer(self.c.ffi.buffer(ptr[0], 4 * n[0]), dtype=np.float32).copy()

    def logits(self, ids: Sequence[int]) -> np.ndarray:
        """The logits of every token of ids, evaluated one decode step at a time: [n, vocab]."""
        rows = []
        for i in ids:
            self.decode(int(i))
            rows.append(self.last_logits())
        return np.stack(rows)

    @property
    def n_past(self) -> int:
        n = self.c.ffi.new("int64_t*")
        self.c.check("fwa_session_n_past", self.c.lib.fwa_session_n_past(self.handle, n))
        return int(n[0])

    def truncate(self, n: int) -> None:
        self.c.check("fwa_session_truncate", self.c.lib.fwa_session_truncate(self.handle, n))

    def reset(self) -> None:
        self.c.check("fwa_session_reset", self.c.lib.fwa_session_reset(self.handle))

    def set_policy(self, max_active_cores: int = 0, target_ms_per_token: float = 0.0,
                   memory_budget_bytes: int = 0, lock_experts: bool = False) -> None:
        p = self.c.ffi.new("fwa_sched_policy*")
        self.c.lib.fwa_sched_policy_init(p)
        p.max_active_cores = max_active_cores
        p.target_ms_per_token = target_ms_per_token
        p.memory_budget_bytes = memory_budget_bytes
        p.lock_experts = 1 if lock_experts else 0
        self.c.check("fwa_session_set_policy", self.c.lib.fwa_session_set_policy(self.handle, p))

    def policy(self) -> dict[str, Any]:
        p = self.c.ffi.new("fwa_sched_policy*")
        self.c.lib.fwa_sched_policy_init(p)
        self.c.check("fwa_session_get_policy", self.c.lib.fwa_session_get_policy(self.handle, p))
        return {"max_active_cores": int(p.max_active_cores),
                "target_ms_per_token": float(p.target_ms_per_token),
                "memory_budget_bytes": int(p.memory_budget_bytes),
                "lock_experts": bool(p.lock_experts)}

    def experts_activated(self) -> list[int]:
        c = self.c
        layers = self.model.info()["num_layers"]
        out = c.ffi.new("int64_t[]", layers)
        needed = c.ffi.new("size_t*")
        c.check("fwa_session_experts_activated",
                c.lib.fwa_session_experts_activated(self.handle, out, layers, needed))
        return [int(v) for v in out]

    def expert_tokens(self) -> np.ndarray:
        """fwa_session_expert_tokens as uint64 [layers, experts]."""
        c = self.c
        info = self.model.info()
        n = info["num_layers"] * info["num_experts"]
        out = c.ffi.new("uint64_t[]", n)
        needed = c.ffi.new("size_t*")
        c.check("fwa_session_expert_tokens",
                c.lib.fwa_session_expert_tokens(self.handle, out, n, needed))
        return np.frombuffer(c.ffi.buffer(out), dtype=np.uint64).reshape(
            info["num_layers"], info["num_experts"]).copy()

    def generate(self, prompt_ids: Optional[Sequence[int]] = None, prompt: Optional[str] = None,
                 *, max_tokens: int = 64, stop: Sequence[str] = (), stop_ids: Sequence[int] = (),
                 cancel_after: Optional[int] = None, **sampling: Any) -> CGeneration:
        """fwa_generate (prompt_ids) or fwa_generate_text (prompt), collecting the streamed
        pieces. cancel_after=k makes the callback ask to stop after k tokens."""
        c = self.c
        params = c.ffi.new("fwa_generate_params*")
        c.lib.fwa_generate_params_init(params)
        sampling_params(c, into=c.ffi.addressof(params, "sampling"), **sampling)
        params.max_tokens = max_tokens
        keep = [c.ffi.new("char[]", s.encode()) for s in stop]
        stop_arr = c.ffi.new("char*[]", keep)
        params.stop_strings = stop_arr
        params.n_stop_strings = len(keep)
        ids_arr = c.ffi.new("int32_t[]", list(stop_ids))
        params.stop_ids = ids_arr
        params.n_stop_ids = len(stop_ids)
        stats = c.ffi.new("fwa_generation_stats*")
        c.lib.fwa_generation_stats_init(stats)
        pieces: list[tuple[int, str]] = []
        raw: list[bytes] = []

        def on_token(user: Any, token: int, piece: Any, n: int) -> int:
            data = bytes(c.ffi.buffer(piece, n)) if n else b""
            raw.append(data)
            pieces.append((int(token), data.decode("utf-8", "replace")))
            tokens = sum(1 for t, _ in pieces if t >= 0)
            return 1 if cancel_after is not None and tokens >= cancel_after else 0

        callback = c.ffi.callback("fwa_token_callback")(on_token)

        if prompt is not None:
            text = prompt.encode("utf-8")
            c.check("fwa_generate_text", c.lib.fwa_generate_text(
                self.handle, text, len(text), params, callback, c.ffi.NULL, stats))
        else:
            ids = list(prompt_ids or [])
            arr = c.ffi.new("int32_t[]", ids)
            c.check("fwa_generate", c.lib.fwa_generate(
                self.handle, arr, len(ids), params, callback, c.ffi.NULL, stats))
        st = {name: (int(getattr(stats, name)) if ctype.type.kind == "primitive" and
                     ctype.type.cname.startswith(("int", "uint")) else float(getattr(stats, name)))
              for name, ctype in c.ffi.typeof("fwa_generation_stats").fields
              if name not in ("struct_size", "stop_reason", "reserved0")}
        return CGeneration(token_ids=[t for t, _ in pieces if t >= 0],
                           text=b"".join(raw).decode("utf-8", "replace"), pieces=pieces,
                           stop_reason=_STOP_REASONS.get(int(stats.stop_reason), "?"), stats=st,
                           raw_stats=stats)
