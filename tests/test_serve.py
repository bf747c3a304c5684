# SPDX-License-Identifier: Apache-2.0
"""``fwassist serve`` driven by real clients over loopback: the official ``openai`` Python
client and ``curl``. Completions, chat, streaming, stop strings and every error status; the
answers are checked against the same generation run in-process with fwassist.Session (the
server must add nothing and lose nothing); /metrics through prometheus_client's own parser;
/v1/carbon's attributed energy against the sum of the responses' usage."""

from __future__ import annotations

import csv
import io
import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from serve_fixtures import ServerProcess, environ_without_proxy, sse_events, stream_completion

from fwassist import Model
from fwassist.energy import CODECARBON_COLUMNS
from fwassist.models import TINY_CODER_PIN, tiny_coder_path

openai = pytest.importorskip("openai", reason="the test extra pins the official client")

KEY = "test-key-0123456789abcdef"
PROMPT = "static int uart_getc(struct uart *u)\n{\n"
SESSIONS, QUEUE = 2, 2
CONF = Path(__file__).resolve().parent / "conformance" / "fixtures"


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    s = ServerProcess("--sessions", str(SESSIONS), "--queue", str(QUEUE), "--mode", "fast",
                      key=KEY, tmp=tmp_path_factory.mktemp("serve"))
    yield s
    assert s.stop() == 0


@pytest.fixture(scope="module")
def model():
    return Model.load(tiny_coder_path(), pin=TINY_CODER_PIN)


@pytest.fixture(scope="module")
def client(srv):
    return openai.OpenAI(base_url=srv.url + "/v1", api_key=KEY, max_retries=0, timeout=120)


def reference(model: Model, prompt: str, **kw: Any) -> Any:
    """The same generation in-process: a fresh session, the server's mode and EOS ids."""
    with model.session(mode="fast") as s:
        return s.generate(prompt, stop_ids=model.eos_ids(), **kw)


def test_completion_equals_the_in_process_generation(client, model):
    r = client.completions.create(model="tiny-coder", prompt=PROMPT, max_tokens=24,
                                  temperature=0)
    ref = reference(model, PROMPT, max_tokens=24)
    assert r.choices[0].text == ref.text
    assert r.choices[0].finish_reason == "length"
    u = r.usage
    assert (u.prompt_tokens, u.completion_tokens) == (len(model.encode(PROMPT)), 24)
    extra = u.model_extra
    assert isinstance(extra["energy_uj"], int) and extra["energy_uj"] > 0
    assert extra["energy_j"] == extra["energy_uj"] / 1e6
    assert extra["energy_source"] == "model"
    assert extra["core_seconds"] > 0 and extra["sci_g_per_1k_tokens"] > 0


def test_sampling_with_seed_is_reproducible_and_matches(client, model):
    kw = dict(max_tokens=20, temperature=0.8, top_p=0.9, seed=1234)
    a = client.completions.create(model="tiny-coder", prompt=PROMPT, **kw)
    b = client.completions.create(model="tiny-coder", prompt=PROMPT, **kw)
    ref = reference(model, PROMPT, max_tokens=20, temperature=0.8, top_p=0.9, seed=1234)
    assert a.choices[0].text == b.choices[0].text == ref.text
    # The second ran on a session holding the same prompt: the prefix was reused.
    assert b.usage.prompt_tokens_details.cached_tokens > 0


def test_streaming_equals_non_streaming(client, model):
    ref = reference(model, PROMPT, max_tokens=30)
    chunks = list(client.completions.create(model="tiny-coder", prompt=PROMPT, max_tokens=30,
                                            temperature=0, stream=True))
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == ref.text
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    usage = [c.usage for c in chunks if c.usage is not None]
    assert len(usage) == 1 and usage[0].completion_tokens == 30


def test_stop_strings(client, model):
    ref = reference(model, PROMPT, max_tokens=40)
    # A stop string from the middle of the greedy completion: the answer ends before it.
    t = ref.text
    stop = next(t[k:k + 3] for k in range(4, len(t) - 3)
                if not any(c.isspace() for c in t[k:k + 3]) and t.index(t[k:k + 3]) >= 4)
    want = t[:t.index(stop)]
    for stream in (False, True):
        r = client.completions.create(model="tiny-coder", prompt=PROMPT, max_tokens=40,
                                      temperature=0, stop=[stop, "\x00never"], stream=stream)
        if stream:
            parts = [c for c in r if c.choices]
            assert "".join(c.choices[0].text for c in parts) == want
            assert parts[-1].choices[0].finish_reason == "stop"
        else:
            assert r.choices[0].text == want
            assert r.choices[0].finish_reason == "stop"


