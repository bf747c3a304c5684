# SPDX-License-Identifier: Apache-2.0
"""The generation engine behind ``fwassist serve``: N slots, each generation runs on one.

The HTTP side only calls :meth:`Engine.submit`, :meth:`Job.cancel` and the counters here, so
the way slots are driven can change without touching it. This engine gives each slot its own
:class:`fwassist.Session` and worker thread; the native calls release the GIL, so the slots
decode in parallel while the event loop keeps serving. A job goes to the idle slot whose
context shares the longest prefix with its prompt (the session then prefills only the rest).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Union

import numpy as np

from ..runtime import Model, Session


@dataclass(frozen=True)
class GenParams:
    """One generation's input: token ids and the sampling parameters of Session.stream."""

    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int = 0
    stop: tuple[str, ...] = ()
    stop_ids: tuple[int, ...] = ()


@dataclass(frozen=True)
class Piece:
    """A generated token and the text it completes ("" while held back)."""

    token_id: int
    text: str


@dataclass(frozen=True)
class Finished:
    """The end of a job. ``reason``: a Generation.stop_reason (``max_tokens``,
    ``stop_string``, ``stop_id``, ``context_full``, ``cancelled``) or ``error`` with
    ``message``. ``stats``: Generation.stats, also for a cancelled job (what it cost).
    ``expert_tokens``: tokens routed per (layer, expert) by this job."""

    reason: str
    stats: dict[str, Any] = field(default_factory=dict)
    expert_tokens: Optional[np.ndarray] = None
    message: str = ""


Event = Union[Piece, Finished]
Sink = Callable[[Event], None]


class Job:
    """A submitted generation. The sink gets its events from an engine thread, ending with
    exactly one :class:`Finished`."""

    def __init__(self, params: GenParams, sink: Sink) -> None:
        self.params = params
        self.sink = sink
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Stops the generation after the token being computed (at once if still queued)."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


class Engine:
    """``slots`` sessions of ``model``, each ``max_context`` tokens, ``threads`` threads."""

    def __init__(self, model: Model, slots: int, max_context: Optional[int] = None,
                 mode: str = "fast", threads: int = 1) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.model = model
        self.threads = threads
        self._sessions: list[Session] = [model.session(max_context=max_context, mode=mode,
                                                       threads=threads) for _ in range(slots)]
        self.max_context = self._sessions[0].max_context
        self._context: list[list[int]] = [[] for _ in range(slots)]
        self._assigned: list[Optional[Job]] = [None] * slots
        self._idle = set(range(slots))
        self._pending: deque[Job] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._workers = [threading.Thread(target=self._work, args=(i,), daemon=True,
                                          name=f"fwassist-slot-{i}") for i in range(slots)]
        for w in self._workers:
            w.start()

    @property
    def slots(self) -> int:
        return len(self._sessions)

    def busy(self) -> int:
        """Slots running a generation now."""
        with self._cond:
            return self.slots - len(self._idle)

    def pending(self) -> int:
        """Jobs waiting for a slot."""
        with self._cond:
            return len(self._pending)

    def active_cores(self) -> int:
        """Cores computing now: the threads of the busy slots."""
        return self.busy() * self.threads

    def submit(self, params: GenParams, sink: Sink) -> Job:
        job = Job(params, sink)
        with self._cond:
            if self._closing:
                raise RuntimeError("the engine is closed")
            self._pending.append(job)
            self._dispatch()
        return job

    def _dispatch(self) -> None:
        """Gives pending jobs to idle slots (caller holds the lock), each to the slot whose
        context shares the longest prefix with its prompt."""
        while self._pending and self._idle:
            job = self._pending.popleft()
            if job.cancelled:
                job.sink(Finished("cancelled"))
                continue
            slot = max(sorted(self._idle),
                       key=lambda i: _common_prefix(self._context[i], job.params.prompt_ids))
            self._idle.discard(slot)
            self._assigned[slot] = job
            self._cond.notify_all()

    def _work(self, slot: int) -> None:
        session = self._sessions[slot]
        while True:
            with self._cond:
                while self._assigned[slot] is None and not self._closing:
                    self._cond.wait()
                job = self._assigned[slot]
                if job is None:
                    return
            try:
                done = self._run(session, job)
            except Exception as e:  # noqa: BLE001 - reported to the job's client, slot kept
                done = Finished("error", message=f"{type(e).__name__}: {e}")
            context = session.tokens if done.reason != "error" else []
            with self._cond:
                self._context[slot] = context
                self._assigned[slot] = None
                self._idle.add(slot)
                self._dispatch()
            job.sink(done)

    def _run(self, session: Session, job: Job) -> Finished:
        p = job.params
        stream = session.stream(prompt_ids=p.prompt_ids, max_tokens=p.max_tokens,
                                temperature=p.temperature, top_p=p.top_p, top_k=p.top_k,
                                seed=p.seed, stop=p.stop, stop_ids=list(p.stop_ids))
        for tok in stream:
            if job.cancelled:
                break
            job.sink(Piece(tok.id, tok.text))
        reason = "cancelled" if stream.result is None else stream.result.stop_reason
        return Finished(reason, stream.stats(), session.expert_tokens())

    def close(self) -> None:
        """Cancels what is queued, lets running jobs see their cancel flag, and frees the
        sessions once the workers have stopped."""
        with self._cond:
            self._closing = True
            while self._pending:
                self._pending.popleft().sink(Finished("cancelled"))
            for job in self._assigned:
                if job is not None:
                    job.cancel()
            self._cond.notify_all()
        for w in self._workers:
            w.join()
        for s in self._sessions:
            s.close()
