# SPDX-License-Identifier: Apache-2.0
"""Signed-release verification cost: opening the bundled model with and without the trust
check (Model.load(..., trust=...): policy and .sig parsed, statement checked against the
artifact's root digest (no second hash of the file), a P-256 and an Ed25519 co-signature
verified with OpenSSL, threshold, revocation and rollback, the file counter read), in full and
lazy mode, and lazy with a signed policy (its P-256 root signature and the policy counter
checked too, docs/releases.md §5), side by side in one run, plus the core's check alone on an
opened model. Medians over rounds; the added milliseconds and the ratio. Target: < 5 ms added
to a model open.

    python benchmarks/release_verify.py --json benchmarks/results/release-verify-NAME.json
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable

import fwassist
from fwassist import Model
from fwassist._trust import counter_init
from fwassist.models import tiny_coder_path

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from release_signer import (Key, artifact_identity, bundle_line, policy, sign_file,  # noqa: E402
                            statement)

from machine import git_commit, write_results  # noqa: E402


def ms(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1e3


def median_ms(fn: Callable[[], Any], rounds: int) -> float:
    fn()  # warm: page cache, first-call costs
    return statistics.median(ms(fn) for _ in range(rounds))


def paired_ms(a: Callable[[], Any], b: Callable[[], Any],
              rounds: int) -> tuple[float, float, float, float, float]:
    """Medians of a, of b and of (b - a), the two timed alternately in each round so that a
    shared machine's load drifts into both alike; and the minimum of a and of b (the least
    disturbed run of each)."""
    a()
    b()
    ta, tb = [], []
    for _ in range(rounds):
        ta.append(ms(a))
        tb.append(ms(b))
    return (statistics.median(ta), statistics.median(tb),
            statistics.median(y - x for x, y in zip(ta, tb)), min(ta), min(tb))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", required=True)
    ap.add_argument("--rounds", type=int, default=41)
    args = ap.parse_args()
    if not fwassist._core.have_release_crypto():
        sys.exit("this build has no crypto backend (FWA_WITH_OPENSSL=OFF)")

    with tempfile.TemporaryDirectory() as d:
        model = os.path.join(d, "model.fwa")
        shutil.copyfile(tiny_coder_path(), model)
        root, card = artifact_identity(model)
        supplier, oem = Key.generate("ecdsa-p256-sha256"), Key.generate("ed25519")
        pol = os.path.join(d, "policy.json")
        with open(pol, "wb") as f:
            f.write(policy({"supplier": [supplier], "oem": [oem]}, {"supplier": 1, "oem": 1}))
        with open(model + ".sig", "wb") as f:
            f.write(sign_file(statement(root, card, 1, rxswin="BENCH-1"), [supplier, oem]))
        counter = os.path.join(d, "counter")
        counter_init(counter, 1)
        trust = {"trust": pol, "counter": counter}
        root = Key.generate("ecdsa-p256-sha256")
        pbytes = open(pol, "rb").read()
        psig = bundle_line(pbytes, root, payload_type="application/vnd.fwassist.trust-policy+json")
        with open(pol + ".sig", "wb") as f:
            f.write(psig)
        pcounter = os.path.join(d, "policy-counter")
        counter_init(pcounter, 1)
        signed_policy = {**trust, "root_keys": [root.pem], "policy_counter": pcounter}
        rows = []
        for mode, kw, extra in (("full", {}, trust), ("lazy", {"lazy": True}, trust),
                                ("lazy+signed-policy", {"lazy": True}, signed_policy)):
            plain, signed, added, plain_min, signed_min = paired_ms(
                lambda: Model.load(model, **kw), lambda: Model.load(model, **kw, **extra),
                args.rounds)
            rows.append({"mode": mode, "open_ms": plain, "open_trusted_ms": signed,
                         "added_ms": added, "ratio": signed / plain, "open_min_ms": plain_min,
                         "open_trusted_min_ms": signed_min,
                         "added_min_ms": signed_min - plain_min})
        native = Model.load(model, lazy=True)._native
        sbytes = open(model + ".sig", "rb").read()
        check_fn = lambda: native.verify_release(pbytes, sbytes, counter, None)  # noqa: E731
        check = median_ms(check_fn, args.rounds)
        check_min = min(ms(check_fn) for _ in range(args.rounds))
        policy_fn = lambda: native.verify_release(  # noqa: E731
            pbytes, sbytes, counter, None, root_keys=[root.pem], policy_signatures=psig,
            policy_counter_path=pcounter)
        # Paired with the plain check (alternating rounds): the load's preemptions (a 2-CPU
        # machine shared with builds) fall on both alike; the min is the undisturbed cost.
        _, check_policy, policy_added, _, check_policy_min = paired_ms(check_fn, policy_fn,
                                                                       args.rounds)
        size = os.path.getsize(model)
    meta = {"cpu_info": fwassist.cpu_info(), "machine": platform.machine(),
            "processor": platform.processor(), "python": platform.python_version(),
            "model_bytes": size, "rounds": args.rounds, "signers": ["ecdsa-p256-sha256",
                                                                     "ed25519"],
            "loadavg": os.getloadavg(), "commit": git_commit()}
    lines = [f"model open with vs without the signed-release check (bundled model, "
             f"{size / 2**20:.1f} MiB; P-256 + Ed25519 co-signed; median of {args.rounds}; "
             f"{platform.machine()}, {','.join(meta['cpu_info']['detected'][:6])}...)",
             f"{'mode':<18} {'open ms':>9} {'trusted ms':>11} {'added ms':>9} {'ratio':>7} "
             f"{'min open':>9} {'min trusted':>12} {'added (min)':>12}"]
    for r in rows:
        lines.append(f"{r['mode']:<18} {r['open_ms']:>9.2f} {r['open_trusted_ms']:>11.2f} "
                     f"{r['added_ms']:>9.2f} {r['ratio']:>7.3f} {r['open_min_ms']:>9.2f} "
                     f"{r['open_trusted_min_ms']:>12.2f} {r['added_min_ms']:>12.2f}")
    lines.append("added ms: median of the per-round differences (the two opens alternate)")
    lines.append(f"the core's check alone (parse, 2 signatures, counter): median {check:.2f} ms, "
                 f"min {check_min:.2f} ms (target: < 5 ms added); load average "
                 f"{meta['loadavg'][0]:.1f} on {os.cpu_count()} CPUs")
    lines.append(f"the same with a signed policy (+1 P-256 root signature, the policy counter): "
                 f"median {check_policy:.2f} ms, min {check_policy_min:.2f} ms, "
                 f"added {policy_added:.2f} ms (median of paired differences)")
    write_results(args.json, {"meta": meta, "rows": rows, "check_only_ms": check,
                              "check_only_min_ms": check_min,
                              "check_signed_policy_ms": check_policy,
                              "check_signed_policy_min_ms": check_policy_min,
                              "check_signed_policy_added_ms": policy_added},
                  "\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
