# SPDX-License-Identifier: Apache-2.0
"""The ASGI application of ``fwassist serve`` (Starlette): the OpenAI-compatible completion
endpoints, the carbon report, Prometheus metrics and the dashboard. docs/serve.md is the
reference; the engine (engine.py) runs the generations off the event loop."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Optional

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import energy
from ..errors import Error
from ..runtime import Model
from .carbon import Ledger, parse_time
from .engine import Event, Finished, GenParams, Job, Piece, make_engine
from .metrics import Metrics

# OpenAI's ranges, inside the sampler's (temperature 0 or [1e-3, 1e3]).
MAX_TEMPERATURE = 2.0
MIN_TEMPERATURE = 1e-3
MAX_STOP_STRINGS = 4
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})
# A code guard's stop (every token it could pick completes a banned call) is OpenAI's
# content_filter: output withheld by a filter.
FINISH = {"max_tokens": "length", "context_full": "length", "stop_string": "stop",
          "stop_id": "stop", "cancelled": "cancelled", "policy": "content_filter"}
# Dashboard samples: one per SAMPLE_S, the last SERIES_LEN kept.
SAMPLE_S = 1.0
SERIES_LEN = 600


@dataclass
class ServeConfig:
    """What ``fwassist serve`` was started with (the CLI checks each value)."""

    model_id: str
    profile: energy.Profile
    grid_intensity: float
    sessions: int = 4
    queue: int = 16
    max_context: Optional[int] = None
    engine: str = "batch"
    mode: str = "fast"
    threads: int = 1
    api_key: Optional[str] = None
    cors_origins: tuple[str, ...] = ()
    loopback_only: bool = True
    max_body_bytes: int = 1 << 20
    model_info: dict[str, Any] = field(default_factory=dict)


class ApiError(Error):
    """An error answered in OpenAI's shape: {"error": {message, type, param, code}} (never
    leaves the app: every endpoint turns it into its response)."""

    def __init__(self, status: int, message: str, code: Optional[str] = None,
                 param: Optional[str] = None, headers: Optional[dict[str, str]] = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        kind = {400: "invalid_request_error", 401: "authentication_error",
                403: "permission_error", 404: "not_found_error", 413: "invalid_request_error",
                429: "rate_limit_error"}.get(self.status, "server_error")
        return JSONResponse({"error": {"message": self.message, "type": kind,
                                       "param": self.param, "code": self.code}},
                            status_code=self.status, headers=self.headers)


class HostGuard:
    """Refuses a request whose Host header is not a loopback name (DNS rebinding: a web page
    on another origin that resolves its own name to 127.0.0.1 still sends its own Host)."""

    def __init__(self, app: ASGIApp, enabled: bool) -> None:
        self.app, self.enabled = app, enabled

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.enabled and scope["type"] == "http":
            host = ""
            for k, v in scope["headers"]:
                if k == b"host":
                    host = v.decode("latin-1")
            if _hostname(host) not in LOOPBACK_HOSTS:
                refusal = ApiError(403, "this server answers only requests addressed to "
                                        "localhost, 127.0.0.1 or [::1]", "forbidden_host")
                await refusal.response()(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else ""
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _number(body: dict[str, Any], name: str, default: float, lo: float, hi: float,
            lo_open: bool = False) -> float:
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
        raise ApiError(400, f"{name} must be a number", "invalid_value", name)
    if v < lo or (lo_open and v == lo) or v > hi:
        raise ApiError(400, f"{name} {v!r} is outside {'(' if lo_open else '['}{lo:g}, {hi:g}]",
                       "invalid_value", name)
    return float(v)


def _integer(body: dict[str, Any], name: str, default: Optional[int], lo: int,
             hi: int) -> Optional[int]:
    v = body.get(name, default)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, int):
        raise ApiError(400, f"{name} must be an integer", "invalid_value", name)
    if not lo <= v <= hi:
        raise ApiError(400, f"{name} {v} is outside [{lo}, {hi}]", "invalid_value", name)
    return v


class _Mailbox:
    """Events from the engine threads to the event loop: one wake-up of the loop (one write
    to its self-pipe) carries every event of every request that arrived since the last one,
    so a batched step's tokens for N requests cost one wake-up, not N."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._incoming: deque[tuple[_Run, Event]] = deque()  # engine threads -> loop
        self._scheduled = False

    def post(self, run: _Run, ev: Event) -> None:  # engine thread
        self._incoming.append((run, ev))
        if not self._scheduled:
            self._scheduled = True
            with contextlib.suppress(RuntimeError):  # the loop is gone: the server stopped
                self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:  # event loop
        self._scheduled = False
        woken: set[_Run] = set()
        while self._incoming:
            run, ev = self._incoming.popleft()
            run.take(ev)
            woken.add(run)
        for run in woken:
            run.wake.set()


