"""Admission control: whether the machine can take another agent right now.

The seed's "dynamic parallelism reduction": while available memory is under a floor or
the load average is over a ceiling, no new task starts. Running tasks are never
stopped for it; the reason is shown so a person can see why tasks wait.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import psutil

SAMPLE_EVERY_S = 1.0


@dataclass(frozen=True)
class Reading:
    available_mb: float
    load_1m: float
    cpus: int


def read_machine() -> Reading:
    return Reading(
        available_mb=psutil.virtual_memory().available / 2**20,
        load_1m=os.getloadavg()[0],
        cpus=os.cpu_count() or 1,
    )


class Admission:
    """Says why a new agent must wait, or None; readings are taken at most once a second."""

    def __init__(
        self,
        min_available_mb: float,
        max_load_per_cpu: float,
        read: Callable[[], Reading] = read_machine,
    ) -> None:
        self.min_available_mb = min_available_mb
        self.max_load_per_cpu = max_load_per_cpu
        self.read = read
        self._at = float("-inf")
        self._reason: str | None = None
        self.kind: str | None = None  # "memory" or "load": what the reason is about

    def blocked(self, now: float) -> str | None:
        if now - self._at >= SAMPLE_EVERY_S:
            self._at = now
            self._reason = self._judge(self.read())
        return self._reason

    def _judge(self, r: Reading) -> str | None:
        self.kind = None
        if self.min_available_mb and r.available_mb < self.min_available_mb:
            self.kind = "memory"
            return (
                f"waiting for memory: {r.available_mb:.0f} MB available, "
                f"floor {self.min_available_mb:.0f} MB"
            )
        ceiling = self.max_load_per_cpu * r.cpus
        if self.max_load_per_cpu and r.load_1m > ceiling:
            self.kind = "load"
            return f"waiting for load to fall: load {r.load_1m:.1f}, ceiling {ceiling:.1f}"
        return None
