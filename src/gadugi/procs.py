"""Child processes: spawn each in its own session, stop a whole group, sample resources.

An agent's stdout and stderr go straight into files the child holds open, so output
reaches the log as it is written and keeps flowing even if the orchestrator is busy.
Stopping never blocks the caller's loop: ``begin_stop`` freezes the whole tree
(SIGSTOP), then either kills it at once or lets the agent alone end politely (SIGTERM and
SIGCONT to it, the rest still frozen) and sets a deadline; ``finish_stop`` (called on
later ticks) kills what is left once the agent has gone or the deadline has passed.
"""

from __future__ import annotations

import ctypes
import errno
import json
import logging
import os
import selectors
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .errors import SpawnError

log = logging.getLogger(__name__)


# The supervisor: a tiny Python that leads the agent's process group, waits for the
# agent and records how it ended (exit code, or the signal that killed it) and when. It
# outlives a crashed orchestrator, so a result that arrives while nobody is watching is
# still recorded (`gadugi resume`). A shell cannot tell a death by signal N from an exit
# with code 128+N; waitpid's status can. It ignores SIGTERM, SIGINT and SIGHUP so that a
# polite stop ends the agent and is still recorded; SIGKILL of the group ends both. It
# then ends the way the agent did (the same code, or the same signal), so its parent's
# waitpid is exact even when the result file cannot be written. Resource limits are set
# in the agent's process only, so a tight memory limit cannot stop the supervisor
# itself. Only built-in modules are imported: each import costs startup time per task.
SUPERVISOR = r"""
import os, resource, signal, sys, time
result, limits, argv = sys.argv[1], sys.argv[2], sys.argv[3:]
polite = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
for s in polite:
    signal.signal(s, signal.SIG_IGN)
def record(code, sig, err):
    null = lambda v: "null" if v is None else str(v)
    text = '{"exit_code": %s, "signal": %s, "errno": %s, "ended_at": %r}\n' % (
        null(code), null(sig), null(err), time.time())
    try:
        with open(result + ".tmp", "w") as fh:
            fh.write(text)
        os.replace(result + ".tmp", result)
    except OSError as exc:
        print("gadugi supervisor: cannot record the result:", exc, file=sys.stderr)
r, w = os.pipe()
try:
    pid = os.fork()
except OSError as exc:
    print("gadugi supervisor: cannot start", argv[0] + ":", exc.strerror, file=sys.stderr)
    record(None, None, exc.errno)
    sys.exit(126)
if pid == 0:
    os.close(r)
    for s in (*polite, signal.SIGPIPE, signal.SIGXFSZ):
        signal.signal(s, signal.SIG_DFL)
    try:
        for item in filter(None, limits.split(",")):
            which, value = map(int, item.split("="))
            resource.setrlimit(which, (value, value))
        os.execvp(argv[0], argv)
    except OSError as exc:
        os.write(w, str(exc.errno).encode())
        print("gadugi supervisor: cannot run", argv[0] + ":", exc.strerror, file=sys.stderr)
    os._exit(127)
os.close(w)
failed = os.read(r, 32)
os.close(r)
status = os.waitpid(pid, 0)[1]
code = os.waitstatus_to_exitcode(status)
record(code if code >= 0 else None, -code if code < 0 else None, int(failed) if failed else None)
if code < 0:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        signal.signal(-code, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), -code)
    code = 128 - code
sys.exit(code)
"""
KILL_WAIT_S = 5.0
FREEZE_LOOKS = 3  # a frozen tree cannot fork, so a second look finds what the first missed
OUT_OF_RESOURCES = frozenset({errno.EAGAIN, errno.ENOMEM})
PR_SET_CHILD_SUBREAPER, PR_GET_CHILD_SUBREAPER = 36, 37


