# SPDX-License-Identifier: Apache-2.0
"""``fwassist serve [MODEL.fwa] --pin sha256:...``: a local OpenAI-compatible completion
server with a carbon accounting endpoint, Prometheus metrics and a live dashboard
(docs/serve.md). Without MODEL, the bundled model (with its own pin).

Binds 127.0.0.1 by default and then answers only requests addressed to a loopback host name.
SIGTERM (or Ctrl-C) stops accepting connections, lets the requests in flight finish (at most
--drain-timeout seconds), then exits 0. Needs the serve extra: pip install 'fwassist[serve]'.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import sys
from typing import Any

DEFAULT_PORT = 8080
# World average grid intensity (as fwassist demo): pass --grid-intensity for your grid.
DEFAULT_GRID_G_PER_KWH = 460.0
MAX_API_KEY_FILE = 4096
SWITCH_INTERVAL_S = 0.0005


def register(sub: Any) -> None:
    from . import MAX_THREADS, float_range, input_file, int_range

    p = sub.add_parser("serve", help="OpenAI-compatible completion server with carbon "
                                     "accounting, metrics and a dashboard",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", nargs="?", type=input_file,
                   help="the .fwa artifact (default: the bundled model)")
    p.add_argument("--pin", help="expected pin sha256:<hex> (required with MODEL)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1; another address also accepts "
                        "any Host header)")
    p.add_argument("--port", type=int_range(0, 65535), default=DEFAULT_PORT,
                   help=f"TCP port (default {DEFAULT_PORT}; 0: a free one, printed)")
    p.add_argument("--sessions", type=int_range(1, 256), default=4,
                   help="generations run at once (default 4)")
    p.add_argument("--queue", type=int_range(0, 100000), default=16,
                   help="requests waiting beyond --sessions before 429 (default 16)")
    p.add_argument("--api-key-file", type=input_file,
                   help="file holding the bearer token clients must send")
    p.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                   help="allow cross-origin requests from ORIGIN (repeatable; none by default)")
    p.add_argument("--ctx", type=int_range(0), default=0,
                   help="context per session (default 0: the model's, <= 4096)")
    p.add_argument("--engine", choices=("batch", "sessions"), default="batch",
                   help="batch (default): one forward pass decodes a token of every running "
                        "generation; sessions: a session and thread per slot")
    p.add_argument("--mode", choices=("exact", "fast"), default="fast")
    p.add_argument("--threads", type=int_range(1, MAX_THREADS), default=1,
                   help="threads per session (default 1)")
    p.add_argument("--max-body-bytes", type=int_range(1024, 1 << 30), default=1 << 20,
                   help="largest request body (default 1 MiB; larger: 413)")
    p.add_argument("--drain-timeout", type=float_range(0.0, 3600.0), default=60.0,
                   help="seconds SIGTERM waits for requests in flight (default 60)")
    p.add_argument("--model-id", help="the model's name in the API (default: the file's name "
                                      "without .fwa)")
    p.add_argument("--grid-intensity", type=float_range(0.0), default=None,
                   help=f"gCO2e/kWh of your grid (default {DEFAULT_GRID_G_PER_KWH:g}, a world "
                        "average)")
    p.add_argument("--energy-profile", metavar="NAME|PATH",
                   help="device energy profile (default by CPU architecture)")
    from .artifact import add_trust_arguments
    add_trust_arguments(p)
    p.set_defaults(fn=run)


def _api_key(path: str) -> str:
    with open(path, "rb") as f:
        raw = f.read(MAX_API_KEY_FILE + 1)
    if len(raw) > MAX_API_KEY_FILE:
        raise ValueError(f"--api-key-file: {path} is larger than {MAX_API_KEY_FILE} bytes")
    try:
        key = raw.decode("ascii").strip()
    except UnicodeDecodeError:
        raise ValueError(f"--api-key-file: {path} is not ASCII text") from None
    if not key or any(c.isspace() or not c.isprintable() for c in key):
        raise ValueError(f"--api-key-file: {path} must hold one token (printable, no spaces)")
    return key


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _model_info(model: Any, path: str, sig: Any) -> dict[str, Any]:
    """The card and the release (RXSWIN, security version) of /v1/models. The release is the
    verified one with --trust; otherwise a .sig beside the model is read for what it claims
    (``verified: false``)."""
    from ..errors import ReleaseError
    from ..loader import load_artifact

    art = load_artifact(path, pin=model.pin, lazy=True)
    try:
        card = art.manifest["model_card"]
    finally:
        art.close()
    rel: Any = None
    if model.release is not None:
        r = model.release
        rel = {"verified": True, "rxswin": r.rxswin, "security_version": r.security_version,
               "signers": [s.role for s in r.signers]}
    else:
        sp = os.fspath(sig) if sig is not None else path + ".sig"
        if os.path.isfile(sp):
            from ..release._formats import parse_statement
            from ..release.verify import read_signatures
            try:
                st = parse_statement(read_signatures(sp)[0].payload)
                rel = {"verified": False, "rxswin": st.rxswin,
                       "security_version": st.security_version,
                       "matches_model": st.pin == model.pin}
            except ReleaseError as e:
                rel = {"verified": False, "error": e.message}
    return {"card": card, "release": rel, "protection": model.protection}


def run(args: argparse.Namespace) -> int:
    import signal
    import socket

    from ..errors import require

    require("starlette", "serve", "fwassist serve")
    uvicorn = require("uvicorn", "serve", "fwassist serve")
    require("prometheus_client", "serve", "fwassist serve")
    from .. import energy
    from ..models import TINY_CODER_PIN, tiny_coder_path
    from ..pin import parse_pin
    from ..runtime import Model
    from ..serve.app import Server, ServeConfig
    from .run import default_profile_name

    if args.model is None:
        if args.pin is not None and args.pin != TINY_CODER_PIN:
            raise ValueError("--pin: the bundled model has its own pin; pass MODEL to serve "
                             "another")
        path, pin = tiny_coder_path(), TINY_CODER_PIN
    else:
        if args.pin is None:
            raise ValueError("--pin sha256:<hex> is required with MODEL (fwassist verify "
                             "prints it)")
        path, pin = args.model, args.pin
    parse_pin(pin)
    profile = energy.load_profile(args.energy_profile or default_profile_name())
    key = _api_key(args.api_key_file) if args.api_key_file else None
    opts: dict[str, Any] = {}
    if args.trust is not None:
        opts.update(trust=args.trust, signature=args.sig, counter=args.counter)
    elif args.counter is not None:
        raise ValueError("--counter needs --trust")
    # Bind before loading: a taken port fails at once, and --port 0 gets its number.
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        sock.close()
        raise OSError(e.errno, f"cannot bind {args.host}:{args.port}: {e.strerror}") from None
    model = Model.load(path, pin=pin, **opts)
    model_id = args.model_id or os.path.basename(path).removesuffix(".fwa")
    cfg = ServeConfig(
        model_id=model_id, profile=profile,
        grid_intensity=(DEFAULT_GRID_G_PER_KWH if args.grid_intensity is None
                        else args.grid_intensity),
        sessions=args.sessions, queue=args.queue, max_context=args.ctx or None,
        engine=args.engine, mode=args.mode,
        threads=args.threads, api_key=key, cors_origins=tuple(args.cors),
        loopback_only=_is_loopback(args.host), max_body_bytes=args.max_body_bytes,
        model_info=_model_info(model, path, args.sig))
    # The engine thread needs the GIL for a moment after each native step; with the default
    # 5 ms switch interval it can wait that long behind the event loop, every step.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    server = Server(model, cfg)
    config = uvicorn.Config(server.app, log_level="warning", lifespan="on",
                            timeout_graceful_shutdown=args.drain_timeout,
                            access_log=False)
    uv = uvicorn.Server(config)
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again once its own handlers
    # are gone: this handler takes it, so a drained server exits 0. Installed before the
    # address is announced, so a SIGTERM that comes before uvicorn's handlers also stops it.
    stopped: list[int] = []

    def on_signal(signum: int, frame: Any) -> None:
        stopped.append(signum)
        uv.should_exit = True

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    sock.listen(2048)  # connections wait in the backlog until uvicorn accepts them
    port = sock.getsockname()[1]
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"fwassist serve: {model_id} ({pin}) on http://{shown}:{port}/ with {args.sessions} "
          f"sessions", file=sys.stderr, flush=True)
    try:
        uv.run(sockets=[sock])
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        sock.close()
    print("fwassist serve: stopped" + (" (drained)" if stopped else ""), file=sys.stderr,
          flush=True)
    return 0
