"""``gadugi doctor``: everything that would make a run fail before it starts, checked at once.

Each check gives a status: ``ok``; ``info`` (worth knowing, nothing wrong: an agent CLI
nobody asked for is not installed); ``warn`` (a run may still work: a prompt file that
cannot be read fails only the runs that name it); ``fail`` (a run would stop). Nothing
here changes the project: the registry is opened read-only and no agent is started beyond
``<cli> --version``.
"""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from . import credentials, envsetup
from .agents import CLIS, executable_for
from .agents.command import parse_template
from .config import OrchestrationConfig, load_config, read_project_file
from .errors import GadugiError
from .planning.prompts import read_prompt
from .promptgen import load_template
from .registry import Registry
from .worktrees import repository_root, resolve_commit, run_git, tracked_files

# `git rev-parse --end-of-options` (how gadugi names a base ref safely) came with 2.24;
# `git worktree remove` with 2.17.
MIN_GIT = (2, 24)
MIN_GIT_LAND = (2, 38)  # git merge-tree --write-tree: a merge computed without a work tree
MIN_GIT_WHY = "gadugi uses `git rev-parse --end-of-options` (2.24) and `git worktree remove` (2.17)"
VERSION_TIMEOUT_S = 10.0
DISK_MARGIN_BYTES = 64 * 2**20  # logs, prompts and git's own bookkeeping beside the checkouts
_VERSION = re.compile(r"(\d+)\.(\d+)(?:\.(\d+))?")


class Status(StrEnum):
    OK = "ok"
    INFO = "info"
    WARN = "warn"
    FAIL = "fail"


@dataclass
class Check:
    name: str
    status: Status
    detail: str


@dataclass
class AgentCheck:
    name: str
    executable: str
    path: str | None = None
    version: str | None = None
    error: str | None = None
    needed_by: list[str] = field(default_factory=list)  # "default agent", prompt files


@dataclass
class Report:
    project_root: str
    checks: list[Check] = field(default_factory=list)
    agents: list[AgentCheck] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.status is not Status.FAIL for c in self.checks)

    def add(self, name: str, status: Status, detail: str) -> None:
        self.checks.append(Check(name, status, detail))

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "project_root": self.project_root,
            "checks": [asdict(c) | {"status": c.status.value} for c in self.checks],
            "agents": [asdict(a) for a in self.agents],
        }


def diagnose(start: Path, environ: Mapping[str, str] | None = None) -> Report:
    """Check the project at (or above) ``start`` and the tools a run needs."""
    env = os.environ if environ is None else environ
    report = Report(str(start))
    check_git(report)
    root = check_repository(report, start)
    config = check_config(report, root or start, env)
    if root is not None:
        check_base(report, root, config)
        check_template(report, root)
        check_registry(report, root)
        check_identity(report, root, env)
        check_checkout(report, root)
        check_disk(report, root, config)
        check_hooks(report, root, env)
        check_imports(report, root, config, env)
        check_setup_cache(report, root, config)
    needs = check_prompts(report, root) if root is not None else {}
    check_agents(report, config, needs, env)
    check_orchestrator_agent(report, root, env)
    return report


