# SPDX-License-Identifier: Apache-2.0
"""The carbon ledger of ``fwassist serve``: each request's energy and SCI, and the window
reports of ``GET /v1/carbon``.

A request's energy is the energy profile's model (fwassist.energy.estimate) of its own counters:
core-seconds busy, spinning and parked, and weight bytes read. It is kept in integer
microjoules, so a window's attributed energy is exactly the sum of the ``usage`` figures its
responses carried. The static (idle) power of the device over the window is reported beside
it; the window's SCI counts both (fwassist.energy.sci_report on the summed activity).
"""

from __future__ import annotations

import datetime as _dt
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Optional

from .. import energy

# Records kept for /v1/carbon; older ones are dropped (the report names the oldest kept).
MAX_RECORDS = 200_000


@dataclass(frozen=True)
class Record:
    """One finished request, as charged."""

    t: float                 # unix time it finished
    prompt_tokens: int
    completion_tokens: int
    busy_core_s: float
    spin_core_s: float
    parked_core_s: float
    weight_bytes_read: int
    energy_uj: int


def parse_time(value: str, name: str) -> float:
    """A window bound: unix seconds, or an ISO 8601 time (UTC when it names no zone)."""
    try:
        return float(value)
    except ValueError:
        pass
    try:
        t = _dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"{name}: {value!r} is neither unix seconds nor an ISO 8601 "
                         f"time") from None
    if t.tzinfo is None:
        t = t.replace(tzinfo=_dt.timezone.utc)
    return t.timestamp()


class Ledger:
    """Thread-safe record of what each request cost."""

    def __init__(self, profile: energy.Profile, grid_intensity_g_per_kwh: float,
                 started: Optional[float] = None) -> None:
        self.profile = profile
        self.grid = float(grid_intensity_g_per_kwh)
        self.started = time.time() if started is None else started
        self._records: deque[Record] = deque(maxlen=MAX_RECORDS)
        self._lock = threading.Lock()

    def charge(self, stats: dict[str, Any]) -> tuple[Record, dict[str, Any]]:
        """Records one request from its Generation.stats; returns the record and the
        carbon fields of its ``usage``."""
        a = energy.Activity(wall_s=0.0, busy_core_s=float(stats["busy_core_s"]),
                            spin_core_s=float(stats["spin_core_s"]),
                            parked_core_s=float(stats["parked_core_s"]),
                            weight_bytes_read=int(stats["weight_bytes_read"]),
                            prompt_tokens=int(stats["prompt_tokens"]),
                            generated_tokens=int(stats["generated_tokens"]))
        est = energy.estimate(a, self.profile)
        uj = int(round(est.total_j * 1e6))
        rec = Record(time.time(), a.prompt_tokens, a.generated_tokens, a.busy_core_s,
                     a.spin_core_s, a.parked_core_s, a.weight_bytes_read, uj)
        with self._lock:
            self._records.append(rec)
        carbon_g = energy.joules_to_kwh(uj / 1e6) * self.grid
        usage = {
            "core_seconds": a.busy_core_s + a.spin_core_s,
            "energy_uj": uj,
            "energy_j": uj / 1e6,
            "energy_source": "model",
            "carbon_g": carbon_g,
            "sci_g_per_1k_tokens": (carbon_g / (a.generated_tokens / 1000.0)
                                    if a.generated_tokens else None),
        }
        return rec, usage

    def window(self, since: Optional[float],
               until: Optional[float]) -> tuple[dict[str, Any], energy.SciReport]:
        """The report of the requests finished in [since, until] (default: since start,
        until now), and its SCI report (for the CodeCarbon row)."""
        now = time.time()
        lo = self.started if since is None else max(since, self.started)
        hi = now if until is None else min(until, now)
        if hi < lo:
            raise ValueError(f"the window [{since}, {until}] ends before it starts (the server "
                             f"started at {self.started})")
        with self._lock:
            recs = [r for r in self._records if lo <= r.t <= hi]
            oldest = self._records[0].t if self._records else None
        wall = hi - lo
        act = energy.Activity(
            wall_s=wall, busy_core_s=sum(r.busy_core_s for r in recs),
            spin_core_s=sum(r.spin_core_s for r in recs),
            parked_core_s=sum(r.parked_core_s for r in recs),
            weight_bytes_read=sum(r.weight_bytes_read for r in recs),
            prompt_tokens=sum(r.prompt_tokens for r in recs),
            generated_tokens=sum(r.completion_tokens for r in recs))
        info = energy.RunInfo.here(project_name="fwassist serve")
        sci = energy.sci_report(act, self.profile, grid_intensity_g_per_kwh=self.grid,
                                info=info)
        idle_uj = int(round(self.profile.value("idle_power") * wall * 1e6))
        return ({
            "since": lo, "until": hi, "window_s": wall,
            "requests": len(recs),
            "prompt_tokens": act.prompt_tokens,
            "completion_tokens": act.generated_tokens,
            "attributed_energy_uj": sum(r.energy_uj for r in recs),
            "idle_energy_uj": idle_uj,
            "energy_source": "model",
            "grid_intensity_g_per_kwh": self.grid,
            "energy_profile": self.profile.to_dict(),
            "oldest_record": oldest,
            "sci": sci.to_dict(),
        }, sci)