def test_policy_guards_the_completion(client, model):
    """``policy`` (docs/serve.md): the guard rewrites the banned call the unguarded greedy
    completion writes ("s" in the prompt + "printf(" from the model); the text and the
    interventions equal the in-process guarded generation's, in the non-streaming body and
    in the streaming usage chunk; without ``policy`` nothing is added."""
    from test_guard import SPLIT_PROMPT, _matches

    plain = reference(model, SPLIT_PROMPT, max_tokens=40)
    ref = reference(model, SPLIT_PROMPT, max_tokens=40, policy="default")
    assert b"sprintf(" in _matches((SPLIT_PROMPT + plain.text).encode(), 0)
    ivs = ref.stats["interventions"]
    assert ivs
    kw = dict(model="tiny-coder", prompt=SPLIT_PROMPT, max_tokens=40, temperature=0)
    r = client.completions.create(**kw, extra_body={"policy": "default"})
    assert r.choices[0].text == ref.text and r.choices[0].finish_reason == "length"
    assert _matches((SPLIT_PROMPT + r.choices[0].text).encode(), 0) == []
    assert r.usage.model_extra["policy_interventions"] == len(ivs)
    assert r.model_extra["fwassist"] == {"policy": "default", "interventions": ivs}
    chunks = list(client.completions.create(**kw, stream=True,
                                            extra_body={"policy": "default"}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == ref.text
    last = [c for c in chunks if c.usage is not None]
    assert len(last) == 1 and last[0].usage.model_extra["policy_interventions"] == len(ivs)
    assert last[0].model_extra["fwassist"]["interventions"] == ivs
    r = client.completions.create(**kw)
    assert r.choices[0].text == plain.text
    assert "fwassist" not in (r.model_extra or {})
    assert "policy_interventions" not in r.usage.model_extra


def test_curl_non_streaming_and_streaming(srv, model):
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed (Debian package 'curl')")
    ref = reference(model, PROMPT, max_tokens=12)
    base = [curl, "-sS", "--max-time", "120", "-H", f"Authorization: Bearer {KEY}",
            "-H", "Content-Type: application/json"]
    body = {"model": "tiny-coder", "prompt": PROMPT, "max_tokens": 12, "temperature": 0}
    out = subprocess.run(base + ["-d", json.dumps(body), srv.url + "/v1/completions"],
                         capture_output=True, check=True, env=environ_without_proxy())
    assert json.loads(out.stdout)["choices"][0]["text"] == ref.text
    out = subprocess.run(base + ["-N", "-d", json.dumps({**body, "stream": True}),
                                 srv.url + "/v1/completions"],
                         capture_output=True, check=True, env=environ_without_proxy())
    events = [json.loads(line[6:]) for line in out.stdout.decode().splitlines()
              if line.startswith("data: {")]
    assert out.stdout.decode().rstrip().endswith("data: [DONE]")
    assert "".join(c["text"] for e in events for c in e["choices"]) == ref.text
    # curl -w: the status codes of an error and of an unknown endpoint.
    code = subprocess.run(base + ["-o", "/dev/null", "-w", "%{http_code}", "-d", "{",
                                  srv.url + "/v1/completions"],
                          capture_output=True, check=True, env=environ_without_proxy())
    assert code.stdout == b"400"


def test_models_and_health(client, srv):
    models = client.models.list().data
    assert [m.id for m in models] == ["tiny-coder"]
    m = models[0].model_extra
    assert m["pin"] == TINY_CODER_PIN
    assert m["card"]["name"] and m["release"] is None  # the bundled model is not signed
    assert client.models.retrieve("tiny-coder").id == "tiny-coder"
    h = srv.health()
    assert h["status"] == "ok" and h["sessions"] == SESSIONS


def test_models_shows_the_release_verified_against_the_trust_policy(tmp_path):
    """--trust: /v1/models reports the release the core verified against the policy (signers
    by role, security version, RXSWIN); a release the policy refuses never serves."""
    pytest.importorskip("cryptography", reason="the sign extra signs the release")
    from release_fixtures import key, policy

    from fwassist.release import FileCounter, sign

    path = tmp_path / "tiny-coder.fwa"
    shutil.copy(tiny_coder_path(), path)
    supplier, oem = key("ecdsa-p256-sha256"), key("ed25519")
    for k in (supplier, oem):
        sign(path, k, 4, "RXSWIN-ECU7-4.0")
    keys = [("supplier", supplier), ("oem", oem)]
    trust = policy(tmp_path / "policy.json", keys, {"supplier": 1, "oem": 1})
    counter = tmp_path / "counter"
    FileCounter.init(counter, 2)
    s = ServerProcess(str(path), "--pin", TINY_CODER_PIN, "--trust", str(trust), "--counter",
                      str(counter), "--sessions", "1")
    try:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)
        m = client.models.retrieve("tiny-coder").model_extra
        assert m["pin"] == TINY_CODER_PIN
        assert m["release"] == {"verified": True, "rxswin": "RXSWIN-ECU7-4.0",
                                "security_version": 4, "signers": ["supplier", "oem"]}
        assert client.models.list().data[0].model_extra["release"] == m["release"]
    finally:
        assert s.stop() == 0
    assert FileCounter(counter).read() == 2  # serving never advances the counter
    # The same release under a policy whose floor is above it: refused before serving.
    floor = policy(tmp_path / "policy-min5.json", keys, {"supplier": 1, "oem": 1},
                   min_security_version=5)
    r = subprocess.run([sys.executable, "-m", "fwassist", "serve", "--port", "0", str(path),
                        "--pin", TINY_CODER_PIN, "--trust", str(floor), "--counter",
                        str(counter)], capture_output=True, text=True, timeout=120,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 3 and "rollback" in r.stderr, (r.returncode, r.stderr)
    assert "on http://" not in r.stderr


def test_error_statuses(client, srv, model):
    ctx = srv.json("GET", "/v1/models")["data"][0]["max_context"]
    # 400: malformed JSON, a body that is not an object, bad parameters, prompt past the context.
    for raw in (b"{", b"[1, 2]", b"\xff\xfe"):
        status, _, data = srv.request("POST", "/v1/completions", raw=raw)
        assert status == 400, raw
        assert json.loads(data)["error"]["code"] == "invalid_json"
    bad: list[tuple[dict[str, Any], str]] = [
        ({"temperature": 5}, "temperature"), ({"top_p": 0}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"), ({"max_tokens": "8"}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"), ({"stop": [""]}, "stop"),
        ({"n": 2}, "n"), ({"stream": "yes"}, "stream"), ({"seed": 1.5}, "seed"),
        ({"prompt": {"x": 1}}, "prompt"), ({"prompt": [model.vocab_size]}, "prompt"),
        ({"prompt": ""}, "prompt"), ({"prompt": [1] * ctx}, "prompt"),
        ({"policy": "nonesuch"}, "policy"), ({"policy": 1}, "policy"),
        ({"policy": "/etc/policy.json"}, "policy")]
    for extra, param in bad:
        body = {"model": "tiny-coder", "prompt": PROMPT, "max_tokens": 4, **extra}
        status, _, data = srv.request("POST", "/v1/completions", body)
        assert status == 400, extra
        assert json.loads(data)["error"]["param"] == param, extra
        if param == "policy":
            assert "policy must be null or one of default, safety" in \
                json.loads(data)["error"]["message"]
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="tiny-coder", prompt=[1] * ctx, max_tokens=4)
    assert e.value.code == "context_length_exceeded"
    # The bundled model pins no chat template: chat is refused, naming it.
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model="tiny-coder",
                                       messages=[{"role": "user", "content": "hi"}])
    assert e.value.code == "no_chat_template"
    # 401: no key, a wrong key, a key that is a prefix of the right one.
    for key in ("wrong", KEY[:-1], KEY + "x"):
        bad_client = openai.OpenAI(base_url=srv.url + "/v1", api_key=key, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            bad_client.models.list()
    status, hdr, _ = srv.request("GET", "/v1/models", headers={"Authorization": ""})
    assert status == 401 and hdr["www-authenticate"] == "Bearer"
    # /health and the dashboard page need no key; /metrics and /v1/carbon do.
    assert srv.request("GET", "/health", headers={"Authorization": ""})[0] == 200
    assert srv.request("GET", "/", headers={"Authorization": ""})[0] == 200
    for path in ("/metrics", "/v1/carbon", "/v1/dashboard"):
        assert srv.request("GET", path, headers={"Authorization": ""})[0] == 401, path
    # 404: an unknown endpoint and an unknown model.
    assert srv.request("GET", "/v1/nothing")[0] == 404
    with pytest.raises(openai.NotFoundError):
        client.completions.create(model="gpt-4", prompt=PROMPT, max_tokens=4)
    # 413: a body over --max-body-bytes (1 MiB by default), declared or chunked.
    big = json.dumps({"prompt": "x" * (1 << 20), "max_tokens": 1}).encode()
    assert srv.request("POST", "/v1/completions", raw=big)[0] == 413
    c = srv.conn()
    try:
        c.putrequest("POST", "/v1/completions")
        for k, v in srv.headers({"Transfer-Encoding": "chunked"}).items():
            c.putheader(k, v)
        c.endheaders()
        for _ in range(20):
            c.send(b"10000\r\n" + b"x" * 0x10000 + b"\r\n")
        c.send(b"0\r\n\r\n")
        assert c.getresponse().status == 413
    except (BrokenPipeError, ConnectionResetError):
        pass  # the server answered 413 and closed before the whole body was sent
    finally:
        c.close()
    # 403: a non-loopback Host header (DNS rebinding), however the path is addressed.
    for host in ("evil.example", "evil.example:8080", "127.0.0.1.evil.example"):
        assert srv.request("GET", "/health", headers={"Host": host})[0] == 403, host
    # 405: the wrong method.
    assert srv.request("GET", "/v1/completions")[0] == 405
    # No CORS unless asked: a preflight gets no Access-Control-Allow-Origin.
    _, hdr, _ = srv.request("OPTIONS", "/v1/completions",
                            headers={"Origin": "http://evil.example",
                                     "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in hdr


def test_queue_full_is_429_with_retry_after(srv):
    """SESSIONS running and QUEUE waiting fill the server: the next request gets 429 with
    Retry-After; once they finish it is served again and every slot is back."""
    srv.wait_idle()
    conns = []
    body = json.dumps({"prompt": PROMPT, "max_tokens": 400, "stream": True,
                       "temperature": 0}).encode()
    try:
        for _ in range(SESSIONS + QUEUE):
            c = srv.conn()
            c.request("POST", "/v1/completions", body=body, headers=srv.headers())
            conns.append(c)
        resps = [c.getresponse() for c in conns]
        assert all(r.status == 200 for r in resps)
        status, hdr, data = srv.request("POST", "/v1/completions",
                                        {"prompt": PROMPT, "max_tokens": 1})
        assert status == 429, data
        assert int(hdr["retry-after"]) >= 1
        assert json.loads(data)["error"]["code"] == "queue_full"
        for r in resps:
            assert list(sse_events(r))[-1] == "[DONE]"
    finally:
        for c in conns:
            c.close()
    srv.wait_idle()
    assert srv.request("POST", "/v1/completions", {"prompt": PROMPT, "max_tokens": 1})[0] == 200


def test_disconnect_mid_stream_cancels_and_frees_the_session(srv):
    srv.wait_idle()
    before = _metric(srv, "fwassist_generations_total", {"reason": "cancelled"})
    c = srv.conn()
    c.request("POST", "/v1/completions",
              body=json.dumps({"prompt": PROMPT, "max_tokens": 900, "stream": True,
                               "temperature": 0}).encode(), headers=srv.headers())
    r = c.getresponse()
    events = sse_events(r)
    next(events)
    next(events)
    # Drop the connection without reading on: the generation must stop, not run 900 tokens.
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    srv.wait_idle(timeout=20)
    assert _metric(srv, "fwassist_generations_total", {"reason": "cancelled"}) == before + 1
    # The same for a non-streamed request: the client leaves before the answer.
    c = srv.conn()
    c.request("POST", "/v1/completions",
              body=json.dumps({"prompt": PROMPT, "max_tokens": 900,
                               "temperature": 0}).encode(), headers=srv.headers())
    deadline = time.monotonic() + 20
    while srv.health()["busy"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    c.sock.shutdown(socket.SHUT_RDWR)
    c.close()
    srv.wait_idle(timeout=20)
    assert _metric(srv, "fwassist_generations_total", {"reason": "cancelled"}) == before + 2


def _metric(srv: ServerProcess, name: str, labels: dict[str, str]) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    status, _, data = srv.request("GET", "/metrics")
    assert status == 200
    for fam in text_string_to_metric_families(data.decode()):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def test_metrics_parse_with_prometheus_client(srv, client):
    from prometheus_client.parser import text_string_to_metric_families

    r = client.completions.create(model="tiny-coder", prompt=PROMPT, max_tokens=8,
                                  temperature=0)
    assert srv.request("GET", "/v1/models", headers={"Authorization": "Bearer no"})[0] == 401
    srv.wait_idle()
    status, hdr, data = srv.request("GET", "/metrics")
    assert status == 200 and hdr["content-type"].startswith("text/plain")
    fams = {f.name: f for f in text_string_to_metric_families(data.decode())}
    for name, kind in (("fwassist_requests", "counter"), ("fwassist_tokens", "counter"),
                       ("fwassist_energy_joules", "counter"),
                       ("fwassist_idle_energy_joules", "counter"),
                       ("fwassist_emissions_grams", "counter"),
                       ("fwassist_core_seconds", "counter"),
                       ("fwassist_weight_read_bytes", "counter"),
                       ("fwassist_expert_activations", "counter"),
                       ("fwassist_time_to_first_token_seconds", "histogram"),
                       ("fwassist_queue_depth", "gauge"), ("fwassist_active_cores", "gauge"),
                       ("fwassist_sessions_busy", "gauge")):
        assert fams[name].type == kind, name
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for f in fams.values() for s in f.samples}
    assert samples[("fwassist_requests_total",
                    (("endpoint", "completions"), ("status", "200")))] >= 1
    assert samples[("fwassist_requests_total",
                    (("endpoint", "models"), ("status", "401")))] >= 1
    assert samples[("fwassist_queue_depth", ())] == 0
    assert samples[("fwassist_active_cores", ())] == 0
    # Every layer of the bundled model routed tokens: top-8 of 64 per token and layer.
    layers = [v for (n, lab), v in samples.items() if n == "fwassist_expert_activations_total"]
    assert layers and all(v >= 8 * (r.usage.prompt_tokens + 8) for v in layers)


def test_carbon_attributed_energy_is_the_sum_of_usage(srv, client):
    srv.wait_idle()
    t0 = time.time()
    usages = [client.completions.create(model="tiny-coder", prompt=PROMPT + "x" * i,
                                        max_tokens=6 + i, temperature=0).usage
              for i in range(3)]
    usages.append(stream_completion(srv, {"prompt": PROMPT, "max_tokens": 5})[2])
    t1 = time.time()
    dicts = [u if isinstance(u, dict) else u.model_dump() for u in usages]
    status, _, data = srv.request("GET", f"/v1/carbon?since={t0}&until={t1}")
    assert status == 200
    rep = json.loads(data)
    assert rep["requests"] == 4
    assert rep["attributed_energy_uj"] == sum(u["energy_uj"] for u in dicts)
    assert rep["completion_tokens"] == sum(u["completion_tokens"] for u in dicts)
    assert rep["idle_energy_uj"] > 0 and rep["energy_source"] == "model"
    sci = rep["sci"]
    # SCI counts both: the window's energy is the attributed plus the idle energy.
    # (Each integer µJ is rounded: at most 0.5 µJ off per request and for the idle term.)
    assert abs(sci["energy_j"] - (rep["attributed_energy_uj"] + rep["idle_energy_uj"]) / 1e6) \
        <= 0.5e-6 * (rep["requests"] + 1) + 1e-9 * sci["energy_j"], rep
    assert sci["grid_intensity_g_per_kwh"] == rep["grid_intensity_g_per_kwh"] == 460.0
    assert rep["energy_profile"]["name"] in ("generic-x86", "cortex-a76-rpi5")
    # ISO 8601 bounds name the same window; a window ending before it starts is a 400.
    iso = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t1 + 1))
    assert srv.json("GET", f"/v1/carbon?until={iso}Z")["requests"] >= 4
    assert srv.request("GET", f"/v1/carbon?since={t1}&until={t0}")[0] == 400
    assert srv.request("GET", "/v1/carbon?since=yesterday")[0] == 400
    status, hdr, data = srv.request("GET", f"/v1/carbon?since={t0}&until={t1}&format=csv")
    assert status == 200 and hdr["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(data.decode())))
    assert tuple(rows[0]) == CODECARBON_COLUMNS and len(rows) == 2
    row = dict(zip(rows[0], rows[1]))
    assert float(row["energy_consumed"]) == pytest.approx(sci["energy_kwh"])
    assert float(row["duration"]) == pytest.approx(rep["window_s"])


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory):
    """The conformance Qwen3-MoE with transformers 5.25.0's generation files (a tokenizer and
    a chat template), exported."""
    from fwassist.export.pipeline import export_onnx

    d = tmp_path_factory.mktemp("chat")
    src = d / "ckpt"
    src.mkdir()
    for f in ("config.json", "model.safetensors", "card.json"):
        shutil.copy(CONF / "safetensors" / "float_bf16_per_expert" / f, src / f)
    for f in (CONF / "generation" / "tf5" / "jinja").iterdir():
        if f.name != "expected.json":
            shutil.copy(f, src / f.name)
    out = d / "chat.fwa"
    pin = export_onnx(str(src), str(out), evidence=False, quiet=True)
    try:  # a signed release beside it, where the sign extra is installed
        import cryptography  # noqa: F401
    except ImportError:
        return out, pin
    from fwassist.release import generate_key, sign
    from fwassist.release.keys import ED25519

    sign(out, generate_key(ED25519)[1], 3, "RXSWIN-ECU7-3.0")
    return out, pin


def test_chat_completions_with_the_pinned_template(chat_model):
    pytest.importorskip("jinja2")
    path, pin = chat_model
    s = ServerProcess(str(path), "--pin", pin, "--sessions", "1")
    try:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)
        if Path(str(path) + ".sig").exists():
            # /v1/models: the release the .sig claims (no --trust: not verified here).
            rel = client.models.retrieve("chat").model_extra["release"]
            assert rel == {"verified": False, "rxswin": "RXSWIN-ECU7-3.0",
                           "security_version": 3, "matches_model": True}
        msgs = [{"role": "system", "content": "You write C."},
                {"role": "user", "content": "hi"}]
        m = Model.load(path, pin=pin)
        with m.session(mode="fast") as sess:
            ref = sess.generate(m.apply_chat_template(msgs), max_tokens=10,
                                stop_ids=m.eos_ids())
        r = client.chat.completions.create(model="chat", messages=msgs, max_tokens=10,
                                           temperature=0)
        assert r.choices[0].message.role == "assistant"
        assert r.choices[0].message.content == ref.text
        assert r.usage.completion_tokens == len(ref.token_ids)
        chunks = list(client.chat.completions.create(model="chat", messages=msgs,
                                                     max_tokens=10, temperature=0,
                                                     stream=True))
        assert chunks[0].choices[0].delta.role == "assistant"
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ref.text
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="chat", messages=[])
        with pytest.raises(openai.BadRequestError):
            client.chat.completions.create(model="chat", messages=[{"content": "no role"}])
    finally:
        assert s.stop() == 0


