"""Child processes: spawn each in its own session, stop a whole group, sample resources.

An agent's stdout and stderr go straight into files the child holds open, so output
reaches the log as it is written and keeps flowing even if the orchestrator is busy.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import selectors
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

import psutil

log = logging.getLogger(__name__)


# The supervisor: a tiny sh that leads the agent's process group, waits for the agent
# and writes its exit status and end time to a file. It outlives a crashed orchestrator,
# so a result that arrives while nobody is watching is still recorded (`gadugi resume`).
SUPERVISOR = (
    'result=$1; shift; "$@"; code=$?; '
    'printf \'{"exit_code": %d, "ended_at": %s}\\n\' "$code" "$(date +%s.%N)" > "$result.tmp" '
    '&& mv -f "$result.tmp" "$result"; exit "$code"'
)
KILL_WAIT_S = 5.0
LOST = -1000  # poll() of an adopted process that vanished without writing its result


@dataclass
class Child:
    """A running agent: its supervisor's pid and start time, and where its result will be.

    ``popen`` is None for a process adopted after a restart: it is not our child, so it
    is watched through its result file and its identity instead of ``waitpid``.
    """

    pid: int
    start_time: float  # psutil's create_time: pid plus this names one process for good
    result_file: Path
    popen: subprocess.Popen[bytes] | None = None
    strays: list[psutil.Process] | None = None  # descendants seen at the first signal
    returncode: int | None = None
    ended_at: float | None = None

    def poll(self) -> int | None:
        """The exit code once the agent has finished, ``LOST`` if it vanished without one."""
        if self.returncode is not None:
            return self.returncode
        if self.popen is not None:
            code = self.popen.poll()
            if code is None:
                return None
            recorded = read_result(self.result_file)
            self.ended_at = recorded[1] if recorded else time.time()
            self.returncode = code
            return code
        recorded = read_result(self.result_file)
        if recorded is not None:
            self.returncode, self.ended_at = recorded
        elif not same_process(self.pid, self.start_time) and not orphaned_group(self.pid):
            # Gone, and nothing of its group lives on (a killed supervisor's agent would).
            recorded = read_result(self.result_file)  # it may have finished just now
            self.returncode, self.ended_at = recorded or (LOST, time.time())
        return self.returncode

    def wait(self, timeout_s: float = 30.0) -> None:
        if self.popen is not None:
            self.popen.wait(timeout_s)
            return
        deadline = time.monotonic() + timeout_s
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)


def read_result(path: Path) -> tuple[int, float] | None:
    """The supervisor's record of an attempt: (exit code, end time), or None if not there."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return int(data["exit_code"]), float(data["ended_at"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def spawn(
    argv: Sequence[str],
    cwd: Path,
    env: Mapping[str, str],
    stdout_path: Path,
    stderr_path: Path,
    result_file: Path,
    limits: Mapping[int, int] | None = None,
) -> Child:
    """Start ``argv`` under the supervisor in a new session, output appended to files.

    A missing program raises FileNotFoundError here rather than surfacing as exit 127.
    """
    program = shutil.which(argv[0], path=env.get("PATH"))
    if program is None:
        raise FileNotFoundError(f"{argv[0]}: command not found")
    stdout_path.parent.mkdir(parents=True, exist_ok=True)
    result_file.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    out_fd = os.open(stdout_path, flags, 0o644)
    err_fd = out_fd if stderr_path == stdout_path else os.open(stderr_path, flags, 0o644)
    try:
        popen = subprocess.Popen(
            ["/bin/sh", "-c", SUPERVISOR, "gadugi-supervisor", str(result_file), *argv],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out_fd,
            stderr=err_fd,
            start_new_session=True,
            close_fds=True,
            preexec_fn=_limiter(limits) if limits else None,  # noqa: PLW1509
        )
    finally:
        os.close(out_fd)
        if err_fd != out_fd:
            os.close(err_fd)
    started = process_start_time(popen.pid) or time.time()
    return Child(popen.pid, started, result_file, popen=popen)


