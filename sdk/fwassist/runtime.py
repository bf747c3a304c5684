# SPDX-License-Identifier: Apache-2.0
"""The runtime: load a verified ``.fwa`` model and run it (native, csrc/model).

``Model.load(path, pin=...)`` maps (or with ``copy=True`` reads into private memory) and
verifies the artifact (fail closed: any bad byte, or a pin that differs, raises
:class:`fwassist.ArtifactError`). A model is read-only and shared;
``model.session(...)`` creates a context with its own KV cache and buffers, allocated once.
Logits are bit-identical across thread counts, prefill chunk sizes, runs and CPUs (x86 and
aarch64, every kernel variant) for a given compute mode:

* ``exact``: float32 activations times the dequantized weights (matches the QAT graph run by
  onnxruntime within float rounding);
* ``fast``: activations quantized per block of 32 to int8 (round half to even), integer dot
  products, float32 epilogue.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional, TypeVar, Union

import numpy as np

from . import _core, _trust, memlimit
from .errors import ArtifactError
from .pin import check_path, parse_pin
from .tokenizer import Tokenizer

__all__ = ["Model", "Session", "Generation", "Token", "Stream"]

MODES = ("exact", "fast")
KV_CACHES = ("f32", "f16", "bf16")
EOS_TEXTS = ("<|endoftext|>", "<|im_end|>")
_REALS = ("rms_norm_eps", "rope_theta")


T = TypeVar("T")


def _artifact_errors(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    try:
        return fn(*args, **kwargs)
    except _core.ArtifactFailure as e:
        status, message = e.args
        raise ArtifactError(status, message) from None


def _ids(ids: Any, what: str = "ids") -> np.ndarray:
    a = np.asarray(ids)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.ndim != 1:
        raise ValueError(f"{what} must be a 1-D sequence of token ids, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        raise ValueError(f"{what} must be integers, got {a.dtype}")
    if a.size and (a.min() < -2**31 or a.max() >= 2**31):
        bad = int(a.max()) if a.max() >= 2**31 else int(a.min())
        raise ValueError(f"token id {bad} is outside the vocabulary")
    return np.ascontiguousarray(a, dtype=np.int32)


def _check_session_options(mode: str, kv_cache: str, max_context: Optional[int]) -> None:
    """The options of a session (Model.session) and of a batch decoder's slots."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if kv_cache not in KV_CACHES:
        raise ValueError(f"kv_cache must be one of {KV_CACHES}, got {kv_cache!r}")
    if max_context is not None and int(max_context) < 1:
        raise ValueError(f"max_context must be >= 1 (or None for the default), got "
                         f"{max_context}")


def _check_sampling(temperature: float, top_p: float, repetition_penalty: float) -> None:
    for name, value in (("temperature", temperature), ("top_p", top_p),
                        ("repetition_penalty", repetition_penalty)):
        Session._check_float32(name, value)


def _check_seed(seed: int) -> None:
    if not 0 <= int(seed) < 2**64:
        raise ValueError("seed must be in [0, 2**64)")


def _stop_ids(model: Model, stop_ids: Optional[Sequence[int]]) -> list[int]:
    """``stop_ids`` None: the end-of-sequence ids the artifact pins."""
    return [int(i) for i in (model.eos_token_ids if stop_ids is None else stop_ids)]


def _native_guard(model: Model, policy: Any) -> Any:
    """The native code guard of ``policy`` (see Session.stream), None for no policy."""
    if policy is None:
        return None
    from .guard import compile_policy

    return compile_policy(model, policy)._native


class Token(NamedTuple):
    """One generated token and the text it completes (may be "" while a character is split
    across tokens or may begin a stop string, or when the model has no tokenizer). The last
    item of a stream may carry id -1: text held back until the end, with no new token."""

    id: int
    text: str


@dataclass
class Generation:
    """The result of :meth:`Session.generate`."""

    text: str
    token_ids: list[int]
    # max_tokens | stop_string | stop_id | context_full | cancelled | policy (the code guard
    # found every token the sampler can pick banned)
    stop_reason: str
    stats: dict[str, Any] = field(default_factory=dict)