class _Run:
    """One request's generation: its events, in batches (what arrived since the last wake)."""

    def __init__(self, server: Server, mailbox: _Mailbox) -> None:
        self.server, self.mailbox = server, mailbox
        self._ready: list[Event] = []            # loop only
        self.wake = asyncio.Event()
        self.usage: dict[str, Any] = {}
        self.policy: Optional[str] = None  # the request's code policy name
        self.ext: dict[str, Any] = {}      # the response's "fwassist" object (with a policy)
        self.t0 = time.perf_counter()
        self.first = True
        self.job: Optional[Job] = None

    def sink(self, ev: Event) -> None:  # engine thread
        self.mailbox.post(self, ev)

    def take(self, ev: Event) -> None:  # event loop
        if isinstance(ev, Finished):
            # Charged here, whether or not anyone still reads the response.
            self.usage = self.server.account(ev)
            if self.policy is not None and ev.stats:
                ivs = [{"rule": str(x["rule"]), "position": int(x["position"]),
                        "token": int(x["token"])} for x in ev.stats.get("interventions", [])]
                self.usage["policy_interventions"] = len(ivs)
                self.ext = {"policy": self.policy, "interventions": ivs}
            self.server.metrics.duration.observe(time.perf_counter() - self.t0)
        elif self.first:
            self.first = False
            self.server.metrics.ttft.observe(time.perf_counter() - self.t0)
        self._ready.append(ev)

    async def batches(self) -> AsyncIterator[list[Event]]:
        """Lists of events, the last one ending with the Finished."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            batch, self._ready = self._ready, []
            if batch:
                yield batch
                if isinstance(batch[-1], Finished):
                    return


class Server:
    """The engine, the ledger, the metrics and the Starlette app around them."""

    def __init__(self, model: Model, cfg: ServeConfig) -> None:
        self.model, self.cfg = model, cfg
        self.started = time.time()
        self.engine = make_engine(cfg.engine, model, cfg.sessions, cfg.max_context, cfg.mode,
                                  cfg.threads)
        self.ledger = Ledger(cfg.profile, cfg.grid_intensity, self.started)
        c = model.config
        self.layers, self.experts = int(c["num_hidden_layers"]), int(c["num_experts"])
        self.heat = np.zeros((self.layers, self.experts), dtype=np.uint64)
        self.outstanding = 0          # admitted requests not yet finished (running + queued)
        self._mailbox: Optional[_Mailbox] = None  # made on the event loop, on first use
        self.totals = {"tokens": 0, "uj": 0, "g": 0.0}
        self.series: deque[dict[str, Any]] = deque(maxlen=SERIES_LEN)
        self.metrics = Metrics(cfg.profile.value("idle_power"), self.started, self.layers,
                               self.engine.pending, self.engine.busy, self.engine.active_cores)
        self.eos = tuple(model.eos_ids())
        mw = [Middleware(HostGuard, enabled=cfg.loopback_only)]
        if cfg.cors_origins:
            mw.append(Middleware(CORSMiddleware, allow_origins=list(cfg.cors_origins),
                                 allow_methods=["GET", "POST"],
                                 allow_headers=["Authorization", "Content-Type"]))
        self.app = Starlette(
            routes=[
                Route("/", self._guard("dashboard", self.dashboard, auth=False)),
                Route("/health", self._guard("health", self.health, auth=False)),
                Route("/favicon.ico", self._guard("dashboard", self.favicon, auth=False)),
                Route("/metrics", self._guard("metrics", self.prometheus)),
                Route("/v1/models", self._guard("models", self.models)),
                Route("/v1/models/{model_id:path}", self._guard("models", self.model_get)),
                Route("/v1/completions", self._guard("completions", self.completions),
                      methods=["POST"]),
                Route("/v1/chat/completions",
                      self._guard("chat_completions", self.chat), methods=["POST"]),
                Route("/v1/carbon", self._guard("carbon", self.carbon)),
                Route("/v1/dashboard", self._guard("dashboard_data", self.dashboard_data)),
            ],
            middleware=mw, lifespan=self._lifespan,
            exception_handlers={404: self._not_found, 405: self._not_allowed})

    # plumbing ------------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def _lifespan(self, app: Starlette) -> AsyncIterator[None]:
        task = asyncio.create_task(self._sample())
        try:
            yield
        finally:
            task.cancel()
            await asyncio.get_running_loop().run_in_executor(None, self.engine.close)

    async def _not_found(self, request: Request, exc: Exception) -> Response:
        self.metrics.requests.labels(endpoint="other", status="404").inc()
        return ApiError(404, f"no such endpoint: {request.method} {request.url.path}",
                        "not_found").response()

    async def _not_allowed(self, request: Request, exc: Exception) -> Response:
        self.metrics.requests.labels(endpoint="other", status="405").inc()
        return ApiError(405, f"{request.method} is not allowed on {request.url.path}",
                        "method_not_allowed").response()

    def _guard(self, name: str, fn: Callable[[Request], Awaitable[Response]],
               auth: bool = True) -> Callable[[Request], Awaitable[Response]]:
        """Bearer auth (when a key is set), errors in OpenAI's shape, and the request
        counter by status."""
        async def endpoint(request: Request) -> Response:
            try:
                if auth:
                    self._check_key(request)
                resp = await fn(request)
            except ApiError as e:
                resp = e.response()
            self.metrics.requests.labels(endpoint=name, status=str(resp.status_code)).inc()
            return resp
        return endpoint

    def _check_key(self, request: Request) -> None:
        key = self.cfg.api_key
        if key is None:
            return
        got = request.headers.get("authorization", "")
        scheme, _, token = got.partition(" ")
        # Constant-time: the comparison takes as long for a near miss as for a far one.
        if not (scheme.lower() == "bearer"
                and hmac.compare_digest(token.strip().encode(), key.encode())):
            raise ApiError(401, "missing or wrong API key (Authorization: Bearer <key>)",
                           "invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def _json(self, request: Request) -> dict[str, Any]:
        limit = self.cfg.max_body_bytes
        cl = request.headers.get("content-length")
        if cl is not None and cl.isdigit() and int(cl) > limit:
            raise ApiError(413, f"the request body of {cl} bytes exceeds {limit} bytes",
                           "body_too_large")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"the request body exceeds {limit} bytes", "body_too_large")
        try:
            obj = json.loads(bytes(body))
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the body is not valid JSON: {e}", "invalid_json") from None
        if not isinstance(obj, dict):
            raise ApiError(400, "the body must be a JSON object", "invalid_json")
        return obj

    # accounting ------------------------------------------------------------------------------
    def account(self, done: Finished) -> dict[str, Any]:
        """Charges a finished generation (also a cancelled one) and returns its usage."""
        self.outstanding -= 1
        st = done.stats
        if not st:
            self.metrics.generations.labels(reason=done.reason).inc()
            return {}
        _, carbon = self.ledger.charge(st)
        self.metrics.observe_generation(st, done.reason, carbon["energy_j"], carbon["carbon_g"],
                                        done.expert_tokens)
        if done.expert_tokens is not None:
            self.heat += done.expert_tokens.astype(np.uint64)
        self.totals["tokens"] += int(st["generated_tokens"])
        self.totals["uj"] += int(carbon["energy_uj"])
        self.totals["g"] += float(carbon["carbon_g"])
        p, n = int(st["prompt_tokens"]), int(st["generated_tokens"])
        return {"prompt_tokens": p, "completion_tokens": n, "total_tokens": p + n,
                "prompt_tokens_details": {"cached_tokens": int(st["cached_tokens"])},
                **carbon}

    async def _sample(self) -> None:
        """The dashboard's time series: one sample per SAMPLE_S."""
        last = dict(self.totals)
        t_last = time.time()
        while True:
            await asyncio.sleep(SAMPLE_S)
            now, cur = time.time(), dict(self.totals)
            dt = max(1e-9, now - t_last)
            dtok = int(cur["tokens"]) - int(last["tokens"])
            self.series.append({
                "t": now, "tokens_per_s": dtok / dt,
                "j_per_1k_tokens": (int(cur["uj"]) - int(last["uj"])) / 1e6 / dtok * 1000
                if dtok else None,
                "g_per_1k_tokens": (float(cur["g"]) - float(last["g"])) / dtok * 1000
                if dtok else None,
                "active_cores": self.engine.active_cores(), "queue": self.engine.pending()})
            last, t_last = cur, now

    # generation ------------------------------------------------------------------------------
    def _params(self, body: dict[str, Any], ids: list[int], default_max: int) -> GenParams:
        ctx = self.engine.max_context
        if not ids:
            raise ApiError(400, "the prompt is empty", "empty_prompt", "prompt")
        if len(ids) >= ctx:
            raise ApiError(400, f"the prompt has {len(ids)} tokens; the context holds {ctx} "
                                f"(prompt and completion)", "context_length_exceeded", "prompt")
        max_tokens = _integer(body, "max_tokens", None, 1, 1 << 20)
        if max_tokens is None:
            max_tokens = _integer(body, "max_completion_tokens", default_max, 1, 1 << 20)
        assert max_tokens is not None
        temperature = _number(body, "temperature", 1.0, 0.0, MAX_TEMPERATURE)
        if 0.0 < temperature < MIN_TEMPERATURE:
            temperature = 0.0  # below the sampler's range: as good as greedy
        top_p = _number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True)
        top_k = _integer(body, "top_k", 0, 0, 1 << 31 - 1)
        seed = _integer(body, "seed", 0, -(1 << 63), (1 << 64) - 1)
        assert seed is not None and top_k is not None
        for name in ("presence_penalty", "frequency_penalty"):
            if _number(body, name, 0.0, -2.0, 2.0) != 0.0:
                raise ApiError(400, f"{name} is not supported (only 0)", "unsupported", name)
        if _integer(body, "n", 1, 1, 1) != 1:
            raise ApiError(400, "n must be 1", "unsupported", "n")
        if body.get("logprobs") not in (None, False, 0):
            raise ApiError(400, "logprobs are not supported", "unsupported", "logprobs")
        stop = body.get("stop")
        if stop is None:
            stops: tuple[str, ...] = ()
        elif isinstance(stop, str):
            stops = (stop,)
        elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
            stops = tuple(stop)
        else:
            raise ApiError(400, "stop must be a string or a list of strings", "invalid_value",
                           "stop")
        if len(stops) > MAX_STOP_STRINGS or any(not s for s in stops):
            raise ApiError(400, f"stop: at most {MAX_STOP_STRINGS} non-empty strings",
                           "invalid_value", "stop")
        policy = body.get("policy")
        compiled = None
        if policy is not None:
            from ..codecheck.rules import POLICIES
            from ..guard import compile_policy

            # Built-in names only: a client never names a file on the server.
            if not isinstance(policy, str) or policy not in POLICIES:
                raise ApiError(400, f"policy must be null or one of {', '.join(POLICIES)}, got "
                                    f"{policy!r}", "invalid_value", "policy")
            try:
                compiled = compile_policy(self.model, policy)
            except ValueError as e:  # a model without a tokenizer
                raise ApiError(400, str(e), "invalid_value", "policy") from None
        vocab = self.model.vocab_size
        if any(not 0 <= i < vocab for i in ids):
            raise ApiError(400, f"a prompt token id is outside [0, {vocab})", "invalid_value",
                           "prompt")
        return GenParams(prompt_ids=ids, max_tokens=min(max_tokens, ctx - len(ids)),
                         temperature=temperature, top_p=top_p, top_k=top_k,
                         seed=seed % (1 << 64), stop=stops, stop_ids=self.eos,
                         policy=compiled)

    def _model_check(self, body: dict[str, Any]) -> None:
        m = body.get("model")
        if m is not None and m != self.cfg.model_id:
            raise ApiError(404, f"the model {m!r} does not exist here; this server has "
                                f"{self.cfg.model_id!r}", "model_not_found", "model")

    def _encode(self, text: str) -> list[int]:
        if self.model.tokenizer is None:
            raise ApiError(400, "the model has no tokenizer: send the prompt as token ids",
                           "no_tokenizer", "prompt")
        return self.model.encode(text)

    def _start(self, params: GenParams) -> _Run:
        limit = self.cfg.sessions + self.cfg.queue
        if self.outstanding >= limit:
            raise ApiError(429, f"the server is busy: {self.outstanding} requests running or "
                                f"queued (at most {limit})", "queue_full",
                           headers={"Retry-After": "1"})
        if self._mailbox is None:
            self._mailbox = _Mailbox(asyncio.get_running_loop())
        run = _Run(self, self._mailbox)
        if params.policy is not None:
            run.policy = str(params.policy.name)
        self.outstanding += 1
        try:
            run.job = self.engine.submit(params, run.sink)
        except RuntimeError as e:
            self.outstanding -= 1
            raise ApiError(503, str(e), "shutting_down") from None
        return run

    async def _respond(self, request: Request, run: _Run, stream: bool, chat: bool,
                       echo_model: str) -> Response:
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        obj = "chat.completion" if chat else "text_completion"

        def choice(text: Optional[str], finish: Optional[str]) -> dict[str, Any]:
            if chat:
                key = "delta" if stream else "message"
                msg = ({"content": text} if text is not None else {}) if stream else \
                    {"role": "assistant", "content": text}
                return {"index": 0, key: msg, "finish_reason": finish, "logprobs": None}
            return {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}

        assert run.job is not None
        job = run.job
        if stream:
            async def sse() -> AsyncIterator[bytes]:
                def chunk(choices: list[Any], usage: Optional[dict[str, Any]] = None) -> bytes:
                    o: dict[str, Any] = {"id": rid, "object": obj + (".chunk" if chat else ""),
                                         "created": created, "model": echo_model,
                                         "choices": choices}
                    if usage is not None:
                        o["usage"] = usage
                        if run.ext:
                            o["fwassist"] = run.ext
                    return b"data: " + json.dumps(o).encode() + b"\n\n"
                try:
                    if chat:
                        yield chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                                      "finish_reason": None, "logprobs": None}])
                    async for batch in run.batches():
                        text = "".join(ev.text for ev in batch if isinstance(ev, Piece))
                        if text:
                            yield chunk([choice(text, None)])
                        ev = batch[-1]
                        if not isinstance(ev, Finished):
                            continue
                        if ev.reason == "error":
                            err = {"error": {"message": ev.message, "type": "server_error",
                                             "param": None, "code": "generation_failed"}}
                            yield b"data: " + json.dumps(err).encode() + b"\n\n"
                            return
                        yield chunk([choice(None if chat else "",
                                            FINISH.get(ev.reason, ev.reason))])
                        yield chunk([], run.usage)
                    yield b"data: [DONE]\n\n"
                finally:
                    job.cancel()  # a client gone mid-stream: stop now, free the slot
            return StreamingResponse(sse(), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})

        gone = asyncio.ensure_future(_disconnected(request))
        parts: list[str] = []
        done: Optional[Finished] = None
        try:
            batches = run.batches()
            while done is None:
                nxt = asyncio.ensure_future(batches.__anext__())
                await asyncio.wait({nxt, gone}, return_when=asyncio.FIRST_COMPLETED)
                if not nxt.done():
                    nxt.cancel()
                    job.cancel()
                    return Response(status_code=499)  # nobody reads it: the client left
                for ev in nxt.result():
                    if isinstance(ev, Piece):
                        parts.append(ev.text)
                    else:
                        done = ev
        finally:
            gone.cancel()
        if done.reason == "error":
            raise ApiError(500, done.message, "generation_failed")
        out = {"id": rid, "object": obj, "created": created, "model": echo_model,
               "choices": [choice("".join(parts), FINISH.get(done.reason, done.reason))],
               "usage": run.usage}
        if run.ext:
            out["fwassist"] = run.ext
        return JSONResponse(out)

    # endpoints -------------------------------------------------------------------------------
    async def completions(self, request: Request) -> Response:
        body = await self._json(request)
        self._model_check(body)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]
        if isinstance(prompt, str):
            ids = self._encode(prompt)
        elif isinstance(prompt, list) and all(isinstance(i, int) and not isinstance(i, bool)
                                              for i in prompt):
            ids = list(prompt)
        else:
            raise ApiError(400, "prompt must be a string or a list of token ids (one prompt)",
                           "invalid_value", "prompt")
        if body.get("echo"):
            raise ApiError(400, "echo is not supported", "unsupported", "echo")
        stream = self._flag(body, "stream")
        params = self._params(body, ids, 16)
        return await self._respond(request, self._start(params), stream, False,
                                   self.cfg.model_id)

    async def chat(self, request: Request) -> Response:
        body = await self._json(request)
        self._model_check(body)
        msgs = body.get("messages")
        if not isinstance(msgs, list) or not msgs:
            raise ApiError(400, "messages must be a non-empty list", "invalid_value", "messages")
        clean: list[dict[str, Any]] = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                raise ApiError(400, f"messages[{i}] needs a string role", "invalid_value",
                               "messages")
            content = m.get("content")
            if isinstance(content, list):  # content parts: only text
                texts = [p.get("text") for p in content
                         if isinstance(p, dict) and p.get("type") == "text"]
                if len(texts) != len(content) or not all(isinstance(t, str) for t in texts):
                    raise ApiError(400, f"messages[{i}]: only text content parts are "
                                        f"supported", "unsupported", "messages")
                content = "".join(t for t in texts if isinstance(t, str))
            if not isinstance(content, str):
                raise ApiError(400, f"messages[{i}] needs text content", "invalid_value",
                               "messages")
            clean.append({"role": m["role"], "content": content})
        if self.model.chat_template is None:
            raise ApiError(400, "the model's artifact pins no chat template: use "
                                "/v1/completions", "no_chat_template", "messages")
        try:
            text = self.model.apply_chat_template(clean)
        except ValueError as e:
            raise ApiError(400, str(e), "chat_template_error", "messages") from None
        stream = self._flag(body, "stream")
        params = self._params(body, self._encode(text), 256)
        return await self._respond(request, self._start(params), stream, True,
                                   self.cfg.model_id)

    @staticmethod
    def _flag(body: dict[str, Any], name: str) -> bool:
        v = body.get(name, False)
        if v is None:
            return False
        if not isinstance(v, bool):
            raise ApiError(400, f"{name} must be true or false", "invalid_value", name)
        return v

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "sessions": self.engine.slots,
                             "busy": self.engine.busy(), "queue": self.engine.pending()})

    def _model_entry(self) -> dict[str, Any]:
        return {"id": self.cfg.model_id, "object": "model", "created": int(self.started),
                "owned_by": "fwassist", "pin": self.model.pin,
                "max_context": self.engine.max_context, **self.cfg.model_info}

    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [self._model_entry()]})

    async def model_get(self, request: Request) -> Response:
        if request.path_params["model_id"] != self.cfg.model_id:
            raise ApiError(404, f"no model {request.path_params['model_id']!r}",
                           "model_not_found")
        return JSONResponse(self._model_entry())

    async def carbon(self, request: Request) -> Response:
        q = request.query_params
        fmt = q.get("format", "json")
        if fmt not in ("json", "csv"):
            raise ApiError(400, f"format must be json or csv, got {fmt!r}", "invalid_value",
                           "format")
        try:
            since = parse_time(q["since"], "since") if "since" in q else None
            until = parse_time(q["until"], "until") if "until" in q else None
            report, sci = self.ledger.window(since, until)
        except ValueError as e:
            raise ApiError(400, str(e), "invalid_value") from None
        if fmt == "csv":
            return Response(sci.codecarbon_csv_header() + "\n" + sci.codecarbon_csv_row() + "\n",
                            media_type="text/csv")
        return JSONResponse(report)

    async def prometheus(self, request: Request) -> Response:
        return Response(generate_latest(self.metrics.registry),
                        media_type=CONTENT_TYPE_LATEST)

    async def dashboard(self, request: Request) -> Response:
        page = (Path(__file__).parent / "dashboard.html").read_text(encoding="utf-8")
        return HTMLResponse(page, headers={"Content-Security-Policy":
                                           "default-src 'self'; script-src 'unsafe-inline'; "
                                           "style-src 'unsafe-inline'"})

    async def favicon(self, request: Request) -> Response:
        return Response(status_code=204)  # no icon; a 404 would be a console error

    async def dashboard_data(self, request: Request) -> Response:
        return JSONResponse({
            "model": self.cfg.model_id, "sessions": self.engine.slots,
            "cores": self.engine.slots * self.engine.threads,
            "grid_intensity_g_per_kwh": self.cfg.grid_intensity,
            "profile": self.cfg.profile.name,
            "totals": {"completion_tokens": self.totals["tokens"],
                       "energy_j": int(self.totals["uj"]) / 1e6,
                       "carbon_g": self.totals["g"]},
            "series": list(self.series),
            "heatmap": {"layers": self.layers, "experts": self.experts,
                        "counts": self.heat.tolist()}})


async def _disconnected(request: Request) -> None:
    """Returns when the client closes the connection (the body was read already)."""
    while True:
        msg = await request.receive()
        if msg["type"] == "http.disconnect":
            return
