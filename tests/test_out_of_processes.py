"""A full process table (fork's EAGAIN) is a typed, transient error, never a crash.

Real forks fail here: each scenario runs in a child process whose real user id is one
no other process has, with RLIMIT_NPROC at (or one above) the number of tasks that user
already runs. Root is exempt from RLIMIT_NPROC, so as root the child keeps its effective
id (to read files) but takes a fresh real id and gives up CAP_SYS_RESOURCE and
CAP_SYS_ADMIN, the capabilities that lift the limit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import git

SCENARIO = """
import json, os, resource, sys
from pathlib import Path
import psutil
from gadugi import procs
from gadugi.errors import SpawnError
from gadugi.worktrees import run_git

what, spare, work = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
uid = os.getuid()
tasks = sum(p.info["num_threads"] for p in psutil.process_iter(["uids", "num_threads"])
            if p.info["uids"] and p.info["uids"].real == uid)
resource.setrlimit(resource.RLIMIT_NPROC, (tasks + spare, tasks + spare))
out = {}
try:
    if what == "git":
        res = run_git(["worktree", "add", "-q", "-b", "t", str(work / "wt"), "HEAD"], work / "repo")
        out = {"returncode": res.returncode, "stderr": res.stderr}
    else:
        child = procs.spawn(["true"], work, dict(os.environ), work / "log", work / "log",
                            work / "result.json")
        child.wait(60)
        ended = child.check()
        out = {"out_of_resources": ended.out_of_resources, "describe": ended.describe()}
except SpawnError as exc:
    out = {"error": type(exc).__name__, "errno": exc.errno, "message": str(exc),
           "oserror": isinstance(exc, OSError)}
print(json.dumps(out))
"""


def _out_of_processes(what: str, spare: int, work: Path) -> dict[str, Any]:
    argv = [sys.executable, "-c", SCENARIO, what, str(spare), str(work)]
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("as root this needs setpriv to drop the exemption from RLIMIT_NPROC")
        uid = 3_000_000 + os.getpid() % 1_000_000  # a real user id nothing else runs as
        argv = [setpriv, f"--ruid={uid}", "--bounding-set=-sys_resource,-sys_admin", *argv]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


@pytest.fixture
def work() -> Iterator[Path]:
    # Some of git's checks use access(2), which asks as the real user: the folder must be
    # open to others (pytest's tmp_path sits in a folder only its owner may enter).
    with tempfile.TemporaryDirectory(prefix="gadugi-nproc-") as name:
        work = Path(name)
        work.chmod(0o755)
        repo = work / "repo"
        repo.mkdir()
        git(repo, "init", "-q")
        git(repo, "commit", "-q", "--allow-empty", "-m", "init")
        yield work


def test_git_that_cannot_be_forked_raises_a_transient_spawn_error(work: Path) -> None:
    got = _out_of_processes("git", 0, work)
    assert got["error"] == "SpawnError" and got["oserror"]
    assert got["errno"] == 11
    assert got["message"] == "cannot start git: Resource temporarily unavailable"


def test_git_that_cannot_fork_its_own_processes_raises_a_spawn_error(work: Path) -> None:
    # git itself starts, but not the processes `worktree add` runs: git's words say so.
    got = _out_of_processes("git", 1, work)
    assert got.get("error") == "SpawnError", got
    assert got["errno"] == 11 and "cannot fork" in got["message"]


def test_an_agent_supervisor_that_cannot_be_forked_raises_a_spawn_error(work: Path) -> None:
    got = _out_of_processes("spawn", 0, work)
    assert got["error"] == "SpawnError" and got["errno"] == 11
    assert got["message"] == "cannot start true: Resource temporarily unavailable"


def test_a_supervisor_that_cannot_fork_the_agent_records_it_as_out_of_resources(
    work: Path,
) -> None:
    got = _out_of_processes("spawn", 1, work)
    assert got == {
        "out_of_resources": True,
        "describe": "could not start: Resource temporarily unavailable",
    }
    assert "cannot start true" in (work / "log").read_text()
