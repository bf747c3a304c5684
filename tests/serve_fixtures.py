# SPDX-License-Identifier: Apache-2.0
"""A real ``fwassist serve`` in a subprocess on a free loopback port, and a small HTTP client
(http.client) for the tests of the server, its load and its faults."""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Iterator, Optional

import pytest

for _m in ("starlette", "uvicorn", "prometheus_client"):
    pytest.importorskip(_m, reason="the serve extra (pip install 'fwassist[serve]')")

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 60.0


class ServerProcess:
    """``python -m fwassist serve ARGS --port 0``; ``url``/``host``/``port`` once it listens."""

    def __init__(self, *args: str, key: Optional[str] = None, tmp: Any = None) -> None:
        cmd = [sys.executable, "-m", "fwassist", "serve", "--port", "0", *args]
        self.key = key
        if key is not None:
            assert tmp is not None
            kf = tmp / "api-key"
            kf.write_text(key + "\n", "ascii")
            cmd += ["--api-key-file", str(kf)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)
        self.stderr: list[str] = []
        deadline = time.monotonic() + START_TIMEOUT_S
        self.port = 0
        assert self.proc.stderr is not None
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.stderr.append(line)
            m = re.search(r"on http://127\.0\.0\.1:(\d+)/", line)
            if m:
                self.port = int(m.group(1))
                break
        if not self.port:
            self.proc.kill()
            raise AssertionError("the server did not start: " + "".join(self.stderr)
                                 + (self.proc.stderr.read() or ""))
        # Keep draining stderr so a chatty server never blocks on a full pipe.
        self._drain = threading.Thread(target=self._read_stderr, daemon=True)
        self._drain.start()
        self.host = "127.0.0.1"
        self.url = f"http://127.0.0.1:{self.port}"

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def headers(self, extra: Optional[dict[str, str]] = None) -> dict[str, str]:
        h = {"Content-Type": "application/json"}
        if self.key is not None:
            h["Authorization"] = f"Bearer {self.key}"
        h.update(extra or {})
        return h

    def conn(self, timeout: float = 60.0) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None,
                headers: Optional[dict[str, str]] = None,
                raw: Optional[bytes] = None) -> tuple[int, dict[str, str], bytes]:
        c = self.conn()
        try:
            data = raw if raw is not None else (None if body is None else
                                                json.dumps(body).encode())
            c.request(method, path, body=data, headers=self.headers(headers))
            r = c.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
        finally:
            c.close()

    def json(self, method: str, path: str, body: Any = None) -> Any:
        status, _, data = self.request(method, path, body)
        assert status == 200, (status, data[:500])
        return json.loads(data)

    def health(self) -> dict[str, Any]:
        out: dict[str, Any] = self.json("GET", "/health")
        return out

    def wait_idle(self, timeout: float = 30.0) -> dict[str, Any]:
        """/health once no slot is busy and nothing is queued (AssertionError on timeout)."""
        deadline = time.monotonic() + timeout
        h = self.health()
        while (h["busy"] or h["queue"]) and time.monotonic() < deadline:
            time.sleep(0.05)
            h = self.health()
        assert h["busy"] == 0 and h["queue"] == 0, h
        return h

    def rss_bytes(self) -> int:
        with open(f"/proc/{self.proc.pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise AssertionError("no VmRSS")

    def stop(self) -> int:
        """SIGTERM, then the exit code (it must drain and exit by itself)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("the server did not exit after SIGTERM: "
                                 + "".join(self.stderr[-20:])) from None


def sse_events(resp: http.client.HTTPResponse) -> Iterator[Any]:
    """The JSON payloads of a server-sent event stream, ending at ``[DONE]`` (yielded as
    the string "[DONE]")."""
    while True:
        line = resp.readline()
        if not line:
            return
        line = line.strip()
        if not line.startswith(b"data: "):
            continue
        payload = line[len(b"data: "):]
        if payload == b"[DONE]":
            yield "[DONE]"
            return
        yield json.loads(payload)


def stream_completion(srv: ServerProcess, body: dict[str, Any],
                      timeout: float = 120.0) -> tuple[int, str, Any, Optional[str]]:
    """(status, text, usage, finish_reason) of a streamed completion read to its end."""
    c = srv.conn(timeout)
    try:
        c.request("POST", "/v1/completions", body=json.dumps({**body, "stream": True}).encode(),
                  headers=srv.headers())
        r = c.getresponse()
        if r.status != 200:
            r.read()
            return r.status, "", None, None
        text, usage, finish, done = [], None, None, False
        for ev in sse_events(r):
            if ev == "[DONE]":
                done = True
                break
            if ev.get("usage") is not None:
                usage = ev["usage"]
            for ch in ev["choices"]:
                text.append(ch["text"])
                finish = ch["finish_reason"] or finish
        assert done, "the stream ended without [DONE]"
        return 200, "".join(text), usage, finish
    finally:
        c.close()


def environ_without_proxy() -> dict[str, str]:
    """The environment for curl: no proxy for loopback."""
    env = dict(os.environ)
    for k in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
              "ALL_PROXY"):
        env.pop(k, None)
    return env