def find_agent(orchestration_id: str, task_id: str) -> tuple[int, float] | None:
    """The supervisor of a task's agent, found by the environment gadugi gave it.

    Used after a crash that came between spawning an agent and recording its pid.
    """
    wanted = {"GADUGI_ORCHESTRATION_ID": orchestration_id, "GADUGI_TASK_ID": task_id}
    for proc in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(proc.pid) != proc.pid:
                continue  # the supervisor leads its own group; descendants do not
            env = proc.environ()
            if all(env.get(k) == v for k, v in wanted.items()):
                return proc.pid, proc.create_time()
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return None


def _limiter(limits: Mapping[int, int]) -> Callable[[], None]:
    """Resource limits applied in the child before exec (inherited by its descendants).

    The loop is single-threaded when it spawns, which is what makes preexec_fn safe here.
    """
    chosen = dict(limits)

    def apply() -> None:
        for which, value in chosen.items():
            resource.setrlimit(which, (value, value))

    return apply


class ExitWatch:
    """Wakes the loop the moment an agent exits, instead of at its next fixed tick.

    Each child's pidfd becomes readable when it exits. A readable fd is dropped as soon
    as it has woken the loop (the loop's own poll then deals with the exit), so a
    finished child can never make the wait spin.
    """

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()

    def watch(self, child: Child) -> None:
        if child.pid <= 1 or not hasattr(os, "pidfd_open"):
            return
        try:
            fd = os.pidfd_open(child.pid)
        except OSError:  # already gone, or pidfds unsupported: the fixed tick still works
            return
        self.selector.register(fd, selectors.EVENT_READ)

    def wait(self, timeout_s: float) -> None:
        for key, _ in self.selector.select(timeout_s):
            self.selector.unregister(key.fd)
            os.close(key.fd)

    def close(self) -> None:
        for key in list(self.selector.get_map().values()):
            os.close(key.fd)
        self.selector.close()


def agents_of(orchestration_ids: set[str]) -> list[tuple[int, str, str]]:
    """Live processes gadugi started for these orchestrations: (pid, orchestration, task)."""
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                continue
            env = proc.environ()
        except psutil.Error:
            continue
        orch_id = env.get("GADUGI_ORCHESTRATION_ID")
        if orch_id in orchestration_ids:
            found.append((proc.pid, orch_id, env.get("GADUGI_TASK_ID", "?")))
    return found


