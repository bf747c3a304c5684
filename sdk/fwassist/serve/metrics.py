# SPDX-License-Identifier: Apache-2.0
"""The Prometheus metrics of ``fwassist serve`` (docs/serve.md lists them), through the
official prometheus_client, in base units: joules, seconds, bytes, tokens."""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector


class _IdleEnergy(Collector):
    """The static (idle) power of the energy profile over the server's lifetime: a counter
    that grows with time, so it is computed at scrape time."""

    def __init__(self, idle_w: float, started: float) -> None:
        self.idle_w = idle_w
        self.started = started

    def collect(self) -> Iterable[Metric]:
        c = CounterMetricFamily("fwassist_idle_energy_joules",
                                "Modelled static (idle) energy of the device since start",
                                labels=())
        c.add_metric((), self.idle_w * (time.time() - self.started))
        yield c


class Metrics:
    def __init__(self, idle_w: float, started: float, layers: int,
                 queue_depth: Callable[[], int], busy_slots: Callable[[], int],
                 active_cores: Callable[[], int]) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("fwassist_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=r)
        self.tokens = Counter("fwassist_tokens", "Tokens processed, by kind (prompt, cached "
                              "prompt tokens reused, completion)", ["kind"], registry=r)
        self.energy = Counter("fwassist_energy_joules", "Modelled energy attributed to "
                              "requests (the sum of their usage.energy_j)", registry=r)
        self.emissions = Counter("fwassist_emissions_grams", "Operational emissions "
                                 "attributed to requests, gCO2e", registry=r)
        self.core_seconds = Counter("fwassist_core_seconds", "Core-seconds of the "
                                    "generations, by state", ["state"], registry=r)
        self.weight_bytes = Counter("fwassist_weight_read_bytes", "Weight bytes read by the "
                                    "generations", registry=r)
        self.experts = Counter("fwassist_expert_activations", "Tokens routed to experts, by "
                               "layer", ["layer"], registry=r)
        self.generations = Counter("fwassist_generations", "Finished generations by finish "
                                   "reason", ["reason"], registry=r)
        self.ttft = Histogram("fwassist_time_to_first_token_seconds", "Time from request to "
                              "first token", registry=r,
                              buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30))
        self.duration = Histogram("fwassist_request_duration_seconds", "Time from request "
                                  "to the end of its generation",
                                  registry=r,
                                  buckets=(.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120))
        for name, doc, fn in (("fwassist_queue_depth", "Requests waiting for a slot",
                               queue_depth),
                              ("fwassist_sessions_busy", "Slots running a generation",
                               busy_slots),
                              ("fwassist_active_cores", "Cores computing now", active_cores)):
            g = Gauge(name, doc, registry=r)
            g.set_function(fn)
        r.register(_IdleEnergy(idle_w, started))
        for layer in range(layers):  # every layer present from the start (rate() needs it)
            self.experts.labels(layer=str(layer))

    def observe_generation(self, stats: dict[str, Any], reason: str, energy_j: float,
                           carbon_g: float, expert_tokens: Any) -> None:
        self.generations.labels(reason=reason).inc()
        self.tokens.labels(kind="prompt").inc(int(stats.get("prompt_tokens", 0)))
        self.tokens.labels(kind="cached").inc(int(stats.get("cached_tokens", 0)))
        self.tokens.labels(kind="completion").inc(int(stats.get("generated_tokens", 0)))
        for state in ("busy", "spin", "parked"):
            self.core_seconds.labels(state=state).inc(float(stats.get(f"{state}_core_s", 0.0)))
        self.weight_bytes.inc(int(stats.get("weight_bytes_read", 0)))
        self.energy.inc(energy_j)
        self.emissions.inc(carbon_g)
        if expert_tokens is not None:
            for layer, n in enumerate(expert_tokens.sum(axis=1).tolist()):
                if n:
                    self.experts.labels(layer=str(layer)).inc(int(n))