def check_git(report: Report) -> None:
    try:
        done = subprocess.run(
            ["git", "--version"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        report.add("git", Status.FAIL, f"git cannot be run: {exc}")
        return
    found = _VERSION.search(done.stdout)
    if done.returncode != 0 or found is None:
        report.add("git", Status.FAIL, f"`git --version` said {done.stdout.strip()!r}")
        return
    version = (int(found.group(1)), int(found.group(2)))
    need = ".".join(map(str, MIN_GIT))
    if version < MIN_GIT:
        report.add(
            "git",
            Status.FAIL,
            f"git {found.group(0)} is too old: need {need} or newer; {MIN_GIT_WHY}",
        )
    else:
        report.add("git", Status.OK, f"git {found.group(0)} (need {need} or newer)")
    if MIN_GIT <= version < MIN_GIT_LAND:
        report.add(
            "git for land",
            Status.WARN,
            f"git {found.group(0)} cannot run gadugi land or run --land: they need "
            f"{'.'.join(map(str, MIN_GIT_LAND))} or newer (git merge-tree --write-tree)",
        )


def check_repository(report: Report, start: Path) -> Path | None:
    try:
        root = repository_root(start)
    except GadugiError as exc:
        report.add("repository", Status.FAIL, str(exc))
        return None
    report.project_root = str(root)
    if not os.access(root, os.W_OK):
        report.add(
            "repository", Status.FAIL, f"{root} is not writable (gadugi keeps .gadugi/ there)"
        )
        return root
    report.add("repository", Status.OK, f"{root}")
    return root


def check_config(report: Report, root: Path, env: Mapping[str, str]) -> OrchestrationConfig:
    try:
        config = load_config(root, environ=env)
        _, source = read_project_file(root)
    except GadugiError as exc:
        report.add("configuration", Status.FAIL, f"{exc}; the checks below use the defaults")
        return OrchestrationConfig()
    where = source or "no project file; defaults"
    report.add("configuration", Status.OK, f"{where} (default agent {config.agent})")
    return config


def check_base(report: Report, root: Path, config: OrchestrationConfig) -> None:
    try:
        commit = resolve_commit(root, config.base_ref)
    except GadugiError as exc:
        report.add("base commit", Status.FAIL, str(exc))
        return
    subject = run_git(["log", "-1", "--format=%s", commit], root).stdout.strip()
    report.add("base commit", Status.OK, f"{config.base_ref} = {commit[:12]} {subject}".rstrip())


def check_template(report: Report, root: Path) -> None:
    try:
        template = load_template(root)
    except GadugiError as exc:
        report.add("workflow template", Status.FAIL, str(exc))
        return
    report.add("workflow template", Status.OK, template.source)


def check_registry(report: Report, root: Path) -> None:
    path = root / ".gadugi" / "state.db"
    if not path.exists():
        report.add("registry", Status.OK, ".gadugi/state.db: none yet (the first run creates it)")
        return
    try:
        registry = Registry(path, readonly=True)
        try:
            count = len(registry.orchestrations())
            verdict = registry.conn.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            registry.close()
    except (GadugiError, sqlite3.Error) as exc:
        report.add("registry", Status.FAIL, f".gadugi/state.db cannot be read: {exc}")
        return
    if verdict != "ok":
        report.add("registry", Status.FAIL, f".gadugi/state.db is damaged: {verdict}")
        return
    report.add("registry", Status.OK, f".gadugi/state.db: {count} orchestration(s)")


def _git(args: list[str], root: Path, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["git", *args],
        cwd=root,
        env=dict(env),
        capture_output=True,
        text=True,
        timeout=VERSION_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def check_identity(report: Report, root: Path, env: Mapping[str, str]) -> None:
    """Agents commit with git's identity: without one every commit fails."""
    for role in ("AUTHOR", "COMMITTER"):
        done = _git(["var", f"GIT_{role}_IDENT"], root, env)
        if done.returncode != 0:
            lines = [ln for ln in done.stderr.splitlines() if ln.startswith("fatal:")]
            report.add(
                "git identity",
                Status.FAIL,
                f"git has no {role.lower()} identity, so agents' commits would fail "
                f"({lines[-1] if lines else 'Author identity unknown'}); run "
                '`git config --global user.name "Your Name"` and '
                "`git config --global user.email you@example.com`",
            )
            return
    who = _git(["var", "GIT_AUTHOR_IDENT"], root, env).stdout.rsplit(">", 1)[0] + ">"
    report.add("git identity", Status.OK, who)


def check_checkout(report: Report, root: Path) -> None:
    """Agents start from the base commit: uncommitted work in the main checkout is not theirs."""
    changed = uncommitted(root)
    if changed:
        shown = ", ".join(changed[:3]) + (
            f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        )
        report.add(
            "main checkout",
            Status.WARN,
            f"{len(changed)} uncommitted change(s) ({shown}) that the agents will not see: "
            "they work from the base commit; commit them first if the tasks need them",
        )
    else:
        report.add("main checkout", Status.OK, "clean")


def uncommitted(root: Path) -> list[str]:
    """Paths with changes the base commit lacks (gadugi's own folders aside)."""
    done = run_git(["status", "--porcelain", "--untracked-files=normal"], root)
    if done.returncode != 0:
        return []
    paths = [line[3:] for line in done.stdout.splitlines() if len(line) > 3]
    own = (".gadugi/", ".worktrees/", ".claude/")
    return [p for p in paths if not p.startswith(own)]


def check_disk(report: Report, root: Path, config: OrchestrationConfig) -> None:
    """Each running task has a full checkout of its own."""
    sizes = run_git(["ls-tree", "-r", "-l", "--full-tree", "HEAD"], root)
    if sizes.returncode != 0:
        return  # no commit yet: the base commit check says so
    checkout = sum(
        int(fields[3])
        for fields in (ln.split(None, 4) for ln in sizes.stdout.splitlines())
        if len(fields) >= 4 and fields[3].isdigit()
    )
    folder = root / config.worktrees_dir
    where = folder if folder.exists() else root
    free = shutil.disk_usage(where).free
    need = checkout * config.max_parallel_tasks + DISK_MARGIN_BYTES
    detail = (
        f"{_mib(free)} free where the worktrees go; {config.max_parallel_tasks} worktree(s) of "
        f"{_mib(checkout)} need about {_mib(need)}"
    )
    if free < need:
        report.add(
            "disk space", Status.FAIL, f"{detail}: free some space or lower max_parallel_tasks"
        )
    else:
        report.add("disk space", Status.OK, detail)


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def check_hooks(report: Report, root: Path, env: Mapping[str, str]) -> None:
    """A post-checkout hook runs in every worktree gadugi creates; if it fails, so does the task."""
    done = _git(["rev-parse", "--path-format=absolute", "--git-path", "hooks"], root, env)
    if done.returncode != 0:
        return
    hook = Path(done.stdout.strip()) / "post-checkout"
    if not (hook.is_file() and os.access(hook, os.X_OK)):
        return
    try:
        text = hook.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        report.add("post-checkout hook", Status.WARN, f"{hook} cannot be read: {exc}")
        return
    first = text.splitlines()[0] if text else ""
    missing = None
    if first.startswith("#!"):
        words = first[2:].split()
        interpreter = (
            words[1]
            if words and words[0].endswith("/env") and len(words) > 1
            else (words[0] if words else "")
        )
        if interpreter and _which(interpreter, env) is None and not Path(interpreter).is_file():
            missing = interpreter
    lfs = re.search(r"\bgit[ -]lfs\b", text) is not None
    if missing is None and lfs and _git(["lfs", "version"], root, env).returncode != 0:
        missing = "git-lfs"
    if missing:
        report.add(
            "post-checkout hook",
            Status.FAIL,
            f"{hook} needs {missing}, which is not installed: creating any task's worktree "
            f"would fail; install {missing} or remove the hook",
        )
    else:
        report.add("post-checkout hook", Status.OK, f"{hook}")


WORKTREE_ENV_FIX = (
    'make a worktree-local environment: setup_command = "python3 -m venv .venv && '
    '.venv/bin/pip install -e ." with verify_command = ".venv/bin/pytest" (docs/usage.md)'
)


def check_imports(
    report: Report, root: Path, config: OrchestrationConfig, env: Mapping[str, str]
) -> None:
    """Verification in a worktree must test the worktree's code, not the main checkout's."""
    try:
        packages = envsetup.project_packages(root, tracked_files(root))
    except GadugiError:
        return
    if not packages:
        return
    name = "project imports"
    verify = config.verify_command
    command = verify or "python3"
    used = f"verify_command `{verify}`" if verify else "`python3` on PATH (no verify_command)"
    python = envsetup.command_python(command, env)
    if python.local is not None:
        if config.setup_command:
            report.add(name, Status.OK, f"{used} uses an environment inside each worktree")
        else:
            report.add(
                name,
                Status.WARN,
                f"{used} runs {python.local} inside the task's worktree, but no setup_command "
                f"makes it there; {WORKTREE_ENV_FIX}",
            )
        return
    if python.path is None:
        report.add(name, Status.INFO, f"cannot tell which Python {used} imports the project with")
        return
    try:
        found = envsetup.imported_from(python.path, packages, env)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        report.add(name, Status.INFO, f"cannot ask {python.path} where it finds {packages}: {exc}")
        return
    outside = {pkg: where for pkg, where in found.items() if where is not None}
    if not outside:
        report.add(name, Status.OK, f"{used}: {', '.join(packages)} found only in the worktree")
        return
    for pkg, where in sorted(outside.items()):
        place = (
            "the main checkout"
            if Path(where).resolve().is_relative_to(root)
            else "outside the project"
        )
        report.add(
            name,
            Status.WARN,
            f"{used} imports {pkg} from {where} ({place}), not from the task's worktree, so "
            f"verification would test code the agent did not change; {WORKTREE_ENV_FIX}",
        )


def check_setup_cache(report: Report, root: Path, config: OrchestrationConfig) -> None:
    """A cache key that matches no file never changes, so no dependency change is seen."""
    if not config.setup_cache_key:
        return
    files = envsetup.key_files(root, config.setup_cache_key)
    globs = ", ".join(config.setup_cache_key)
    if not files:
        report.add(
            "setup cache",
            Status.WARN,
            f"setup_cache_key ({globs}) matches no file here, so the cache is keyed on the "
            "setup command alone and a change of dependencies would reuse a stale environment",
        )
        return
    shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
    report.add(
        "setup cache",
        Status.OK,
        f"{', '.join(config.setup_cache_paths)} keyed on {shown}",
    )


def check_orchestrator_agent(report: Report, root: Path | None, env: Mapping[str, str]) -> None:
    """The installed /agent:orchestrator-agent files: their gadugi runs, its calls are allowed."""
    from . import install_agent as ia

    folders = [ia.claude_home(env)] + ([root / ".claude"] if root is not None else [])
    files = [
        f / rel for f in folders for rel in (ia.COMMAND_FILE, ia.AGENT_FILE) if (f / rel).is_file()
    ]
    if not files:
        report.add(
            "orchestrator agent",
            Status.INFO,
            "not installed (`gadugi install-agent` for /agent:orchestrator-agent in Claude Code)",
        )
        return
    settings = ia.settings_files(root, env)
    for path in files:
        try:
            command = ia.installed_command(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError) as exc:
            report.add("orchestrator agent", Status.WARN, f"{path} cannot be read: {exc}")
            continue
        if command is None:
            report.add("orchestrator agent", Status.WARN, f"{path} was not written by gadugi")
            continue
        try:
            ia.check_command(command, root or path.parent, env)
        except ia.CommandNotFound as exc:
            report.add(
                "orchestrator agent",
                Status.FAIL,
                f"{path} calls `{command}`, which {exc.reason}; run `gadugi install-agent` "
                "again with the gadugi you use",
            )
            continue
        rule = ia.permission_rule(command)
        if path.match(f"*/{ia.AGENT_FILE}") and not any(ia.rule_present(p, rule) for p in settings):
            report.add(
                "orchestrator agent",
                Status.WARN,
                f"{path}: Claude Code asks before each of its gadugi calls, and headless "
                f"`claude -p` denies them, until {rule} is allowed; run "
                "`gadugi install-agent --allow` to add it to .claude/settings.local.json",
            )
            continue
        report.add("orchestrator agent", Status.OK, f"{path} calls {command}")


def check_prompts(report: Report, root: Path) -> dict[str, list[str]]:
    """Report prompts/ and return which agents its prompt files ask for, by file."""
    folder = root / "prompts"
    if not folder.is_dir():
        report.add("prompts", Status.FAIL, f"{folder} does not exist; put the prompt files there")
        return {}
    files = sorted(p for p in folder.glob("*.md") if p.is_file())
    needs: dict[str, list[str]] = {}
    broken = []
    for path in files:
        try:
            prompt = read_prompt(path, root)
        except GadugiError as exc:
            broken.append(str(exc))
            continue
        if prompt.agent:
            needs.setdefault(prompt.agent, []).append(prompt.rel_path)
    if not files:
        report.add("prompts", Status.WARN, "prompts/ holds no .md files yet")
    else:
        report.add("prompts", Status.OK, f"prompts/: {len(files)} prompt file(s)")
    for problem in broken:
        report.add("prompt file", Status.WARN, f"{problem} (runs that name it will exit 2)")
    return needs


def check_agents(
    report: Report,
    config: OrchestrationConfig,
    needs: Mapping[str, list[str]],
    env: Mapping[str, str],
) -> None:
    wanted = {name: list(files) for name, files in needs.items()}
    wanted.setdefault(config.agent, []).insert(0, "default agent")
    checks = [AgentCheck(name, executable_for(name, config) or name) for name in CLIS]
    for agent in checks:
        agent.needed_by = wanted.get(agent.name, [])
    with ThreadPoolExecutor(max_workers=len(checks)) as pool:
        list(pool.map(lambda a: probe(a, env), checks))
    report.agents = checks
    for agent in checks:
        _report_agent(report, agent, config, env)
    for name in sorted(set(wanted) - set(CLIS)):
        _report_builtin(report, name, wanted[name], config, env)


def probe(agent: AgentCheck, env: Mapping[str, str]) -> None:
    """Find the agent's program (as configured) and ask it for its version."""
    agent.path = _which(agent.executable, env)
    if agent.path is None:
        agent.error = "not found on PATH"
        return
    try:
        done = subprocess.run(
            [agent.path, "--version"],
            capture_output=True,
            text=True,
            timeout=VERSION_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            env=dict(env),
            check=False,
        )
    except subprocess.TimeoutExpired:
        agent.error = f"`{agent.executable} --version` did not answer within {VERSION_TIMEOUT_S:g}s"
        return
    except OSError as exc:
        agent.error = f"cannot be run: {exc}"
        return
    lines = (done.stdout.strip() or done.stderr.strip()).splitlines()
    if done.returncode != 0:
        agent.error = f"`{agent.executable} --version` exited {done.returncode}: " + (
            lines[-1][:200] if lines else "no output"
        )
        return
    agent.version = lines[0][:120] if lines else "unknown version"


def _report_agent(
    report: Report, agent: AgentCheck, config: OrchestrationConfig, env: Mapping[str, str]
) -> None:
    cli = CLIS[agent.name]
    needed = ", ".join(agent.needed_by)
    name = f"agent {agent.name}"
    if agent.error is None:
        detail = f"{agent.path}: {agent.version}" + (f" (used by: {needed})" if needed else "")
        report.add(name, Status.OK, detail)
        if agent.needed_by:
            _check_credentials(report, agent.name, env)
        if agent.name == "claude" and agent.needed_by:
            _check_claude_root(report, config)
        return
    hint = f"install {cli.what}: {cli.install}"
    if agent.executable != agent.name:
        hint += f", or fix {agent.name}_executable ({agent.executable!r})"
    if agent.needed_by:
        report.add(name, Status.FAIL, f"{agent.error}; needed by {needed}; {hint}")
    else:
        report.add(name, Status.INFO, f"{agent.error} ({hint})")


def _check_credentials(report: Report, name: str, env: Mapping[str, str]) -> None:
    where = credentials.found(name, env)
    if where is None:
        report.add(
            f"agent {name}",
            Status.FAIL,
            f"{name} cannot authenticate: no key in its environment and no login it can see; "
            f"{credentials.HOW_TO[name]}",
        )
    elif where != "not needed":
        report.add(f"agent {name}", Status.OK, f"credentials: {where}")


def _check_claude_root(report: Report, config: OrchestrationConfig) -> None:
    bypass = (
        config.claude_permission_mode == "bypassPermissions"
        or "--dangerously-skip-permissions" in config.claude_extra_args
    )
    sandboxed = os.environ.get("IS_SANDBOX") == "1" or os.environ.get("CLAUDE_CODE_BUBBLEWRAP")
    if bypass and os.geteuid() == 0 and not sandboxed:
        report.add(
            "agent claude",
            Status.FAIL,
            "claude refuses bypassPermissions as root; use claude_permission_mode = "
            '"acceptEdits", or set IS_SANDBOX=1 on a disposable machine',
        )


def _report_builtin(
    report: Report,
    name: str,
    needed: list[str],
    config: OrchestrationConfig,
    env: Mapping[str, str],
) -> None:
    """The shell and command agents need no install, only their programs."""
    used = ", ".join(needed)
    if name == "shell":
        ok = _which("bash", env) is not None
        report.add(
            "agent shell",
            Status.OK if ok else Status.FAIL,
            "bash " + ("found" if ok else "not found on PATH") + f" (used by: {used})",
        )
        return
    if name != "command":
        report.add(f"agent {name}", Status.FAIL, f"unknown agent (used by: {used})")
        return
    if not config.agent_cmd:
        report.add("agent command", Status.FAIL, f"no agent_cmd configured (used by: {used})")
        return
    try:
        program = parse_template(config.agent_cmd)[0]
    except GadugiError as exc:
        report.add("agent command", Status.FAIL, str(exc))
        return
    path = _which(program, env) if "{" not in program else program
    if path is None:
        report.add("agent command", Status.FAIL, f"{program} not found on PATH (used by: {used})")
    else:
        report.add("agent command", Status.OK, f"{path} (used by: {used})")


def _which(program: str, env: Mapping[str, str]) -> str | None:
    return shutil.which(program, path=env.get("PATH"))


def render(report: Report) -> str:
    """The human-readable report."""
    lines = [f"gadugi doctor: {report.project_root}"]
    for check in report.checks:
        lines.append(f"  {check.status.value:<5} {check.name:<18} {check.detail}")
    problems = sum(1 for c in report.checks if c.status is Status.FAIL)
    lines.append(
        "all good: nothing stands in the way of a run"
        if report.ok
        else f"{problems} problem(s): a run would fail until they are fixed"
    )
    return "\n".join(lines)