def test_the_sessions_engine_gives_the_same_answers(model):
    """--engine sessions (a session and thread per slot): the same texts as the batched
    engine's tests above, i.e. as the in-process generation."""
    s = ServerProcess("--engine", "sessions", "--sessions", "2")
    try:
        client = openai.OpenAI(base_url=s.url + "/v1", api_key="unused", max_retries=0)
        for kw in ({"temperature": 0}, {"temperature": 0.8, "top_p": 0.9, "seed": 7}):
            ref = reference(model, PROMPT, max_tokens=20, **kw)
            r = client.completions.create(model="tiny-coder", prompt=PROMPT, max_tokens=20,
                                          **kw)
            assert r.choices[0].text == ref.text
            chunks = client.completions.create(model="tiny-coder", prompt=PROMPT,
                                               max_tokens=20, stream=True, **kw)
            assert "".join(c.choices[0].text for c in chunks if c.choices) == ref.text
        from test_guard import SPLIT_PROMPT

        ref = reference(model, SPLIT_PROMPT, max_tokens=40, policy="safety")
        r = client.completions.create(model="tiny-coder", prompt=SPLIT_PROMPT, max_tokens=40,
                                      temperature=0, extra_body={"policy": "safety"})
        assert r.choices[0].text == ref.text
        assert r.model_extra["fwassist"]["interventions"] == ref.stats["interventions"] != []
        assert s.wait_idle()["busy"] == 0
    finally:
        assert s.stop() == 0