@dataclass(frozen=True)
class Exit:
    """How one attempt ended, exactly: an exit code, a signal, a failed start, or lost."""

    code: int | None  # the agent's exit status, when it exited by itself
    signal: int | None  # the signal that ended it
    ended_at: float
    start_errno: int | None = None  # the agent could not be started (fork or exec failed)
    lost: bool = False  # an adopted process that vanished without recording anything

    @property
    def returncode(self) -> int | None:
        """subprocess's convention: the code, or -N for signal N; None if it never ran."""
        return -self.signal if self.signal is not None else self.code

    @property
    def out_of_resources(self) -> bool:
        """The agent was never started because the system had no process or memory left."""
        return self.code is None and self.signal is None and self.start_errno in OUT_OF_RESOURCES

    def describe(self) -> str:
        if self.lost:
            return "lost: the process vanished without recording how it ended"
        if self.signal is not None:
            return f"killed by {signal_name(self.signal)}"
        if self.code is None:
            return f"could not start: {os.strerror(self.start_errno or errno.EIO)}"
        return f"exited with code {self.code}"


def signal_name(number: int) -> str:
    """``SIGKILL`` for 9; a number no name is known for stays a number."""
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def exit_of_returncode(code: int, ended_at: float) -> Exit:
    """An Exit from a waitpid-style code (negative: killed by that signal)."""
    return Exit(None, -code, ended_at) if code < 0 else Exit(code, None, ended_at)


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
    exit: Exit | None = None
    kill_at: float | None = None  # when a stop begun with SIGTERM turns to SIGKILL
    killed: bool = False  # SIGKILL has been sent to the agent itself
    frozen: bool = False  # part of the tree is held by SIGSTOP until it is killed
    task: tuple[str, str] | None = None  # (orchestration, task) its environment names

    @property
    def returncode(self) -> int | None:
        return self.exit.returncode if self.exit is not None else None

    @property
    def ended_at(self) -> float | None:
        return self.exit.ended_at if self.exit is not None else None

    def check(self) -> Exit | None:
        """How the attempt ended, or None while it runs. Never blocks."""
        if self.exit is not None:
            return self.exit
        if self.popen is not None:
            code = self.popen.poll()
            if code is None:
                return None
            forget(self.popen.pid)
            # The file is exact; without it (SIGKILL reached the supervisor too, or the
            # disk was full) the supervisor's own status mirrors the agent's.
            self.exit = read_result(self.result_file) or exit_of_returncode(code, time.time())
            return self.exit
        self.exit = read_result(self.result_file)
        if (
            self.exit is None
            and not same_process(self.pid, self.start_time)
            and not orphaned_group(self.pid)
        ):
            # Gone, and nothing of its group lives on (a killed supervisor's agent would);
            # it may have finished between the two looks.
            self.exit = read_result(self.result_file) or Exit(None, None, time.time(), lost=True)
        return self.exit

    def wait(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        if self.popen is not None:
            with suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout_s)
        while self.check() is None and time.monotonic() < deadline:
            time.sleep(0.02)


def read_result(path: Path) -> Exit | None:
    """The supervisor's record of an attempt, or None if it is not there (yet)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        code, sig, err = (data.get(k) for k in ("exit_code", "signal", "errno"))
        return Exit(
            None if code is None else int(code),
            None if sig is None else int(sig),
            float(data["ended_at"]),
            None if err is None else int(err),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


@dataclass
class _Known:
    """What this process knows of its own children, for telling orphans from them."""

    # Pids it started and has not reaped yet (supervisors, git runs): ``reap_orphans``
    # must never take their exit status from the code that waits for them.
    ours: set[int] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Its children when it became a subreaper (None while it is not one): the
    # embedding program's, never taken for strays.
    before: frozenset[tuple[int, float]] | None = None


_known = _Known()


def start(
    argv: Sequence[str], *, program: str | None = None, **popen_args: Any
) -> subprocess.Popen[Any]:
    """``subprocess.Popen``, known to ``reap_orphans`` as ours until ``forget``-ten.

    The lock spans the start itself, so no orphan scan can see the new child without
    knowing it is ours. A fork that fails for want of processes or memory raises
    SpawnError (transient: try again later), not a bare OSError.
    """
    with _known.lock:
        try:
            proc = subprocess.Popen(list(argv), **popen_args)
        except OSError as exc:
            if exc.errno in OUT_OF_RESOURCES:
                raise SpawnError(program or argv[0], exc.errno) from exc
            raise
        _known.ours.add(proc.pid)
    return proc


def forget(pid: int) -> None:
    """``pid``, started by ``start``, has been reaped by its owner."""
    with _known.lock:
        _known.ours.discard(pid)


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

    A missing program raises FileNotFoundError here rather than surfacing as exit 127; a
    system out of processes raises SpawnError, here or (when the supervisor itself cannot
    fork the agent) as an Exit whose ``out_of_resources`` is true.
    """
    program = shutil.which(argv[0], path=env.get("PATH"))
    if program is None:
        raise FileNotFoundError(f"{argv[0]}: command not found")
    if any("\0" in word for word in (*argv, *env, *env.values())):
        # exec(2) takes C strings: Popen would raise a ValueError no caller expects.
        raise OSError(errno.EINVAL, f"{argv[0]}: an argument or variable holds a NUL byte")
    stdout_path.parent.mkdir(parents=True, exist_ok=True)
    result_file.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC
    out_fd = os.open(stdout_path, flags, 0o644)
    err_fd = out_fd if stderr_path == stdout_path else os.open(stderr_path, flags, 0o644)
    spec = ",".join(f"{int(k)}={int(v)}" for k, v in (limits or {}).items())
    python = sys.executable or "python3"
    try:
        popen = start(
            [python, "-I", "-S", "-c", SUPERVISOR, str(result_file), spec, *argv],
            program=argv[0],
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out_fd,
            stderr=err_fd,
            start_new_session=True,
            close_fds=True,
        )
    finally:
        os.close(out_fd)
        if err_fd != out_fd:
            os.close(err_fd)
    started = process_start_time(popen.pid) or time.time()
    orch_id, task_id = env.get("GADUGI_ORCHESTRATION_ID"), env.get("GADUGI_TASK_ID")
    task = (orch_id, task_id) if orch_id and task_id else None
    return Child(popen.pid, started, result_file, popen=popen, task=task)


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


