# SPDX-License-Identifier: Apache-2.0
"""The generation engines behind ``fwassist serve``: N slots, each generation runs on one.

The HTTP side only calls :func:`make_engine`, ``submit``, :meth:`Job.cancel` and the counters
here, so the way slots are driven changes without touching it. Two engines:

* :class:`BatchEngine` (default): one :class:`fwassist.BatchDecoder` driven by one thread;
  each step decodes the next token of every running generation in one forward pass, each
  routed expert's weights read once for all the slots that chose it;
* :class:`Engine`: one :class:`fwassist.Session` and worker thread per slot, decoding in
  parallel (for comparison, and for a model the batch decoder cannot take).

Both give a job the free slot whose context shares the longest prefix with its prompt (only
the rest is prefilled), and run the native calls with the GIL released.
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
    policy: Any = None  # the code guard, as Session.stream's policy= (None: none)


@dataclass(frozen=True)
class Piece:
    """A generated token and the text it completes ("" while held back)."""

    token_id: int
    text: str


@dataclass(frozen=True)
class Finished:
    """The end of a job. ``reason``: a Generation.stop_reason (``max_tokens``,
    ``stop_string``, ``stop_id``, ``context_full``, ``cancelled``, ``policy``) or ``error`` with
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
                                seed=p.seed, stop=p.stop, stop_ids=list(p.stop_ids),
                                policy=p.policy)
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


class _Text:
    """A generation's text, as Generation::flush_text (csrc/model/generate.cpp) makes it: the
    tokens since the last release decoded together (a character split across tokens waits
    for its last byte, up to 4 tokens), stop strings searched in the unreleased text, and the
    longest suffix that begins a stop string held back until it is decided."""

    def __init__(self, tokenizer: Any, stop: tuple[str, ...]) -> None:
        self.tok, self.stop = tokenizer, stop
        self.ids: list[int] = []
        self.pending_from = 0
        self.unreleased = ""
        self.stopped = False

    def push(self, token: int) -> str:
        self.ids.append(token)
        return self.flush(False)

    def flush(self, final: bool) -> str:
        if self.tok is None or self.stopped:
            return ""
        end = len(self.ids)
        if self.pending_from < end:
            # Ids past the tokenizer's vocabulary (padded embedding rows) have no text.
            vocab = self.tok.vocab_size
            decoded = self.tok.decode([i for i in self.ids[self.pending_from:end]
                                       if 0 <= i < vocab])
            if not final and decoded.endswith("\ufffd") and end - self.pending_from < 4:
                return ""
            self.pending_from = end
            self.unreleased += decoded
        at = min((i for i in (self.unreleased.find(s) for s in self.stop) if i >= 0),
                 default=-1)
        if at >= 0:
            out = self.unreleased[:at]
            self.unreleased = ""
            self.stopped = True
            return out
        hold = 0
        if not final:
            for s in self.stop:
                for n in range(min(len(s) - 1, len(self.unreleased)), hold, -1):
                    if self.unreleased.endswith(s[:n]):
                        hold = n
                        break
        release = len(self.unreleased) - hold
        out = self.unreleased[:release]
        self.unreleased = self.unreleased[release:]
        return out


