"""How well the plan predicted conflicts: its pairs against what the branches really did.

A pair of tasks *actually* conflicts when both completed and their branches changed a
common file, each counted from its own base (a stacked task's base holds the earlier
task's work, so that work is not counted twice). Only pairs of completed tasks can be
judged, so only those count on either side. Precision is the share of predicted pairs
that were real, recall the share of real pairs that were predicted; each is None when
it would divide by zero. Pure: the caller passes in each task's changed files.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from itertools import combinations
from typing import Any


def plan_accuracy(
    predicted: Mapping[str, Collection[str]], changed: Mapping[str, Collection[str]]
) -> dict[str, Any]:
    """``predicted``: each task's predicted conflicts; ``changed``: the files each
    completed task's branch changed. The result's ``plan_accuracy`` object."""
    judged = set(changed)
    guessed = {
        tuple(sorted((task, other)))
        for task, others in predicted.items()
        for other in others
        if task in judged and other in judged and task != other
    }
    files = {task: set(paths) for task, paths in changed.items()}
    real = {(a, b) for a, b in combinations(sorted(judged), 2) if files[a] & files[b]}
    hits = len(guessed & real)
    return {
        "predicted_pairs": [list(p) for p in sorted(guessed)],
        "actual_pairs": [list(p) for p in sorted(real)],
        "precision": round(hits / len(guessed), 3) if guessed else None,
        "recall": round(hits / len(real), 3) if real else None,
    }