# -- strays: a subreaper's orphans, and the environment gadugi gives its agents ------------


def _prctl(option: int, arg: Any) -> bool:
    """prctl(2) through libc; False where there is none or it refuses."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(option, arg, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


@contextmanager
def subreaper() -> Iterator[bool]:
    """Be the reaper of this process's orphaned descendants while the block runs.

    A daemon an agent leaves (double fork, setsid, a cleared environment) is then
    reparented to us instead of to init, where ``orphans`` finds it whatever it did to
    its environment. Linux only; elsewhere nothing changes and it yields False.
    """
    was = ctypes.c_int(0)
    if _known.before is not None or not _prctl(PR_GET_CHILD_SUBREAPER, ctypes.byref(was)):
        yield _known.before is not None  # already one (a nested run), or not possible here
        return
    if not _prctl(PR_SET_CHILD_SUBREAPER, 1):
        yield False
        return
    _known.before = frozenset(_identities(psutil.Process().children()))
    try:
        yield True
    finally:
        _known.before = None
        if not was.value:
            _prctl(PR_SET_CHILD_SUBREAPER, 0)


def _identities(procs: list[psutil.Process]) -> Iterator[tuple[int, float]]:
    for proc in procs:
        with suppress(psutil.Error):
            yield proc.pid, proc.create_time()


def _orphans_locked() -> list[psutil.Process]:
    """Children reparented to us: not started by us, not there before, not of our session.

    An agent's descendants are never in our session (each agent starts a new one, and a
    process can only leave a session for a new one), so a child the embedding program
    started itself in our session is never taken for a stray. Call with ``_known.lock``
    held: a child started during the scan would otherwise look like an orphan.
    """
    if _known.before is None:
        return []
    our_session = os.getsid(0)
    found = []
    for proc in psutil.Process().children():
        try:
            if proc.pid in _known.ours or (proc.pid, proc.create_time()) in _known.before:
                continue
            if os.getsid(proc.pid) != our_session:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found


def orphans() -> list[psutil.Process]:
    """Live processes reparented to this subreaper: what agents left running."""
    with _known.lock:
        return [p for p in _orphans_locked() if _running(p)]


def reap_orphans() -> list[int]:
    """Collect the exit status of zombies reparented to us, so none piles up.

    Only orphans: the exit status of a child we started belongs to whoever waits for it
    (``subprocess`` reads it, and a stolen one would read as success).
    """
    reaped = []
    with _known.lock:
        for proc in _orphans_locked():
            with suppress(ChildProcessError, psutil.Error):
                if proc.status() == psutil.STATUS_ZOMBIE and os.waitpid(proc.pid, os.WNOHANG)[0]:
                    reaped.append(proc.pid)
    return reaped


def orphans_of(orchestration_id: str, task_id: str) -> list[psutil.Process]:
    """What one task left reparented to us (a daemon whose parent exited), with its trees:
    outside the task's process tree, yet still its work."""
    found = []
    for orphan in orphans():
        try:
            env = orphan.environ()
        except psutil.Error:
            continue
        if (env.get("GADUGI_ORCHESTRATION_ID"), env.get("GADUGI_TASK_ID")) == (
            orchestration_id,
            task_id,
        ):
            found += _tree(orphan.pid)
    return found