def sweep(orchestration_id: str, grace_s: float) -> list[int]:
    """Stop whatever an orchestration's agents left running once all its tasks are over.

    A daemon an agent started with setsid (and its parent gone) is in no process group
    or tree of ours any more; the environment gadugi gave it still names it.
    """
    found = []
    for pid, _, task_id in agents_of({orchestration_id}):
        try:
            found.append(psutil.Process(pid))
            log.warning("stopping pid %d left behind by task %s", pid, task_id)
        except psutil.Error:
            continue
    for proc in found:
        with suppress(psutil.Error):
            proc.terminate()
    alive = _wait_gone(found, grace_s)
    for proc in alive:
        with suppress(psutil.Error):
            proc.kill()
    _wait_gone(alive, KILL_WAIT_S)
    return [p.pid for p in found]


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until each has exited (a zombie counts: an init may never reap it)."""
    deadline = time.monotonic() + timeout_s
    alive = procs
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if _running(p)]
        if alive:
            time.sleep(0.02)
    return alive


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def process_start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None


def same_process(pid: int, start_time: float | None) -> bool:
    """True only when ``pid`` is alive and is the process started at ``start_time``.

    A zombie is not alive: it has exited, and an init that does not reap may keep it.
    """
    if start_time is None or pid <= 0:
        return False
    try:
        proc = psutil.Process(pid)
        return abs(proc.create_time() - start_time) < 0.01 and (
            proc.status() != psutil.STATUS_ZOMBIE
        )
    except psutil.Error:
        return False


def orphaned_group(pgid: int) -> bool:
    """True when the group's leader is gone (or a zombie) but members live on: a killed
    supervisor's agent. Callers have checked that the leader is not the process they
    recorded; a live process with that pid is a newcomer, and no group of ours."""
    try:
        if psutil.Process(pgid).status() != psutil.STATUS_ZOMBIE:
            return False  # a live process has the pid: the leader itself, or a newcomer
    except psutil.Error:
        pass  # gone (or a zombie an init keeps): its group may live on without it
    return group_alive(pgid)


def group_alive(pgid: int) -> bool:
    """True while a live (non-zombie) process is in the group ``pgid``."""
    if pgid <= 1:
        return False  # killpg(0) would mean our own group
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # kill() also reaches zombies, which an init that does not reap may keep forever.
    for proc in psutil.process_iter(["status"]):
        try:
            if proc.info["status"] != psutil.STATUS_ZOMBIE and os.getpgid(proc.pid) == pgid:
                return True
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return False


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def signal_tree(child: Child, sig: signal.Signals) -> None:
    """Send ``sig`` to the child's process group and to descendants that left it.

    Descendants are looked up at the first signal, before any of them can die and be
    reparented out of sight; a process already gone counts as stopped.
    """
    if child.pid <= 1:
        return  # an adopted attempt whose process was never found: nothing to signal
    if child.strays is None:
        child.strays = [p for p in _tree(child.pid) if p.pid != child.pid]
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(child.pid, sig)
    for proc in child.strays:
        with suppress(psutil.Error):
            proc.send_signal(sig)


def stopped(child: Child) -> bool:
    """True when the child has exited (and is reaped) and nothing of its tree lives on."""
    if child.poll() is None or group_alive(child.pid):
        return False
    for proc in child.strays or ():
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.Error:
            continue
    return True


def terminate(children: list[Child], grace_s: float) -> None:
    """Stop every child's tree at once: SIGTERM, up to ``grace_s`` to exit, then SIGKILL."""
    for child in children:
        signal_tree(child, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    pending = [c for c in children if not stopped(c)]
    while pending and time.monotonic() < deadline:
        time.sleep(0.05)
        pending = [c for c in pending if not stopped(c)]
    for child in pending:
        log.info("pid %d did not exit within %.1fs of SIGTERM; sending SIGKILL", child.pid, grace_s)
        signal_tree(child, signal.SIGKILL)
    # SIGKILL cannot be refused, but delivery takes a moment: wait for it, boundedly.
    deadline = time.monotonic() + KILL_WAIT_S
    for child in pending:
        child.wait(max(0.0, deadline - time.monotonic()))
        while not stopped(child) and time.monotonic() < deadline:
            time.sleep(0.02)


def sample_trees(pids: Sequence[int]) -> dict[int, tuple[float, float]]:
    """CPU seconds so far and resident memory (MB) of each process with its descendants.

    One pass over the process table serves every tree (a per-tree scan would read all
    of /proc once per running agent). The caller turns two CPU readings into a
    percentage over the time between them.
    """
    if not pids:
        return {}
    children: dict[int, list[psutil.Process]] = {}
    for proc in psutil.process_iter(["ppid"]):
        children.setdefault(proc.info["ppid"], []).append(proc)
    readings = {}
    for pid in pids:
        try:
            members = [psutil.Process(pid)]
        except psutil.Error:
            continue
        stack = [pid]
        while stack:
            for child in children.get(stack.pop(), ()):
                members.append(child)
                stack.append(child.pid)
        readings[pid] = _usage(members)
    return readings


def _usage(members: list[psutil.Process]) -> tuple[float, float]:
    total_cpu, total_rss = 0.0, 0
    for proc in members:
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                total_cpu += times.user + times.system + times.children_user
                total_rss += proc.memory_info().rss
        except psutil.Error:
            continue
    return total_cpu, total_rss / (1024 * 1024)
