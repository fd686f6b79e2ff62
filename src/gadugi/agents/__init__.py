"""Agent profiles: one module per agent, each turning a task into a command line."""

from __future__ import annotations

from ..config import OrchestrationConfig
from ..errors import ConfigError
from .base import AgentContext, AgentProfile, Launch, Outcome
from .command import CommandProfile
from .shell import ShellProfile

__all__ = ["AgentContext", "AgentProfile", "Launch", "Outcome", "profile_for"]


def profile_for(name: str, config: OrchestrationConfig) -> AgentProfile:
    """The profile called ``name``, configured from ``config``."""
    if name == "shell":
        return ShellProfile()
    if name == "command":
        if not config.agent_cmd:
            raise ConfigError("agent_cmd", "the command agent needs --agent-cmd TEMPLATE")
        return CommandProfile(config.agent_cmd)
    if name == "claude":
        from .claude import ClaudeOptions, ClaudeProfile

        return ClaudeProfile(
            ClaudeOptions(
                model=config.claude_model,
                permission_mode=config.claude_permission_mode,
                allowed_tools=config.claude_allowed_tools,
                max_turns=config.claude_max_turns,
                extra_args=config.claude_extra_args,
            )
        )
    raise ConfigError("agent", f"the {name!r} agent is not available in this version")
