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


def _toml(text: str) -> Setup:
    return _file("gadugi.toml", text + "\n")


def _template(text: str) -> Setup:
    return _file(".gadugi/templates/workflow.md", text)


def _link(rel: str, target: str) -> Setup:
    """A symlink at ``rel``: dangling when ``target`` does not exist, a loop when it is itself."""

    def make(repo: Repo) -> None:
        os.symlink(target, repo.root / rel)

    return make


def _nul_prompt(agent: str) -> Setup:
    def make(repo: Repo) -> None:
        # The agent's program exists, so only the NUL byte can stop the run.
        (repo.root / "gadugi.toml").write_text(f"{agent}_executable = 'true'\n")
        (repo.root / "prompts/nul.md").write_text("# nul\n\nbefore\x00after\n")

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
    env: dict[str, str] | None = None
    # Cases that used to wait or loop for ever get a bound, so they fail instead of hang.
    timeout: float = 120


SHELL = ["run", "--agent", "shell"]
BILLION_LAUGHS = "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\ntouches: [*c, *c]"
DEEP = "touches: " + "[" * 10_000 + "]" * 10_000
HUGE = 2**40
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
    # Numbers: NaN passes every < and > check, so each must be tested for finiteness.
    Case("kill grace inf", [*SHELL, "a"], "kill_grace_seconds", _toml("kill_grace_seconds = inf")),
    Case("kill grace nan", [*SHELL, "a"], "kill_grace_seconds", _toml("kill_grace_seconds = nan")),
    Case(
        "retry delay nan",
        [*SHELL, "a"],
        "retry_base_delay_seconds",
        _toml("retry_base_delay_seconds = nan"),
    ),
    Case(
        "stall timeout nan",
        [*SHELL, "a"],
        "stall_timeout_minutes",
        _toml("stall_timeout_minutes = nan"),
    ),
    Case(
        "load ceiling nan",
        [*SHELL, "a"],
        "max_load_per_cpu",
        _toml("max_load_per_cpu = nan"),
        # The suite's own setting (conftest) would win over the file; empty means unset.
        env={"GADUGI_MAX_LOAD_PER_CPU": ""},
    ),
    Case(
        "load ceiling inf in the environment",
        [*SHELL, "a"],
        "GADUGI_MAX_LOAD_PER_CPU",
        env={"GADUGI_MAX_LOAD_PER_CPU": "inf"},
    ),
    Case(
        "monitoring interval nan",
        [*SHELL, "a"],
        "monitoring_interval_seconds",
        _toml("monitoring_interval_seconds = nan"),
    ),
    Case(
        "timeout nan in the environment",
        [*SHELL, "a"],
        "GADUGI_TIMEOUT_HOURS",
        env={"GADUGI_TIMEOUT_HOURS": "nan"},
    ),
    Case("timeout nan flag", [*SHELL, "--timeout", "nan", "a"], "execution_timeout_hours"),
    Case(
        "memory floor beyond the machine",
        [*SHELL, "a"],
        "min_available_memory_mb",
        _toml(f"min_available_memory_mb = {2**63 - 1}"),
        timeout=30,
    ),
    Case(
        "memory limit beyond the machine",
        [*SHELL, "a"],
        "memory_limit_mb",
        _toml(f"memory_limit_mb = {HUGE}"),
    ),
    Case(
        "open files beyond the hard limit",
        [*SHELL, "a"],
        "open_files_limit",
        _toml(f"open_files_limit = {HUGE}"),
    ),
    Case(
        "float setting too large",
        [*SHELL, "a"],
        "kill_grace_seconds",
        _toml(f"kill_grace_seconds = {10**400}"),
    ),
    Case(
        "nan estimate, plan",
        ["plan", "t"],
        "estimate_minutes",
        _prompt("estimate_minutes: .nan"),
        timeout=30,
    ),
    Case(
        "nan estimate, run",
        [*SHELL, "t"],
        "estimate_minutes",
        _prompt("estimate_minutes: .nan"),
        timeout=30,
    ),
    Case(
        "infinite estimate",
        ["plan", "--json", "t"],
        "estimate_minutes",
        _prompt("estimate_minutes: .inf"),
    ),
    Case(
        "huge estimate",
        ["plan", "--json", "t"],
        "estimate_minutes",
        _prompt("estimate_minutes: 1.0e+308"),
    ),
    Case("nan timeout", [*SHELL, "t"], "timeout_minutes", _prompt("timeout_minutes: .nan")),
    Case("infinite timeout", [*SHELL, "t"], "timeout_minutes", _prompt("timeout_minutes: .inf")),
    Case("huge priority", [*SHELL, "t"], "priority", _prompt(f"priority: {2**70}")),
    Case("huge negative priority", [*SHELL, "t"], "priority", _prompt(f"priority: {-(2**70)}")),
    Case(
        "front matter memory limit",
        [*SHELL, "t"],
        "memory_limit_mb",
        _prompt(f"memory_limit_mb: {HUGE}"),
    ),
    Case(
        "front matter open files",
        [*SHELL, "t"],
        "open_files_limit",
        _prompt(f"open_files_limit: {HUGE}"),
    ),
    # YAML
    Case("deeply nested front matter", [*SHELL, "t"], "nested", _prompt(DEEP)),
    Case(
        "duplicate front matter key",
        [*SHELL, "t"],
        "priority: duplicate",
        _prompt("priority: 1\npriority: 2"),
    ),
    Case("unknown agent, plan", ["plan", "t"], "agent", _prompt("agent: robot")),
    # Templates: every placeholder is rendered once before anything is made.
    Case("agent-cmd format spec", ["run", "--agent-cmd", "true {task_id:d}", "a"], "{task_id:d}"),
    Case("agent-cmd conversion", ["run", "--agent-cmd", "true {task_id!z}", "a"], "{task_id!z}"),
    Case(
        "agent-cmd nested spec", ["run", "--agent-cmd", "true {task_id:{x}}", "a"], "{task_id:{x}}"
    ),
    Case("agent-cmd spec, plan", ["plan", "--agent-cmd", "true {task_id:d}", "a"], "{task_id:d}"),
    Case("agent-cmd unknown, plan", ["plan", "--agent-cmd", "true {nope}", "a"], "{nope}"),
    Case(
        "agent-cmd from the project file",
        [*SHELL[:1], "a"],
        "gadugi.toml",
        _toml("agent_cmd = 'true {task_id:d}'"),
    ),
    Case("template format spec", [*SHELL, "a"], "{task_id:d}", _template("{task_id:d}")),
    Case("template conversion", [*SHELL, "a"], "{title!z}", _template("{title!z}")),
    Case("template spec, plan", ["plan", "a"], "workflow.md", _template("{task_id:d}")),
    Case("template lone brace, plan", ["plan", "a"], "workflow.md", _template("x { y")),
    Case("template NUL", [*SHELL, "a"], "NUL", _template("a\x00b {task_id}")),
    Case("NUL in a setting", [*SHELL, "a"], "claude_model", _toml('claude_model = "a\\u0000b"')),
    # Paths the run would create must be creatable directories.
    Case(".gadugi is a file", [*SHELL, "a"], ".gadugi", _file(".gadugi", "x")),
    Case(".gadugi dangles", [*SHELL, "a"], ".gadugi", _link(".gadugi", "missing")),
    Case(".gadugi loops", [*SHELL, "a"], ".gadugi", _link(".gadugi", ".gadugi")),
    Case(".gadugi is a file, plan", ["plan", "a"], ".gadugi", _file(".gadugi", "x")),
    Case("logs is a file", [*SHELL, "a"], ".gadugi/logs", _file(".gadugi/logs", "x")),
    Case(".worktrees is a file", [*SHELL, "a"], "worktrees_dir", _file(".worktrees", "x")),
    Case(".worktrees dangles", [*SHELL, "a"], "worktrees_dir", _link(".worktrees", "gone")),
    Case(".worktrees loops", [*SHELL, "a"], "worktrees_dir", _link(".worktrees", ".worktrees")),
    Case(
        "worktrees_dir is a file",
        [*SHELL, "a"],
        "worktrees_dir",
        _toml("worktrees_dir = 'README.md'"),
    ),
    Case(
        "monitoring_dir under a file",
        [*SHELL, "a"],
        "monitoring_dir",
        _toml("monitoring_dir = 'README.md/monitoring'"),
    ),
    *(
        Case(
            f"NUL in a prompt for {agent}",
            ["run", "--agent", agent, "nul"],
            "NUL",
            _nul_prompt(agent),
        )
        for agent in ("claude", "codex", "gemini")
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_is_refused_and_changes_nothing(repo: Repo, case: Case) -> None:
    repo.shell_prompt("a.md", "touch pwned")
    repo.commit()
    case.setup(repo)
    before = repo.snapshot()
    db = repo.root / ".gadugi/state.db"
    db_before = db.read_bytes() if db.exists() else None
    proc = run_cli(case.args, repo.root, input=case.stdin, env=case.env, timeout=case.timeout)
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


@pytest.mark.parametrize("where", ["README.md/out.json", "missing/out.json"])
def test_export_to_an_unusable_place_is_refused_and_writes_nothing(repo: Repo, where: str) -> None:
    repo.shell_prompt("a.md", "true")
    repo.commit()
    assert run_cli([*SHELL, "a"], repo.root).returncode == 0
    before = repo.snapshot()
    proc = run_cli(["export", "--output", where], repo.root)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert where in proc.stderr and "Traceback" not in proc.stderr
    assert repo.snapshot() == before
