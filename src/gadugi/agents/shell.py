"""The ``shell`` agent: the prompt's ``sh``/``bash``/``shell`` code blocks as one script."""

from __future__ import annotations

import re

from ..errors import AgentError
from ..tasks import Prompt
from .base import AgentContext, Launch, Outcome
from .command import judge_exit

_FENCE = re.compile(
    r"^(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^\n`]*)\n(?P<code>.*?)^(?P=fence)[ \t]*$",
    re.DOTALL | re.MULTILINE,
)
SHELL_INFO = frozenset({"sh", "bash", "shell"})


def script_of(body: str) -> str | None:
    """The fenced blocks whose info string is sh, bash or shell, joined in order."""
    blocks = [
        m.group("code")
        for m in _FENCE.finditer(body)
        if m.group("info").strip().split(maxsplit=1)[:1] in (["sh"], ["bash"], ["shell"])
    ]
    return "\n".join(blocks) if blocks else None


class ShellProfile:
    name = "shell"

    def prepare(self, ctx: AgentContext, prompt: Prompt) -> Launch:
        script = script_of(prompt.body)
        if script is None:
            raise AgentError(
                ctx.task_id, "the shell agent found no ```sh, ```bash or ```shell block"
            )
        path = ctx.prompt_file.with_suffix(".sh")
        path.write_text(script, encoding="utf-8")
        return Launch(["bash", "-e", str(path)])

    def judge(self, ctx: AgentContext, exit_code: int) -> Outcome:
        return judge_exit(ctx, exit_code)
