"""gadugi: run many coding-agent tasks at once, each in its own git worktree and branch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .config import OrchestrationConfig
    from .coordinator import OrchestrationResult, OrchestratorCoordinator, TaskResult
    from .errors import GadugiError
    from .tasks import TaskStatus

# The public names load on first use, so `import gadugi.cli` for a quick `gadugi status`
# does not pay for the whole orchestration machinery.
_PUBLIC = {
    "GadugiError": "errors",
    "OrchestrationConfig": "config",
    "OrchestrationResult": "coordinator",
    "OrchestratorCoordinator": "coordinator",
    "TaskResult": "coordinator",
    "TaskStatus": "tasks",
}


def __getattr__(name: str) -> Any:
    if name in _PUBLIC:
        from importlib import import_module

        return getattr(import_module(f".{_PUBLIC[name]}", __name__), name)
    raise AttributeError(f"module 'gadugi' has no attribute {name!r}")


__all__ = [
    "GadugiError",
    "OrchestrationConfig",
    "OrchestrationResult",
    "OrchestratorCoordinator",
    "TaskResult",
    "TaskStatus",
    "__version__",
]