def agents_of(orchestration_ids: set[str]) -> list[tuple[int, str, str]]:
    """Live processes gadugi started for these orchestrations: (pid, orchestration, task).

    The calling process is never among them, even when it runs inside an agent's
    environment (a gadugi started by an agent inherits that agent's variables).
    """
    found = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid == me or proc.status() == psutil.STATUS_ZOMBIE:
                continue
            env = proc.environ()
        except psutil.Error:
            continue
        orch_id = env.get("GADUGI_ORCHESTRATION_ID")
        if orch_id in orchestration_ids:
            found.append((proc.pid, orch_id, env.get("GADUGI_TASK_ID", "?")))
    return found


MAX_SWEEPS = 3


def sweep(orchestration_id: str, grace_s: float, keep: Collection[int] = ()) -> list[int]:
    """Stop whatever an orchestration's agents left running; blocks up to about ``grace_s``.

    Two searches, as each misses what the other finds: the environment gadugi gave its
    agents names a daemon that left every process tree (setsid, its parent gone) unless
    it cleared that environment; while we are a subreaper, every orphan reparented to us
    is a stray whatever its environment. The trees of ``keep`` (the supervisors of tasks
    still running) are spared. Stopping a daemon can orphan what it started in the
    meantime, so the search repeats, a bounded number of times.
    """
    spared = {os.getpid(), *(p.pid for pid in keep for p in _tree(pid))}
    stopped_pids: list[int] = []
    for _ in range(MAX_SWEEPS):
        found: dict[int, tuple[psutil.Process, str]] = {}
        for pid, _, task_id in agents_of({orchestration_id}):
            with suppress(psutil.Error):
                found[pid] = (psutil.Process(pid), f"task {task_id}")
        for orphan in orphans():
            for proc in _tree(orphan.pid):
                found.setdefault(proc.pid, (proc, "an agent (its environment cleared)"))
        strays = [(p, who) for pid, (p, who) in found.items() if pid not in spared]
        if not strays:
            break
        for proc, who in strays:
            log.warning("stopping pid %d left behind by %s", proc.pid, who)
        procs = [p for p, _ in strays]
        _term_then_kill(procs, grace_s)
        reap_orphans()
        stopped_pids.extend(p.pid for p in procs)
    return stopped_pids


def stop_marked(variable: str, value: str, grace_s: float) -> list[int]:
    """Stop every live process whose environment has ``variable=value``: what a helper
    gadugi started (a notify command) left running, a setsid daemon included, found by
    the mark gadugi put in that helper's environment. TERM, ``grace_s``, then KILL."""
    me = os.getpid()
    found = []
    for proc in psutil.process_iter(["pid"]):
        try:
            if proc.pid != me and _running(proc) and proc.environ().get(variable) == value:
                found.append(proc)
        except psutil.Error:
            continue
    _term_then_kill(found, grace_s)
    return [p.pid for p in found]


def _term_then_kill(procs: list[psutil.Process], grace_s: float) -> None:
    """SIGTERM each, up to ``grace_s`` for them to go, then SIGKILL what is left."""
    for proc in procs:
        with suppress(psutil.Error):
            proc.terminate()
    alive = _wait_gone(procs, grace_s)
    for proc in alive:
        with suppress(psutil.Error):
            proc.kill()
    _wait_gone(alive, KILL_WAIT_S)


def _wait_gone(procs: list[psutil.Process], timeout_s: float) -> list[psutil.Process]:
    """Wait until each has exited (a zombie counts: an init may never reap it)."""
    deadline = time.monotonic() + timeout_s
    alive = procs
    while alive and time.monotonic() < deadline:
        reap_orphans()
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


