# SPDX-License-Identifier: Apache-2.0
"""Several generations decoded together: :class:`BatchDecoder` (native, csrc/model/batch.h).

A decoder holds ``slots`` sessions (each its own context and KV cache). :meth:`BatchDecoder.add`
starts a generation in a free slot, reusing the longest prompt prefix a free slot still holds
(only the rest is prefilled); :meth:`BatchDecoder.step` produces the next token of every active
slot in one forward pass, whose shared layers run once over all of them (one GEMM per routed
expert for the slots that chose it, not one GEMV per slot). A slot's tokens are exactly those
:meth:`fwassist.Session.generate` gives for the same prompt, parameters and seed (its logits are
bit-identical to the session decoding alone, in both compute modes).

One call at a time runs (a lock); the GIL is released while it does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional, Union

import numpy as np

from . import _core
from .errors import BatchRequestError, NoFreeSlotError
from .runtime import (Model, _artifact_errors, _check_sampling, _check_seed,
                      _check_session_options, _ids, _native_guard, _stop_ids)

__all__ = ["BatchDecoder", "StepResult"]

# (slot, token id or -1, finish reason or None while the slot continues)
StepResult = tuple[int, int, Optional[str]]


class BatchDecoder:
    """``slots`` generations decoded together over ``model`` (see the module docstring).

    max_context (per slot; default min(max_position_embeddings, 4096)), mode, threads,
    prefill_chunk and kv_cache are those of :meth:`fwassist.Model.session`; every buffer of
    every slot is allocated now, so a step allocates nothing.

    ``energy_profile``: the :mod:`fwassist.energy` profile (a name, path or Profile) whose model
    turns a slot's counted work into the ``energy_j`` of :meth:`stats`; default: the host's
    (as ``fwassist run --energy``)."""

    def __init__(self, model: Model, slots: int, max_context: Optional[int] = None,
                 mode: str = "exact", threads: int = 1, prefill_chunk: int = 128,
                 kv_cache: str = "f32", energy_profile: Any = None) -> None:
        from . import energy
        from .cli.run import default_profile_name

        _check_session_options(mode, kv_cache, max_context)
        self.model = model
        self.profile = (energy_profile if isinstance(energy_profile, energy.Profile)
                        else energy.load_profile(energy_profile or default_profile_name()))
        self._native: _core.NativeBatch = _core.batch(
            model._native, int(slots), int(max_context or 0), mode, int(threads),
            int(prefill_chunk), kv_cache)

    def _get(self) -> _core.NativeBatch:
        if self._native.closed:
            raise RuntimeError("the batch decoder is closed")
        return self._native

    @property
    def slots(self) -> int:
        return int(self._get().slots)

    @property
    def active(self) -> list[int]:
        """The slots generating now, ascending."""
        return [int(s) for s in self._get().active()]

    @property
    def free_slots(self) -> int:
        """How many slots :meth:`add` can take now."""
        return self.slots - len(self.active)

    def expert_tokens(self) -> np.ndarray:
        """Tokens routed to each (layer, expert) since the decoder was created, prefills and
        steps of every slot: uint64 [layers, experts], zero rows for dense layers."""
        c = self.model.config
        flat = np.asarray(self._get().expert_tokens(), dtype=np.uint64)
        return flat.reshape(c["num_hidden_layers"], c["num_experts"])

    def _slot(self, slot: int) -> int:
        n = self.slots
        if not isinstance(slot, (int, np.integer)) or not 0 <= int(slot) < n:
            raise BatchRequestError(f"slot {slot!r} is not one of the decoder's slots "
                                    f"[0, {n})")
        return int(slot)

    def add(self, prompt_ids: Union[Sequence[int], np.ndarray], *, max_tokens: int = 64,
            temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
            repetition_penalty: float = 1.0, seed: int = 0,
            stop_ids: Optional[Sequence[int]] = None, policy: Any = None) -> int:
        """Starts a generation and returns its slot. The prompt is prefilled now, in the free
        slot whose previous context shares the longest prefix with it (that prefix is kept,
        the rest evaluated). The parameters are those of :meth:`fwassist.Session.stream`
        (``stop_ids`` None: the artifact's end-of-sequence ids; ``policy``: the decode-time
        code guard, as :meth:`fwassist.Session.stream` takes it, whose interventions
        :meth:`stats` lists and which ends the slot with ``policy`` when every token is
        banned). BatchRequestError for an empty prompt, an id outside the vocabulary, a prompt
        longer than the context, a parameter out of range or a policy that cannot be
        compiled for the model; NoFreeSlotError when every slot is generating."""
        native = self._get()
        try:
            _check_sampling(temperature, top_p, repetition_penalty)
            ids = _ids(prompt_ids, "prompt_ids")
            _check_seed(seed)
            if int(max_tokens) < 1:
                raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
            stops = _stop_ids(self.model, stop_ids)
            guard = _native_guard(self.model, policy)
        except (ValueError, TypeError, OverflowError) as e:
            raise BatchRequestError(str(e)) from None
        status, message, slot = _artifact_errors(
            native.add, ids, int(max_tokens), float(temperature), int(top_k), float(top_p),
            float(repetition_penalty), int(seed), stops, guard)
        if status == "full":
            raise NoFreeSlotError(message)
        if status != "ok":
            raise BatchRequestError(message)
        return int(slot)

    def step(self) -> list[StepResult]:
        """The next token of every active slot, in slot order, from one batched forward pass:
        ``(slot, token_id, finish_reason)``. finish_reason is None while the slot continues,
        else ``max_tokens`` (the token is the last one), ``stop_id``, ``context_full``,
        ``policy`` (the code guard banned every token; token -1: no token emitted) or ``non_finite`` (the slot's values overflowed
        float32); the slot is then free again. [] when no slot is active."""
        return [(int(s), int(t), r) for s, t, r in _artifact_errors(self._get().step)]

    def cancel(self, slot: int) -> bool:
        """Ends the slot's generation now and frees it (finish reason ``cancelled``). False if
        it was not generating."""
        return bool(self._get().cancel(self._slot(slot)))

    def logits(self, slot: int) -> np.ndarray:
        """The logits the active ``slot``'s next token will be sampled from (float32
        [vocab]): those of its context's last token. BatchRequestError for a free slot."""
        out = np.empty(self.model.vocab_size, dtype=np.float32)
        if not self._get().logits(self._slot(slot), out):
            raise BatchRequestError(f"slot {slot} is not generating: it has no next-token "
                                    f"logits")
        return out

    def tokens(self, slot: int) -> list[int]:
        """The slot's context: its prompt and the tokens generated so far."""
        return [int(t) for t in self._get().tokens(self._slot(slot))]

    def stats(self, slot: int) -> dict[str, Any]:
        """The slot's current or last generation, with the keys of
        :attr:`fwassist.Generation.stats` (prompt/cached/generated tokens, times, core-seconds,
        weight bytes; ``stop_reason`` None while it runs; ``interventions``: the code guard's,
        each a dict of rule, position and token) and ``energy_j``: the energy model of
        :attr:`profile` over them (``energy_measured`` False): the cores' and the memory's
        terms, not the static (idle) power, which is the host's over the wall time, not a
        slot's. The work of a batched step is split evenly over the slots it served, so the
        slots' figures add up to the whole."""
        from . import energy

        st: dict[str, Any] = dict(self._get().stats(self._slot(slot)))
        activity = energy.Activity(
            wall_s=1e-3 * (st["prefill_ms"] + st["decode_ms"]), busy_core_s=st["busy_core_s"],
            spin_core_s=st["spin_core_s"], parked_core_s=st["parked_core_s"],
            weight_bytes_read=st["weight_bytes_read"], prompt_tokens=st["prompt_tokens"],
            generated_tokens=st["generated_tokens"])
        e = energy.estimate(activity, self.profile)
        st["energy_j"] = e.cores_j + e.memory_j
        st["energy_measured"] = False
        st["energy_profile"] = self.profile.name
        return st

    def close(self) -> None:
        self._native.close()

    def __enter__(self) -> BatchDecoder:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
