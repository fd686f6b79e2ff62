"""How a worktree gets a working environment: the setup command's command line.

The setup command (``setup_command``, front matter ``setup:``) runs in each new worktree
before its agent starts, as a supervised phase of the attempt (see ``runner.py``). This
module decides only what runs; the runner runs it.
"""

from __future__ import annotations

from pathlib import Path

from .config import OrchestrationConfig


def setup_argv(
    command: str, worktree: Path, project_root: Path, config: OrchestrationConfig
) -> list[str]:
    """The argv that sets up ``worktree``: the command, run by bash in the worktree."""
    return ["bash", "-c", command]
