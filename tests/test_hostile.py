"""Hostile input of every kind gets a clear refusal, a non-zero exit, and changes nothing."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from conftest import Repo, run_cli

Setup = Callable[[Repo], None]


def _nothing(repo: Repo) -> None:
    return


def _file(rel: str, text: str) -> Setup:
    def make(repo: Repo) -> None:
        path = repo.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    return make


def _bytes(rel: str, data: bytes) -> Setup:
    def make(repo: Repo) -> None:
        (repo.root / rel).write_bytes(data)

    return make


def _prompt(front: str, body: str = "# t\n```sh\ntrue\n```\n") -> Setup:
    return _file("prompts/t.md", f"---\n{front}\n---\n{body}")


def _symlink_out(repo: Repo) -> None:
    outside = repo.root.parent / "secret.md"
    outside.write_text("# secret\n```sh\ntouch pwned\n```\n")
    os.symlink(outside, repo.root / "prompts/link.md")


def _fifo(repo: Repo) -> None:
    os.mkfifo(repo.root / "prompts/pipe.md")


def _dir_named_md(repo: Repo) -> None:
    (repo.root / "prompts/folder.md").mkdir()


def _state(content: bytes) -> Setup:
    def make(repo: Repo) -> None:
        (repo.root / ".gadugi").mkdir(exist_ok=True)
        (repo.root / ".gadugi/state.db").write_bytes(content)

    return make


def _foreign_db(repo: Repo) -> None:
    (repo.root / ".gadugi").mkdir(exist_ok=True)
    conn = sqlite3.connect(repo.root / ".gadugi/state.db")
    conn.execute("CREATE TABLE tasks (x)")
    conn.commit()
    conn.close()


@dataclass
class Case:
    name: str
    args: list[str]
    expect: str  # in stderr
    setup: Setup = _nothing
    stdin: str | None = None
    code: int = 2


SHELL = ["run", "--agent", "shell"]
BILLION_LAUGHS = "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\ntouches: [*c, *c]"
CASES = [
    Case("option-looking name after --", [*SHELL, "--", "-rf"], "not found"),
    Case("--help as a name after --", [*SHELL, "--", "--help"], "not found"),
    Case("dot-dot name", [*SHELL, "../x.md"], "'..'"),
    Case("dot-dot to a real file", [*SHELL, "../secret.md"], "outside the project", _symlink_out),
    Case("dot-dot inside prompts", [*SHELL, "prompts/../../x"], "'..'"),
    Case("absolute path outside", [*SHELL, "/etc/passwd"], "outside the project"),
    Case("symlink leading out", [*SHELL, "link"], "outside the project", _symlink_out),
    Case("named pipe", [*SHELL, "pipe"], "not a regular file", _fifo),
    Case("directory named .md", [*SHELL, "folder.md"], "directory", _dir_named_md),
    Case("command substitution", [*SHELL, "$(touch pwned)"], "not found"),
    Case("backticks in stdin", [*SHELL, "--stdin"], "not found", stdin="`touch pwned`\n"),
    Case("semicolon", [*SHELL, "a;touch pwned"], "not found"),
    Case("very long name", [*SHELL, "x" * 5000], "characters"),
    Case("non-markdown file", [*SHELL, "evil.sh"], "not a Markdown", _file("prompts/evil.sh", "x")),
    Case(
        "python tag in front matter",
        [*SHELL, "t"],
        "not valid YAML",
        _prompt("id: !!python/object/apply:os.system ['touch pwned']"),
    ),
    Case("billion laughs", [*SHELL, "t"], "touches", _prompt(BILLION_LAUGHS)),
    Case("dependency outside", [*SHELL, "t"], "/etc/passwd", _prompt("depends_on: [/etc/passwd]")),
    Case("unknown agent in front matter", [*SHELL, "t"], "agent", _prompt("agent: 'rm -rf /'")),
    Case("front matter list", [*SHELL, "t"], "mapping", _prompt("- a\n- b")),
    Case("huge prompt", [*SHELL, "big"], "limited", _file("prompts/big.md", "x" * 1_100_000)),
    Case("binary prompt", [*SHELL, "bin"], "UTF-8", _bytes("prompts/bin.md", b"\xff\xfe\x00")),
    Case("option as base ref", [*SHELL, "--base", "--upload-pack=touch pwned", "a"], "base"),
    Case("shell in base ref", [*SHELL, "--base", "HEAD; touch pwned", "a"], "does not name"),
    Case("unknown placeholder", ["run", "--agent-cmd", "x {secret}", "a"], "unknown placeholder"),
    Case(
        "attribute placeholder",
        ["run", "--agent-cmd", "x {task_id.__class__}", "a"],
        "unknown placeholder",
    ),
    Case(
        "agent program missing",
        ["run", "--agent-cmd", "no-such-agent-xyz {task_id}", "a"],
        "not on PATH",
    ),
    Case("unbalanced quote", ["run", "--agent-cmd", "x 'open", "a"], "cannot be split"),
    Case("zero parallel", [*SHELL, "--max-parallel", "0", "a"], "max-parallel"),
    Case("negative timeout", [*SHELL, "--timeout", "-1", "a"], "timeout"),
    Case(
        "worktrees outside",
        [*SHELL, "a"],
        "worktrees_dir",
        _file("gadugi.toml", "worktrees_dir = '../escape'\n"),
    ),
    Case(
        "monitoring absolute",
        [*SHELL, "a"],
        "monitoring_dir",
        _file("gadugi.toml", "monitoring_dir = '/etc'\n"),
    ),
    Case(
        "template attribute access",
        [*SHELL, "a"],
        "unknown placeholder",
        _file(".gadugi/templates/workflow.md", "{task_id.__class__.__mro__}"),
    ),
    Case(
        "template stray brace",
        [*SHELL, "a"],
        "template",
        _file(".gadugi/templates/workflow.md", "{"),
    ),
    Case("garbage state.db", [*SHELL, "a"], "left as it is", _state(b"not sqlite at all" * 64)),
    Case("empty state.db", ["status"], "not a gadugi registry", _state(b"")),
    Case("foreign database", [*SHELL, "a"], "not a gadugi registry", _foreign_db),
    Case(
        "injection in orchestration id",
        ["status", "--orchestration", "x'; DROP TABLE tasks;--"],
        "no orchestration",
        _nothing,
    ),
    Case("cancel with a path", ["cancel", "../../x"], "no orchestrations yet"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_is_refused_and_changes_nothing(repo: Repo, case: Case) -> None:
    repo.shell_prompt("a.md", "touch pwned")
    repo.commit()
    case.setup(repo)
    before = repo.snapshot()
    db = repo.root / ".gadugi/state.db"
    db_before = db.read_bytes() if db.exists() else None
    proc = run_cli(case.args, repo.root, input=case.stdin)
    assert proc.returncode == case.code, (proc.stdout, proc.stderr)
    assert case.expect in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert repo.snapshot() == before
    assert (db.read_bytes() if db.exists() else None) == db_before
    assert not list(repo.root.rglob("pwned")) and not (repo.root.parent / "pwned").exists()


def test_hostile_ids_are_neutralised_and_still_run(repo: Repo) -> None:
    repo.shell_prompt("-x.md", "true", front="id: '../../-rf $(x)'")
    repo.commit()
    proc = run_cli([*SHELL, "--json", "--", "-x.md"], repo.root)
    assert proc.returncode == 0, proc.stderr
    assert '"task_id": "rf-x"' in proc.stdout
    assert '"branch": "gadugi/rf-x-' in proc.stdout


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30
