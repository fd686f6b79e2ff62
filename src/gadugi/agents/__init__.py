"""Agent profiles: one module per agent, each turning a task into a command line."""

from __future__ import annotations

import shutil
from collections.abc import Iterable
from dataclasses import dataclass

from ..config import OrchestrationConfig
from ..errors import ConfigError, PromptError
from ..tasks import Prompt
from . import aider, codex, gemini
from .aider import AiderOptions, AiderProfile
from .base import AgentContext, AgentProfile, Launch, Outcome
from .claude import ClaudeOptions, ClaudeProfile
from .codex import CodexOptions, CodexProfile
from .command import CommandProfile, parse_template
from .gemini import GeminiOptions, GeminiProfile
from .shell import ShellProfile

__all__ = [
    "CLIS",
    "AgentCli",
    "AgentContext",
    "AgentProfile",
    "Launch",
    "Outcome",
    "check_prompts",
    "executable_for",
    "profile_for",
]


@dataclass(frozen=True)
class AgentCli:
    """An agent that is a separately installed command-line program."""

    name: str
    what: str
    install: str
    prompt_in_argv: bool  # the prompt's text is an argument, not a file the agent reads


CLIS = {
    "claude": AgentCli("claude", "Claude Code", "npm install -g @anthropic-ai/claude-code", True),
    "codex": AgentCli("codex", codex.WHAT, codex.INSTALL, True),
    "gemini": AgentCli("gemini", gemini.WHAT, gemini.INSTALL, True),
    "aider": AgentCli("aider", aider.WHAT, aider.INSTALL, False),
}


def executable_for(name: str, config: OrchestrationConfig) -> str | None:
    """The program the ``name`` agent runs, as configured; None for built-in agents."""
    if name not in CLIS:
        return None
    value: str = getattr(config, f"{name}_executable")
    return value


def require_program(name: str, config: OrchestrationConfig) -> None:
    """Refuse, before anything is created, an agent whose program is not installed."""
    if name in CLIS:
        program, cli = executable_for(name, config) or name, CLIS[name]
        hint = f"install {cli.what} ({cli.install})"
    elif name == "command" and config.agent_cmd:
        program, hint = parse_template(config.agent_cmd)[0], "check --agent-cmd"
    else:
        return
    if "{" not in program and shutil.which(program) is None:
        raise ConfigError(
            "agent",
            f"the {name} agent needs {program!r}, which is not on PATH: {hint}, "
            "or choose another agent (--agent shell runs the prompts' sh blocks)",
        )


def check_prompts(prompts: Iterable[Prompt], default_agent: str) -> None:
    """Refuse, before anything is created, a prompt its agent cannot be handed.

    An argument cannot carry a NUL byte (argv is C strings), so an agent that takes the
    prompt's text as an argument would fail to start, after its worktree was made.
    """
    for prompt in prompts:
        name = prompt.agent or default_agent
        cli = CLIS.get(name)
        if cli is not None and cli.prompt_in_argv and "\0" in prompt.text:
            raise PromptError(
                prompt.rel_path,
                f"contains a NUL byte, which the {name} agent cannot take on its command line",
            )


def profile_for(name: str, config: OrchestrationConfig) -> AgentProfile:
    """The profile called ``name``, configured from ``config``."""
    if name == "shell":
        return ShellProfile()
    if name == "command":
        if not config.agent_cmd:
            raise ConfigError("agent_cmd", "the command agent needs --agent-cmd TEMPLATE")
        return CommandProfile(config.agent_cmd)
    if name == "claude":
        return ClaudeProfile(
            ClaudeOptions(
                executable=config.claude_executable,
                model=config.claude_model,
                permission_mode=config.claude_permission_mode,
                allowed_tools=config.claude_allowed_tools,
                max_turns=config.claude_max_turns,
                extra_args=config.claude_extra_args,
            )
        )
    if name == "codex":
        return CodexProfile(
            CodexOptions(
                executable=config.codex_executable,
                model=config.codex_model,
                sandbox=config.codex_sandbox,
                extra_args=config.codex_extra_args,
            )
        )
    if name == "gemini":
        return GeminiProfile(
            GeminiOptions(
                executable=config.gemini_executable,
                model=config.gemini_model,
                extra_args=config.gemini_extra_args,
            )
        )
    if name == "aider":
        return AiderProfile(
            AiderOptions(
                executable=config.aider_executable,
                model=config.aider_model,
                extra_args=config.aider_extra_args,
            )
        )
    raise ConfigError("agent", f"the {name!r} agent is not available in this version")
