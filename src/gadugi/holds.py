"""What holds new tasks back besides the machine: the cost budget and agents' usage limits,
and how long an orchestration waited for each reason.

Pure bookkeeping for the runner's loop: no clock (every call takes ``now``), no processes,
no registry. The runner asks before each start and tells what happened after each attempt.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

# The reasons ``waited_seconds`` is kept for (PRODUCT.md: the result's ``waited_seconds``).
WAIT_KINDS = ("load", "memory", "budget", "usage_limit")


def cost_of(agent: dict[str, Any]) -> float:
    """The cost an agent reported (``cost_usd``), 0 when it reported none."""
    return amount(agent.get("cost_usd")) or 0.0


def amount(value: Any) -> float | None:
    """``value`` as US dollars spent, or None when it is none: not a number, nan, infinite
    or below zero (nan would make every sum nan, never at a budget; a negative cost would
    give back what was spent)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) and number >= 0 else None


def clock_time(at: float) -> str:
    try:
        return time.strftime("%H:%M:%S", time.localtime(at))
    except (ValueError, OverflowError, OSError):
        return "an unknown time"  # no time a clock shows (nan, or beyond time_t)


# Usage limits reset within a week (Claude's longest window); a day more for slack. A reset
# reported further from now is no time to wait for: milliseconds taken for seconds, or a
# damaged report, which would park the agent's tasks for millennia.
MAX_PARK_S = 8 * 24 * 3600.0


def reset_time(value: Any, now: float) -> float | None:
    """An agent's reported usage-limit reset (epoch seconds) worth waiting for, or None
    when it is none: not a number, nan or infinite, or more than ``MAX_PARK_S`` from now.
    A reset just past is kept: the wait is then the margin alone."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    reset = float(value)
    return reset if abs(reset - now) <= MAX_PARK_S else None  # False for nan


@dataclass(frozen=True)
class Budget:
    """``budget_usd``: no new task once the cost reaches it; ``hard``: stop running ones too."""

    limit_usd: float | None
    hard: bool = False

    def spent_out(self, spent_usd: float) -> bool:
        return self.limit_usd is not None and spent_usd >= self.limit_usd

    def left(self, spent_usd: float) -> float | None:
        """What is left of the budget, or None without one."""
        return None if self.limit_usd is None else self.limit_usd - spent_usd

    def waiting(self, spent_usd: float) -> str | None:
        """Why no new task may start, or None while the budget lasts."""
        if not self.spent_out(spent_usd):
            return None
        return f"budget of ${self.limit_usd:g} reached: ${spent_usd:.4f} spent"

    def spent_message(self) -> str:
        """Why a task was cancelled (or stopped, with ``hard``) for the budget."""
        return f"budget of ${self.limit_usd:g} spent"


@dataclass
class _Limit:
    until: float  # the reset time plus the margin: nothing of the agent starts before
    reset_at: float  # the reset time the agent reported
    canary: str | None = None  # the one task that has started since ``until``


@dataclass
class UsageLimits:
    """Agents that met a usage limit: every queued task of one waits until the reset plus
    ``margin_s``; then one task (the canary) starts, and the rest follow once it has got
    past its first turn or ended without meeting the limit again."""

    margin_s: float
    limits: dict[str, _Limit] = field(default_factory=dict)

    def park(self, agent: str, reset_at: float) -> float:
        """The agent met its limit; returns until when its tasks wait."""
        until = reset_at + self.margin_s
        current = self.limits.get(agent)
        if current is None or until > current.until or current.canary is not None:
            self.limits[agent] = _Limit(until, reset_at)
        return self.limits[agent].until

    def holds(self, agent: str, task_id: str, now: float) -> str | None:
        """Why ``task_id`` of ``agent`` may not start now, or None."""
        limit = self.limits.get(agent)
        if limit is None:
            return None
        if now < limit.until:
            return self.reason(agent)
        if limit.canary in (None, task_id):
            return None
        return f"waiting for {limit.canary} to get past the usage limit of {agent}"

    def reason(self, agent: str) -> str | None:
        limit = self.limits.get(agent)
        if limit is None:
            return None
        return f"usage limit of {agent}: resets at {clock_time(limit.reset_at)}"

    def started(self, agent: str, task_id: str, now: float) -> None:
        """A task of ``agent`` started: after the reset, the first one is the canary."""
        limit = self.limits.get(agent)
        if limit is not None and now >= limit.until and limit.canary is None:
            limit.canary = task_id

    def passed(self, agent: str, task_id: str) -> None:
        """The canary got past its first turn, or ended without a new limit: all may go."""
        limit = self.limits.get(agent)
        if limit is not None and limit.canary == task_id:
            del self.limits[agent]

    def is_canary(self, agent: str, task_id: str) -> bool:
        limit = self.limits.get(agent)
        return limit is not None and limit.canary == task_id


@dataclass
class WaitTally:
    """Seconds spent waiting for admission, per reason; spans may overlap across reasons."""

    totals: dict[str, float] = field(default_factory=dict)
    since: dict[str, float] = field(default_factory=dict)  # open spans: reason -> start

    def observe(self, kinds: Iterable[str], now: float) -> bool:
        """The reasons waiting right now; returns whether a span opened or closed."""
        current = set(kinds)
        changed = False
        for kind in list(self.since):
            if kind not in current:
                self.totals[kind] = self.totals.get(kind, 0.0) + now - self.since.pop(kind)
                changed = True
        for kind in current - set(self.since):
            self.since[kind] = now
            changed = True
        return changed

    def seconds(self, now: float) -> dict[str, float]:
        """Each reason's total so far, open spans counted up to ``now``; zeros left out."""
        out = dict(self.totals)
        for kind, start in self.since.items():
            out[kind] = out.get(kind, 0.0) + now - start
        return {k: round(v, 3) for k, v in out.items() if v > 0}
