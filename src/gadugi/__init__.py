"""gadugi: run many coding-agent tasks at once, each in its own git worktree and branch."""

from __future__ import annotations

__version__ = "0.1.0"

from .config import OrchestrationConfig
from .coordinator import OrchestrationResult, OrchestratorCoordinator, TaskResult
from .errors import GadugiError
from .tasks import TaskStatus

__all__ = [
    "GadugiError",
    "OrchestrationConfig",
    "OrchestrationResult",
    "OrchestratorCoordinator",
    "TaskResult",
    "TaskStatus",
    "__version__",
]