# -- stopping -----------------------------------------------------------------------------


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
    if child.check() is None or group_alive(child.pid):
        return False
    for proc in child.strays or ():
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.Error:
            continue
    return True


def freeze(child: Child) -> list[psutil.Process]:
    """SIGSTOP the child's whole tree, so that nothing in it runs, forks or exits.

    The group first, then each descendant (those that left the group with ``setsid``
    too); then another look for what forked between a look and its signal, until a look
    finds nothing new. Returns the agent's own processes (the supervisor's children),
    for a polite stop to single out; the supervisor itself stays frozen too.
    """
    if child.pid <= 1:
        return []
    known = {p.pid: p for p in child.strays or ()}
    if child.task is not None:
        known.update((p.pid, p) for p in orphans_of(*child.task))
    fresh = list(known.values())  # orphans first: nothing has signalled them yet
    for look in range(FREEZE_LOOKS):
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGSTOP)
        for proc in fresh:
            with suppress(psutil.Error):
                proc.send_signal(signal.SIGSTOP)
        fresh = [p for p in _tree(child.pid) if p.pid != child.pid and p.pid not in known]
        known.update((p.pid, p) for p in fresh)
        if not fresh and look:
            break
    for proc in fresh:  # found by the last look
        with suppress(psutil.Error):
            proc.send_signal(signal.SIGSTOP)
    child.strays = list(known.values())
    agents = []
    for proc in child.strays or ():
        with suppress(psutil.Error):
            if proc.ppid() == child.pid:
                agents.append(proc)
    return agents


def begin_stop(child: Child, now: float, grace_s: float, gracefully: bool = True) -> None:
    """Freeze the child's tree, then end it: at once (``gracefully`` false: SIGKILL, for an
    agent known to keep working after SIGTERM), or politely: SIGTERM and SIGCONT to the
    agent alone while its tools stay frozen, and ``finish_stop`` kills the rest once the
    agent has gone, or everything from ``now + grace_s``.

    A stop already begun keeps its first deadline and sends nothing more.
    """
    if child.kill_at is not None:
        return
    child.kill_at = now + grace_s if gracefully else now
    agents = freeze(child)
    if not gracefully:
        child.killed = True
        signal_tree(child, signal.SIGKILL)
        return
    if not agents:
        # No agent to single out (its supervisor is gone): the tree ends politely as one.
        signal_tree(child, signal.SIGTERM)
        signal_tree(child, signal.SIGCONT)
        return
    child.frozen = True
    for proc in agents:
        with suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)  # held until it runs again, then delivered
            proc.send_signal(signal.SIGCONT)
    with suppress(ProcessLookupError, PermissionError):
        os.kill(child.pid, signal.SIGCONT)  # the supervisor, to record how the agent ended


def finish_stop(child: Child, now: float) -> bool:
    """True once the child's whole tree is gone; never waits.

    What is still frozen is killed as soon as the agent itself has ended (nothing in it
    can run again), everything from the deadline on. Each such call sends SIGKILL again:
    it cannot be refused, but a process forked since the last signal is only reached by
    the next one.
    """
    if stopped(child):
        return True
    if child.kill_at is not None and now >= child.kill_at:
        if not child.killed:
            log.info("pid %d did not exit after SIGTERM; sending SIGKILL", child.pid)
            child.killed = True
        signal_tree(child, signal.SIGKILL)
    elif child.frozen and child.check() is not None:
        signal_tree(child, signal.SIGKILL)
    return False


def terminate(children: list[Child], grace_s: float, gracefully: bool = True) -> None:
    """Stop every child's tree at once and wait for it: frozen, then SIGTERM to each agent
    and SIGKILL after ``grace_s`` (or SIGKILL at once). For callers with nothing else to
    do; a loop uses ``begin_stop`` and ``finish_stop`` instead, and never waits."""
    for child in children:
        begin_stop(child, time.time(), grace_s, gracefully)
    # SIGKILL cannot be refused, but delivery takes a moment: wait for it, boundedly.
    deadline = time.monotonic() + grace_s + KILL_WAIT_S
    pending = children
    while pending:
        pending = [c for c in pending if not finish_stop(c, time.time())]
        if not pending or time.monotonic() >= deadline:
            break
        time.sleep(0.02)


# -- resources ----------------------------------------------------------------------------


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