class BatchEngine:
    """The slots of one :class:`fwassist.BatchDecoder`, driven by one thread: each step
    decodes the next token of every running generation in one forward pass (each routed
    expert's weights read once for all the slots that chose it). Same interface as
    :class:`Engine`; text and stop strings are made here from the token ids (:class:`_Text`),
    as the session's generation makes them."""

    def __init__(self, model: Model, slots: int, max_context: Optional[int] = None,
                 mode: str = "fast", threads: int = 1) -> None:
        from ..batch import BatchDecoder

        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self.model = model
        self.threads = threads
        self._bd = BatchDecoder(model, slots, max_context=max_context, mode=mode,
                                threads=threads)
        self.max_context = (int(max_context) if max_context else
                            min(int(model.config["max_position_embeddings"]), 4096))
        self._slots = slots
        self._routed = self._bd.expert_tokens()  # reported so far, for per-job deltas
        self._pending: deque[Job] = deque()
        self._running: dict[int, tuple[Job, _Text]] = {}
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._drive, daemon=True, name="fwassist-batch")
        self._thread.start()

    @property
    def slots(self) -> int:
        return self._slots

    def busy(self) -> int:
        with self._cond:
            return len(self._running)

    def pending(self) -> int:
        with self._cond:
            return len(self._pending)

    def active_cores(self) -> int:
        """The decoder's threads while any slot runs (one pass serves them all)."""
        return self.threads if self.busy() else 0

    def submit(self, params: GenParams, sink: Sink) -> Job:
        job = Job(params, sink)
        with self._cond:
            if self._closing:
                raise RuntimeError("the engine is closed")
            self._pending.append(job)
            self._cond.notify_all()
        return job

    def _finish(self, slot: int, reason: str) -> None:
        job, text = self._running.pop(slot)
        tail = text.flush(True) if reason != "stop_string" else ""
        if tail:
            job.sink(Piece(-1, tail))
        # The decoder counts routing for all slots together: each finishing job carries what
        # was routed since the last one finished, so the reported counts add up to the whole.
        routed = self._bd.expert_tokens()
        delta, self._routed = routed - self._routed, routed
        job.sink(Finished(reason, self._bd.stats(slot), delta))

    def _admit(self) -> None:
        """Starts the pending jobs that fit (their prefill runs now, in add)."""
        from ..errors import BatchRequestError, NoFreeSlotError

        while True:
            with self._cond:
                if not self._pending or len(self._running) >= self._slots:
                    return
                job = self._pending.popleft()
            if job.cancelled:
                job.sink(Finished("cancelled"))
                continue
            p = job.params
            try:
                slot = self._bd.add(p.prompt_ids, max_tokens=p.max_tokens,
                                    temperature=p.temperature, top_p=p.top_p, top_k=p.top_k,
                                    seed=p.seed, stop_ids=list(p.stop_ids),
                                    policy=p.policy)
            except NoFreeSlotError:
                with self._cond:
                    self._pending.appendleft(job)
                return
            except (BatchRequestError, ValueError, RuntimeError) as e:
                job.sink(Finished("error", message=f"{type(e).__name__}: {e}"))
                continue
            with self._cond:
                self._running[slot] = (job, _Text(self.model.tokenizer, p.stop))

    def _drive(self) -> None:
        while True:
            try:
                if not self._turn():
                    return
            except Exception as e:  # noqa: BLE001 - the running jobs are told, slots freed
                with self._cond:
                    for slot in list(self._running):
                        job, _ = self._running.pop(slot)
                        self._bd.cancel(slot)
                        job.sink(Finished("error", message=f"{type(e).__name__}: {e}"))

    def _turn(self) -> bool:
        """Admits, cancels, and steps once; False once closed with nothing running. An
        exception fails the running jobs (in _drive), never the thread."""
        with self._cond:
            while not self._pending and not self._running and not self._closing:
                self._cond.wait()
            if self._closing and not self._running:
                return False
        self._admit()
        for slot, (job, _) in list(self._running.items()):
            if job.cancelled or self._closing:
                self._bd.cancel(slot)
                with self._cond:
                    self._finish(slot, "cancelled")
        if not self._running:
            return True
        results = self._bd.step()
        with self._cond:
            for slot, token, reason in results:
                job, text = self._running[slot]
                if token >= 0 and reason not in ("stop_id", "context_full", "non_finite"):
                    job.sink(Piece(token, text.push(token)))
                    if text.stopped:
                        if reason is None:
                            self._bd.cancel(slot)
                        self._finish(slot, "stop_string")
                        continue
                if reason is not None:
                    self._finish(slot, reason)
        return True

    def close(self) -> None:
        with self._cond:
            self._closing = True
            while self._pending:
                self._pending.popleft().sink(Finished("cancelled"))
            self._cond.notify_all()
        self._thread.join()
        self._bd.close()


ENGINES = ("batch", "sessions")


def make_engine(kind: str, model: Model, slots: int, max_context: Optional[int] = None,
                mode: str = "fast", threads: int = 1) -> Union[Engine, BatchEngine]:
    """The engine named ``kind`` (one of :data:`ENGINES`)."""
    if kind == "batch":
        return BatchEngine(model, slots, max_context, mode, threads)
    if kind == "sessions":
        return Engine(model, slots, max_context, mode, threads)
    raise ValueError(f"engine must be one of {ENGINES}, got {kind!r}")
