"""Landing re-runs with the real Claude Code against the scripted model server: a task
whose merge conflicts has its session continued on the integration head, and lands."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from claude_fixtures import gadugi
from modelserver import Reply, Turn, bash, say

if TYPE_CHECKING:
    from collections.abc import Callable

    from claude_fixtures import ClaudeRig

LANDING = "Landing your work failed"


def _since(body: dict[str, Any], marker: str) -> int | None:
    """Assistant messages since the last user message that says ``marker``, or None."""
    messages = body.get("messages") or []
    for i in range(len(messages) - 1, -1, -1):
        content = messages[i].get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content}]
        text = " ".join(str(b.get("text", "")) for b in blocks if isinstance(b, dict))
        if messages[i].get("role") == "user" and marker in text:
            return sum(1 for m in messages[i + 1 :] if m.get("role") == "assistant")
    return None


def resolve(turn: Turn) -> Reply:
    """Write its side of shared.txt; asked again by the lander, resolve the conflict."""
    after = _since(turn.body, LANDING)
    if after == 0:
        return bash(
            "printf 'one\\ntwo\\n' > shared.txt && git add shared.txt && git commit -q --no-edit",
            text="I'll keep both sides and conclude the merge.",
        )
    if after is not None:
        return say("Resolved the conflict and committed the merge.")
    if turn.index == 0:
        return bash("printf 'two\\n' > shared.txt && git add -A && git commit -q -m two")
    return say("Done: committed shared.txt.")


def test_claude_resolves_a_landing_conflict_in_its_own_session(
    make_claude_rig: Callable[..., ClaudeRig],
) -> None:
    rig = make_claude_rig(script={"resolve": resolve})
    (rig.repo / "gadugi.toml").write_text(
        'claude_model = "claude-sonnet-4-5"\nretries = 0\nmax_load_per_cpu = 0\nland_retries = 1\n'
    )
    prompts = rig.repo / "prompts"
    prompts.mkdir()
    (prompts / "one.md").write_text(
        "---\nagent: shell\n---\n# one\n\n```sh\nprintf 'one\\n' > shared.txt\n"
        "git add shared.txt\ngit commit -q -m one\n```\n"
    )
    (prompts / "two.md").write_text("# two\n\nWrite shared.txt.\n\n[[scenario:resolve]]\n")
    rig.git("add", "-A")
    rig.git("commit", "-q", "-m", "prompts")
    ran = gadugi(rig, "run", "--json", "one", "two")
    assert ran.returncode == 0, ran.stderr
    session = {t["task_id"]: t for t in json.loads(ran.stdout)["tasks"]}["two"]["agent"]

    done = gadugi(rig, "land", "--json")

    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    two = {t["task_id"]: t for t in result["tasks"]}["two"]
    assert two["landing"]["status"] == "landed" and two["attempts"] == 2
    assert two["agent"]["session_id"] == session["session_id"]  # the same session, continued
    assert rig.git("show", f"{result['landing']['branch']}:shared.txt") == "one\ntwo\n"
    asked = [r.body for r in rig.server.requests if r.body and _since(r.body, LANDING) is not None]
    assert asked, "the agent was never told about the conflict"
    last_user = json.dumps(asked[0]["messages"][-1])
    assert "shared.txt" in last_user and result["landing"]["branch"] in last_user
