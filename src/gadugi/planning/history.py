"""Estimates learnt from this project's history: pure, the history is passed in as data.

A task whose prompt file has completed before takes the median of its measured run times;
otherwise a task whose type has completed before (and whose front matter sets no estimate)
takes that type's median. Either way its ``estimate_source`` says ``history``, and the
plan's totals are worked out again from the new estimates.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from ..tasks import Prompt
from .plan import Plan, _summarize

MIN_MINUTES = 0.1  # an estimate is never 0: the critical path and speedup divide by them


def apply_history(
    plan: Plan, prompts: list[Prompt], history: Mapping[str, Mapping[str, float]]
) -> Plan:
    """``plan`` with estimates from ``history`` (``stats.history``: ``{"prompt": {rel_path:
    minutes}, "type": {type: minutes}}``) where it has them."""
    by_prompt, by_type = history.get("prompt", {}), history.get("type", {})
    declared = {p.task_id for p in prompts if p.estimate_minutes}
    tasks = []
    for task in plan.tasks:
        minutes = by_prompt.get(task.prompt_file)
        if minutes is None and task.task_id not in declared:
            minutes = by_type.get(task.type)
        if minutes is None:
            tasks.append(task)
            continue
        learnt = round(max(MIN_MINUTES, minutes), 1)
        tasks.append(replace(task, estimate_minutes=learnt, estimate_source="history"))
    if all(t.estimate_source != "history" for t in tasks):
        return plan
    return _summarize(tuple(tasks), plan.max_parallel, plan.conflict_policy)