class Model:
    """A verified model (mapped, or a private copy). Thread-safe; create sessions to run it."""

    def __init__(self, native: _core.NativeModel, path: str) -> None:
        self._native = native
        self.path = path
        self.config: dict[str, Any] = json.loads(native.config_json())
        for k in _REALS:
            self.config[k] = float(self.config[k])
        tj = native.tokenizer_json()  # the tokenizer.json text, or None without a tokenizer
        self.tokenizer: Optional[Tokenizer] = (Tokenizer.from_json(tj) if isinstance(tj, str)
                                               else None)
        gj = native.generation_json()  # format 1.1: the pinned generation metadata, else None
        self.generation: Optional[dict[str, Any]] = (json.loads(gj) if isinstance(gj, str)
                                                     else None)
        # The verified signed release when loaded with trust= (None otherwise).
        self.release: Optional[_trust.DeviceRelease] = None

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"], pin: Optional[str] = None,
             lazy: bool = False, copy: bool = False, strict: bool = False, trust: Any = None,
             signature: Any = None, counter: Any = None, root_keys: Any = None,
             policy_signature: Any = None, policy_counter: Any = None,
             root_threshold: int = 1, private_weights: bool = False) -> Model:
        """Opens and verifies the regular file ``path`` (a FIFO, directory or device raises
        ArtifactError("io_error") at once; a path with a NUL character ValueError).

        pin: None or "sha256:<64 lowercase hex>" (:func:`fwassist.pin.parse_pin`: "" is an
        error, not "no pin"), checked before anything is parsed. lazy: verify each expert's
        block on its first use instead of now.

        What stays verified after load depends on the mode (docs/runtime.md, "Verification
        guarantees per open mode"). By default the file is mapped: every byte is verified
        before its first use, but a later write to the file shows through the mapping, so the
        weights stay the verified ones only if the storage prevents writes
        (:attr:`protection` names what does; "none" if nothing). ``copy=True`` reads the file
        into private memory and verifies that copy: nothing done to the file afterwards
        changes the model (costs RAM for the whole file). ``strict=True`` refuses a mapping
        whose protection is "none" (ArtifactError "io_error", "unprotected mapping: ...").
        A file truncated while mapped makes the next evaluation raise ArtifactError
        ("io_error") instead of crashing the process. ``private_weights=True`` copies the
        non-expert weights (embedding, attention, norms, routers, lm_head) into private memory
        and verifies the copy: under a memory limit they are never evicted and read back from
        the file unverified, while the experts stay mapped under the expert budget.

        trust: a trust policy (path, bytes, a :class:`fwassist.release.TrustPolicy`, or an
        object with ``raw`` or ``path``): after the artifact verifies, the C++ core checks its
        signed release (``signature``, default ``path + ".sig"``) against the policy and the
        monotonic ``counter`` (required: a file store path, a
        :class:`fwassist.release.FileCounter`, or an object with read()/advance();
        fwassist._trust) and raises
        :class:`fwassist.ReleaseError` naming the refusal; :attr:`release` then holds the
        verified versions and signers. The counter is never advanced here: call
        :meth:`commit_security_version` after the new model booted successfully.

        root_keys (PEM public keys: text, bytes or paths) make the policy a signed one
        (docs/releases.md §5): the core refuses it unless ``policy_signature`` (default the
        policy's path + ".sig") holds ``root_threshold`` valid root signatures over its bytes
        and its policy_version is not below ``policy_counter`` (required; the same forms as
        ``counter``; :meth:`commit_policy_version` raises it)."""
        p = check_path(path)
        native = _artifact_errors(_core.NativeModel.load, p, parse_pin(pin), bool(lazy),
                                  bool(copy), bool(strict), bool(private_weights))
        release = None
        if trust is not None:
            release = _trust.verify(native, p, trust, signature, counter,
                                    root_keys=root_keys, policy_signature=policy_signature,
                                    policy_counter=policy_counter,
                                    root_threshold=root_threshold)
        elif any(x is not None for x in (signature, counter, root_keys, policy_signature,
                                         policy_counter)):
            raise ValueError("signature=, counter=, root_keys=, policy_signature= and "
                             "policy_counter= need trust= (the policy to check them)")
        model = cls(native, p)
        model.release = release
        return model

    def commit_security_version(self, counter: Any) -> None:
        """Raises the monotonic counter to this model's verified security_version (never lowers
        it; equal is a no-op). Only for a model loaded with ``trust=``; ReleaseError
        ("rollback") if the counter is already higher, ("counter_unavailable") if it cannot be
        read or advanced."""
        _trust.commit(self._native, counter)

    def commit_policy_version(self, counter: Any) -> None:
        """Raises the policy counter to this model's verified policy_version (never lowers
        it), so an older signed policy is refused from then on. Only for a model loaded with
        ``root_keys=``; ReleaseError as :meth:`commit_security_version`."""
        _trust.commit_policy(self._native, counter)

    @property
    def pin(self) -> str:
        return str(self._native.pin())

    @property
    def protection(self) -> str:
        """What keeps the weights equal to the verified bytes until close: "copy" (private
        memory), "fs-verity", "immutable", "read-only-mount", "memfd-sealed", or "none" (a
        mapped file that can still be written or truncated)."""
        return str(self._native.protection())

    @property
    def vocab_size(self) -> int:
        return int(self._native.vocab_size)

    def set_expert_budget(self, budget_bytes: Union[int, str], mlock: bool = False, *,
                          kv_bytes: int = 0, headroom: int = 512 << 20,
                          limit: Optional[int] = None) -> int:
        """Keeps at most ``budget_bytes`` of expert weights resident (0: unlimited), for every
        session of this model. Cold experts are dropped from RAM (madvise) and verified again
        on their next use; ``mlock`` locks the resident ones. Call between generations.

        ``"auto"``: the budget that fits the memory limit (``limit``, else the cgroup's or the
        physical memory, :func:`fwassist.memlimit.memory_limit`) minus the non-expert weights,
        ``kv_bytes`` (the sessions' KV caches) and ``headroom``; 0 when every expert fits.
        Returns the budget set."""
        if isinstance(budget_bytes, str):
            if budget_bytes != "auto":
                raise ValueError(f"budget_bytes must be an int >= 0 or 'auto', got "
                                 f"{budget_bytes!r}")
            budget = self._auto_budget(kv_bytes, headroom, limit)
        else:
            budget = int(budget_bytes)
            if budget < 0:
                raise ValueError(f"budget_bytes must be >= 0, got {budget_bytes}")
        self._native.set_expert_budget(budget, bool(mlock))
        return budget

    def _auto_budget(self, kv_bytes: int, headroom: int, limit: Optional[int]) -> int:
        r = self._native.residency()
        lim = memlimit.memory_limit().bytes if limit is None else int(limit)
        expert = int(r["expert_bytes"])
        # Mapped non-expert weights live in the page cache, charged to the cgroup all the same.
        dense = int(r["private_dense_bytes"]) or max(0, os.path.getsize(self.path) - expert)
        c = self.config
        moe_layers = sum(1 for i in range(int(c["num_hidden_layers"]))
                         if i not in c.get("mlp_only_layers", []))
        blocks = max(1, moe_layers * int(c.get("num_experts", 0) or 0))
        # One layer's top-k pinned plus the next layer's prefetched.
        floor = 2 * int(c.get("num_experts_per_tok", 0) or 0) * (expert // blocks)
        return memlimit.auto_expert_budget(lim, expert_bytes=expert, dense_bytes=dense,
                                           kv_bytes=int(kv_bytes), headroom=int(headroom),
                                           min_bytes=floor)

    def set_expert_prefetch(self, on: bool = True) -> None:
        """Under an expert budget: while a decode step runs an MoE layer, the next MoE layer's
        router runs on its input and a background thread reads and verifies the predicted
        experts ahead (logits unchanged: every use still checks its block)."""
        self._native.set_expert_prefetch(bool(on))

    def residency(self) -> dict[str, Any]:
        """Expert residency since load: budget_bytes, resident_bytes, hits, misses (uses that
        verified a block again), releases, lock_failures, locked, hit_rate; prefetch (on),
        expert_bytes, private_dense_bytes, prefetch_issued / _fetched / _useful / _wasted,
        bytes_verified (expert bytes hashed again) and stall_ns (decode time in misses)."""
        r = dict(self._native.residency())
        uses = r["hits"] + r["misses"]
        r["hit_rate"] = r["hits"] / uses if uses else 1.0
        return r

    def session(self, max_context: Optional[int] = None, mode: str = "exact", threads: int = 1,
                prefill_chunk: int = 128, kv_cache: str = "f32") -> Session:
        """A new session. max_context defaults to min(max_position_embeddings, 4096); its KV
        cache and every buffer are allocated now. kv_cache: the cache's storage, "f32", or
        "f16" / "bf16" (half the memory per token, kv_bytes_per_token; stored rounded to
        nearest even, attention still in float32, bit-identical on every ISA)."""
        _check_session_options(mode, kv_cache, max_context)
        native = self._native.session(int(max_context or 0), mode, int(threads),
                                      int(prefill_chunk), kv_cache)
        return Session(self, native)

    def kv_bytes_per_token(self, kv_cache: str = "f32") -> int:
        """Bytes of KV cache one token of context takes with this storage type (K and V, every
        layer and KV head)."""
        if kv_cache not in KV_CACHES:
            raise ValueError(f"kv_cache must be one of {KV_CACHES}, got {kv_cache!r}")
        return int(self._native.kv_bytes_per_token(kv_cache))

    def encode(self, text: str) -> list[int]:
        if self.tokenizer is None:
            raise ValueError("the model was exported without a tokenizer: pass prompt_ids")
        return self.tokenizer.encode(text)

    @property
    def eos_token_ids(self) -> list[int]:
        """The end-of-sequence ids the artifact pins (format 1.1, from the checkpoint's
        tokenizer_config.json and generation_config.json), ascending; [] for a 1.0 artifact."""
        return [int(i) for i in self._native.eos_ids()]

    @property
    def chat_template(self) -> Optional[str]:
        """The pinned Jinja chat template, verbatim; None when the artifact has none."""
        g = self.generation
        return None if g is None else g["chat_template"]

    def apply_chat_template(self, messages: Sequence[dict[str, Any]], *,
                            add_generation_prompt: bool = True, **variables: Any) -> str:
        """Renders the pinned chat template for ``messages`` (``[{"role", "content"}, ...]``)
        as transformers' ``apply_chat_template(tokenize=False)`` does: a sandboxed Jinja
        environment with ``trim_blocks``, ``lstrip_blocks`` and loop controls,
        ``raise_exception``, ``strftime_now`` and a ``tojson`` that keeps non-ASCII text.
        ``bos_token`` is the text of the pinned bos id, ``eos_token`` that of the pinned EOS
        id when there is exactly one (with several, a template using it fails, naming it).
        ``variables`` go to the template as well (``tools``, ``documents``...). Needs jinja2
        (``pip install 'fwassist[chat]'``); ValueError without a template or tokenizer, or
        when the template raises."""
        from .errors import require

        jinja2 = require("jinja2", "chat", "rendering the chat template")
        from jinja2 import ext, meta
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        g, tok = self.generation, self.tokenizer
        if g is None or g["chat_template"] is None:
            raise ValueError("the artifact pins no chat template")
        if tok is None:
            raise ValueError("the artifact has no tokenizer to write the template's tokens")

        def raise_exception(message: str) -> None:
            raise jinja2.exceptions.TemplateError(message)

        def tojson(x: Any, ensure_ascii: bool = False, indent: Optional[int] = None,
                   separators: Optional[tuple[str, str]] = None, sort_keys: bool = False) -> str:
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                              separators=separators, sort_keys=sort_keys)

        def strftime_now(fmt: str) -> str:
            import datetime

            return datetime.datetime.now().strftime(fmt)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[ext.loopcontrols])
        env.filters["tojson"] = tojson
        env.globals.update(raise_exception=raise_exception, strftime_now=strftime_now)
        special: dict[str, Any] = {}
        if g["bos_token_id"] is not None:
            special["bos_token"] = tok.decode([g["bos_token_id"]])
        if len(g["eos_token_ids"]) == 1:
            special["eos_token"] = tok.decode(g["eos_token_ids"])
        if g["pad_token_id"] is not None:
            special["pad_token"] = tok.decode([g["pad_token_id"]])
        try:
            used = meta.find_undeclared_variables(env.parse(g["chat_template"]))
            if "eos_token" in used and "eos_token" not in special and "eos_token" not in variables:
                raise ValueError(f"chat template: it writes eos_token, and the artifact pins "
                                 f"{len(g['eos_token_ids'])} EOS ids {g['eos_token_ids']}: "
                                 f"which one is its text is ambiguous; pass eos_token=...")
            template = env.from_string(g["chat_template"])
            return str(template.render(**{"messages": list(messages), "tools": None,
                                          "documents": None,
                                          "add_generation_prompt": add_generation_prompt,
                                          **special, **variables}))
        except jinja2.exceptions.TemplateError as e:
            raise ValueError(f"chat template: {e}") from None

    def eos_ids(self) -> list[int]:
        """Ids to stop generating at: the pinned :attr:`eos_token_ids` when the artifact has
        them (format 1.1), else the tokenizer's end-of-text special tokens (EOS_TEXTS)."""
        if self.generation is not None:
            return self.eos_token_ids
        tok = self.tokenizer
        if tok is None:
            return []
        out = []
        for t in EOS_TEXTS:
            ids = tok.encode(t)
            if len(ids) == 1 and tok.decode(ids, skip_special_tokens=True) == "":
                out.append(ids[0])
        return out


class Stream:
    """Iterator of :class:`Token` for one generation; ``result`` is set when it ends."""

    def __init__(self, native: _core.NativeGeneration) -> None:
        self._native = native
        self._done = False
        self.result: Optional[Generation] = None

    def __iter__(self) -> Stream:
        return self

    def stats(self) -> dict[str, Any]:
        """The generation's statistics so far (also of one abandoned before its end: what it
        already cost, e.g. for energy accounting)."""
        return dict(self._native.stats())

    def __next__(self) -> Token:
        while not self._done:
            tok, piece, done = _artifact_errors(self._native.next)
            if done:
                self._done = True
                self.result = Generation(self._native.text, list(self._native.token_ids),
                                         self._native.stop_reason, dict(self._native.stats()))
            if tok >= 0 or piece:
                return Token(int(tok), piece)
        raise StopIteration


class Session:
    """A context over a model: KV cache, history and buffers. One call at a time."""

    def __init__(self, model: Model, native: _core.NativeSession) -> None:
        self.model = model
        self._native = native

    def _get(self) -> _core.NativeSession:
        if self._native.closed:
            raise RuntimeError("the session is closed")
        return self._native

    # context -------------------------------------------------------------------------------
    @property
    def n_past(self) -> int:
        return int(self._get().n_past)

    @property
    def max_context(self) -> int:
        return int(self._get().max_context)

    @property
    def mode(self) -> str:
        return str(self._get().mode)

    @property
    def tokens(self) -> list[int]:
        return list(self._get().tokens)

    def reset(self) -> None:
        self._get().reset()

    def set_policy(self, max_active_cores: int = 0, target_ms_per_token: float = 0.0) -> None:
        """Scheduler policy: at most ``max_active_cores`` of the session's threads (0: all;
        the others stay parked); with ``target_ms_per_token`` > 0 the fewest cores that meet
        that decode latency, re-decided every 16 decode steps with hysteresis; with 0
        ("fastest") all of them, except one shed while another process takes its core
        (found by trial, docs/runtime.md). Results never depend on it."""
        threads = int(self._get().threads)
        if max_active_cores < 0 or max_active_cores > threads:
            raise ValueError(f"max_active_cores must be in [0, {threads}], "
                             f"got {max_active_cores}")
        if not (target_ms_per_token >= 0 and np.isfinite(target_ms_per_token)):
            raise ValueError(f"target_ms_per_token must be finite and >= 0, "
                             f"got {target_ms_per_token}")
        self._get().set_policy(int(max_active_cores), float(target_ms_per_token))

    def policy(self) -> dict[str, Any]:
        """max_active_cores, target_ms_per_token, and active_cores (in use now)."""
        max_cores, target, active = self._get().policy()
        return {"max_active_cores": int(max_cores), "target_ms_per_token": float(target),
                "active_cores": int(active)}

    def expert_tokens(self) -> np.ndarray:
        """Tokens routed to each (layer, expert) since the last generation started (or the
        session was created): uint64 [layers, experts], zero rows for dense layers."""
        c = self.model.config
        flat = np.asarray(self._get().expert_tokens(), dtype=np.uint64)
        return flat.reshape(c["num_hidden_layers"], c["num_experts"])

    def truncate(self, n: int) -> None:
        """Keeps the first ``n`` tokens of the context (for editor-style re-completion)."""
        self._get().truncate(int(n))

    def close(self) -> None:
        self._native.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # forward -------------------------------------------------------------------------------
    def logits(self, ids: Union[Sequence[int], np.ndarray]) -> np.ndarray:
        """Appends ``ids`` to the context and returns their logits, float32 [len(ids), vocab]."""
        native = self._get()
        a = _ids(ids)
        if a.size == 0:
            raise ValueError("no token ids")
        # Checked before the [n, vocab] output is allocated: 10^7 ids would otherwise end in
        # a MemoryError instead of naming the context.
        start, ctx = int(native.n_past), int(native.max_context)
        if a.size > ctx - start:
            raise ValueError(f"session: {a.size} tokens after {start} exceed the context of "
                             f"{ctx} tokens")
        out = np.empty((a.size, self.model.vocab_size), dtype=np.float32)
        _artifact_errors(native.logits, a, out)
        return out

    # generation ----------------------------------------------------------------------------
    def stream(self, prompt: Optional[str] = None, *, prompt_ids: Optional[Sequence[int]] = None,
               max_tokens: int = 64, temperature: float = 0.0, top_k: int = 0,
               top_p: float = 1.0, repetition_penalty: float = 1.0, seed: int = 0,
               stop: Sequence[str] = (), stop_ids: Optional[Sequence[int]] = None,
               policy: Any = None) -> Stream:
        """Starts a generation (the prompt is prefilled now, reusing the context's longest
        common prefix with it) and returns an iterator of :class:`Token`. The context then
        holds the prompt and every generated token. Any later call that uses the context (a
        new stream, ``logits``, ``truncate``, ``reset``) supersedes the stream: iterating it
        then raises RuntimeError instead of continuing from another context.

        ``temperature``: 0 (greedy) or in [0.001, 1000]; ``top_p`` in (0, 1];
        ``repetition_penalty`` in [0.001, 1000] (ValueError otherwise, naming it).
        ``stop_ids``: token ids that end the generation (neither emitted nor kept); None
        stops at the end-of-sequence ids the artifact pins (:attr:`Model.eos_token_ids`,
        none for a format 1.0 artifact), ``()`` at none.

        ``policy``: the decode-time code guard (:func:`fwassist.guard.compile_policy`: a
        codecheck policy name such as "default", a ``.json`` policy file, a codecheck
        ``Policy``, a ``CodePolicy`` or a ``CompiledPolicy``): a token that would complete a
        banned call or literal is masked; ``stats["interventions"]`` lists each (rule,
        position, token). None: no guard."""
        native = self._get()
        _check_sampling(temperature, top_p, repetition_penalty)
        if (prompt is None) == (prompt_ids is None):
            raise ValueError("pass exactly one of prompt (text) and prompt_ids")
        ids = _ids(self.model.encode(prompt) if prompt is not None else prompt_ids,
                   "prompt_ids")
        if ids.size == 0:
            raise ValueError("the prompt is empty")
        if isinstance(stop, str):
            stop = (stop,)
        _check_seed(seed)
        guard = _native_guard(self.model, policy)
        g = _artifact_errors(_core.NativeGeneration.start, native, ids, int(max_tokens),
                             float(temperature), int(top_k), float(top_p),
                             float(repetition_penalty), int(seed), [str(s) for s in stop],
                             _stop_ids(self.model, stop_ids), guard)
        return Stream(g)

    @staticmethod
    def _check_float32(name: str, value: float) -> None:
        """The sampling parameters travel as float32: a value that rounds to 0 or to infinity
        would change meaning on the way (1e-50 would become greedy), so it is refused here;
        the native check (shared with the C ABI) enforces the ranges."""
        v = float(value)
        if np.isfinite(v) and (abs(v) > float(np.finfo(np.float32).max)
                               or (v != 0.0 and float(np.float32(v)) == 0.0)):
            raise ValueError(f"{name} {v!r} is outside the float32 range the sampler takes "
                             f"(it would become 0 or infinity); see Session.stream for the "
                             f"allowed range")

    def generate(self, prompt: Optional[str] = None, **kwargs: Any) -> Generation:
        """Generates to the end (see :meth:`stream` for the arguments)."""
        it = self.stream(prompt, **kwargs)
        for _ in it:
            pass
        assert it.result is not None
        return it.result
