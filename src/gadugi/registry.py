"""The registry: SQLite in WAL mode at ``.gadugi/state.db``, the single source of truth.

The orchestrator is the only writer of task state; other processes only read, or ask
for a cancellation by setting ``cancel_requested``, which the orchestrator acts on.
Transactions are short and a busy timeout lets readers and the writer take turns, so
``gadugi status`` never sees "database is locked". A file that is not a valid
database is reported and never silently replaced; a lock held past the busy timeout, a
full disk and a damaged file are three different errors.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import sqlite3
import stat
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import (
    NotFoundError,
    RegistryCorruptError,
    RegistryError,
    RegistryFullError,
    RegistryLockedError,
    RequestError,
)
from .lifecycle import LostRace, Transition

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10_000
_SCHEMA = """
CREATE TABLE IF NOT EXISTS orchestrations (
    id TEXT PRIMARY KEY,
    project_root TEXT NOT NULL,
    state TEXT NOT NULL,
    started_at REAL NOT NULL,
    finished_at REAL,
    pid INTEGER,
    pid_start_time REAL,
    base_commit TEXT,
    config TEXT,
    fallback_used INTEGER NOT NULL DEFAULT 0,
    note TEXT,
    result TEXT,
    owner TEXT,
    landing_branch TEXT,
    landing_base TEXT,
    landing_head TEXT,
    landing_into TEXT,
    landing_verified TEXT
);
CREATE TABLE IF NOT EXISTS tasks (
    orchestration_id TEXT NOT NULL REFERENCES orchestrations(id),
    task_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    prompt_file TEXT NOT NULL,
    status TEXT NOT NULL,
    priority INTEGER NOT NULL DEFAULT 0,
    depends_on TEXT NOT NULL DEFAULT '[]',
    conflicts_with TEXT NOT NULL DEFAULT '[]',
    branch TEXT,
    worktree TEXT,
    worktree_removed INTEGER NOT NULL DEFAULT 0,
    base_commit TEXT,
    log_file TEXT,
    events_file TEXT,
    exit_code INTEGER,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at REAL NOT NULL,
    started_at REAL,
    completed_at REAL,
    last_heartbeat REAL,
    pid INTEGER,
    pid_start_time REAL,
    command TEXT,
    error_message TEXT,
    cancel_requested TEXT,
    agent TEXT,
    commits INTEGER,
    cpu_percent REAL,
    memory_mb REAL,
    last_line TEXT,
    not_before REAL,
    worktree_state TEXT,
    landing_status TEXT,
    landing_commit TEXT,
    landing_attempts INTEGER NOT NULL DEFAULT 0,
    landing_tip TEXT,
    landing_note TEXT,
    landing_reruns INTEGER NOT NULL DEFAULT 0,
    phase TEXT,
    followup TEXT,
    verdict TEXT,
    summary TEXT,
    verification TEXT,
    changed_files INTEGER,
    insertions INTEGER,
    deletions INTEGER,
    waiting_reason TEXT,
    PRIMARY KEY (orchestration_id, task_id)
);
CREATE TABLE IF NOT EXISTS attempts (
    orchestration_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    pid INTEGER,
    pid_start_time REAL,
    started_at REAL NOT NULL,
    ended_at REAL,
    exit_code INTEGER,
    status TEXT,
    error TEXT,
    PRIMARY KEY (orchestration_id, task_id, number)
);
CREATE INDEX IF NOT EXISTS tasks_by_status ON tasks(orchestration_id, status);
"""
LANDING_ORCHESTRATION = (
    "landing_branch",
    "landing_base",
    "landing_head",
    "landing_into",
    "landing_verified",
)
# Columns that came after the first registries were written, and how to add them.
ADDED_COLUMNS = {
    "orchestrations": {
        "note": "TEXT",
        "owner": "TEXT",
        # landing.py: the integration branch, the commit its queue was built on, its head,
        # the branch it fast-forwards, and the last head a verification passed on
        **dict.fromkeys(LANDING_ORCHESTRATION, "TEXT"),
        "spent_usd": "REAL",  # what its agents cost, as they reported it
        "waited_seconds": "TEXT",  # JSON {reason: seconds} of waiting for admission
        # The segment (run, resume, retry) being driven now: its figures are added to the
        # result when it ends, or from its last activity when a resume finds it cut short.
        "segment_kind": "TEXT",
        "segment_started_at": "REAL",
    },
    "tasks": {
        "conflicts_with": "TEXT NOT NULL DEFAULT '[]'",
        "not_before": "REAL",
        "worktree_state": "TEXT",  # WorktreeState: intended before git runs, then ready, removed
        # landing.py: LandingStatus, the candidate or landed merge, how many candidates,
        # the branch tip last tried, and what a person needs to know
        "landing_status": "TEXT",
        "landing_commit": "TEXT",
        "landing_attempts": "INTEGER NOT NULL DEFAULT 0",
        "landing_tip": "TEXT",
        "landing_note": "TEXT",
        "landing_reruns": "INTEGER NOT NULL DEFAULT 0",  # re-runs asked (land_retries bounds)
        "phase": "TEXT",  # Phase of a running attempt: setup, agent, verify
        "followup": "TEXT",  # what the next attempt is asked, continuing the last one
        "followup_base": "TEXT",  # a commit merged into the branch before that attempt
        "verdict": "TEXT",  # the agent's structured verdict: done, blocked, no_change
        "summary": "TEXT",
        "verification": "TEXT",  # JSON: command, passed, exit_code, duration_seconds, log_file
        "changed_files": "INTEGER",  # the branch's diffstat against its base, once finished
        "insertions": "INTEGER",
        "deletions": "INTEGER",
        "waiting_reason": "TEXT",  # why a queued task is not starting (schedule.waiting_reasons)
        "commits_after_cancel": "INTEGER",  # commits the branch gained after a stop began
    },
}
_IDENTIFIER = re.compile(r"[a-z_]+")
_JSON_COLUMNS = frozenset({"depends_on", "conflicts_with", "command", "agent", "verification"})


class Registry:
    """One connection to ``state.db``; open one per thread or process."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if not _inspect(path):
            if readonly:
                raise NotFoundError(f"no orchestrations yet: {path} does not exist")
            _create(path)
        try:
            self.conn = _connect(path, readonly)
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from exc
        try:
            self._check_version()
            if not readonly:
                self._add_missing_columns()
                self.conn.executescript(_INDEXES)
                # WAL (set when the file was made) with NORMAL sync: durable at each
                # checkpoint, and a commit costs no fsync on the hot path.
                self.conn.execute("PRAGMA synchronous = NORMAL")
        except BaseException as exc:
            # Closed at once, so SQLite removes the -wal and -shm this connection made.
            with suppress(sqlite3.Error):
                self.conn.close()
            if isinstance(exc, sqlite3.DatabaseError):
                raise self._corrupt(exc) from exc
            raise

    @classmethod
    def existing(cls, path: Path) -> Registry:
        """Open a registry for writing only if one exists (commands that act on past runs)."""
        if not _inspect(path):
            raise NotFoundError(f"no orchestrations yet: {path} does not exist")
        return cls(path)

    def _corrupt(self, exc: sqlite3.Error | OSError) -> RegistryError:
        """The error to raise for ``exc``: damaged, locked, full or other (see registry_error)."""
        return registry_error(self.path, exc)

    def _add_missing_columns(self) -> None:
        """Bring a registry from an earlier build up to date; columns are only ever added."""
        if not self._missing_columns():
            return  # the common case: no write lock taken
        # Two gadugi processes opening an old registry at once: the check is repeated
        # under the write lock, so only one of them adds each column.
        with self.transaction() as c:
            for table, name in self._missing_columns():
                decl = ADDED_COLUMNS[table][name]
                c.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")

    def _missing_columns(self) -> list[tuple[str, str]]:
        missing = []
        for table, columns in ADDED_COLUMNS.items():
            have = {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
            missing += [(table, name) for name in columns if name not in have]
        return missing

    def _check_version(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version != SCHEMA_VERSION:
            raise RegistryError(
                f"{self.path} is not a gadugi registry this version understands "
                f"(schema {version}, expected {SCHEMA_VERSION}); it was left as it is"
            )

    def close(self) -> None:
        self.conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from exc
        try:
            yield self.conn
            self.conn.execute("COMMIT")
        except BaseException as exc:
            # SQLite ends some transactions itself (SQLITE_FULL may), and a failed COMMIT
            # leaves one open: undo what is still open, and report the first error.
            if self.conn.in_transaction:
                with suppress(sqlite3.Error):
                    self.conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.DatabaseError):
                raise self._corrupt(exc) from exc
            raise

    def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        try:
            rows = self.conn.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from exc
        return [_decode(dict(r)) for r in rows]

    # -- orchestrations -------------------------------------------------------------

    def create_orchestration(
        self,
        orch_id: str,
        root: Path,
        base_commit: str,
        config: Mapping[str, Any],
        pid: int,
        pid_start_time: float | None,
        fallback_used: bool,
        tasks: list[dict[str, Any]],
        *,
        owner: str | None = None,
        alive: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        """The orchestration and all its tasks, in one transaction: a crash leaves both or
        neither, never an orchestration that silently lost its tasks.

        With ``alive``, a running orchestration whose owner is alive and which has any of
        these prompt files refuses the new one; the check and the insert are one
        transaction, so of two identical runs started at the same instant exactly one
        is created.
        """
        with self.transaction() as c:
            if alive is not None:
                self._refuse_overlap(c, {t["prompt_file"] for t in tasks}, alive)
            c.execute(
                "INSERT INTO orchestrations (id, project_root, state, started_at, pid,"
                " pid_start_time, base_commit, config, fallback_used, owner)"
                " VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?)",
                (
                    orch_id,
                    str(root),
                    time.time(),
                    pid,
                    pid_start_time,
                    base_commit,
                    json.dumps(dict(config), default=str),
                    int(fallback_used),
                    owner,
                ),
            )
            self._insert_tasks(c, orch_id, tasks)

    @staticmethod
    def _refuse_overlap(
        c: sqlite3.Connection, prompt_files: set[str], alive: Callable[[dict[str, Any]], bool]
    ) -> None:
        running = c.execute("SELECT * FROM orchestrations WHERE state = 'running'").fetchall()
        for orch in map(dict, running):
            rows = c.execute(
                "SELECT prompt_file FROM tasks WHERE orchestration_id = ?", (orch["id"],)
            ).fetchall()
            shared = sorted({r[0] for r in rows} & prompt_files)
            if shared and alive(orch):
                raise RequestError(
                    f"orchestration {orch['id']} is already running {', '.join(shared)}; "
                    "wait for it, or stop it with gadugi cancel"
                )

    def take_over(
        self, orch_id: str, pid: int, pid_start_time: float | None, owner: str | None = None
    ) -> None:
        """Record that a new orchestrator process now drives ``orch_id`` (resume, retry).

        The caller holds the orchestration's lease (``lease.claim``); the token written
        here is what every later task write of the new owner is checked against.
        """
        with self.transaction() as c:
            c.execute(
                "UPDATE orchestrations SET state = 'running', pid = ?, pid_start_time = ?,"
                " finished_at = NULL, owner = ? WHERE id = ?",
                (pid, pid_start_time, owner, orch_id),
            )

    def begin_segment(self, orch_id: str, kind: str, started_at: float) -> None:
        """Record which kind of drive (run, resume, retry) began when, for its figures."""
        with self.transaction() as c:
            c.execute(
                "UPDATE orchestrations SET segment_kind = ?, segment_started_at = ? WHERE id = ?",
                (kind, started_at, orch_id),
            )

    def release(self, orch_id: str, owner: str) -> None:
        """Give up ownership (the lease's token) without finishing the orchestration."""
        with self.transaction() as c:
            c.execute(
                "UPDATE orchestrations SET owner = NULL, pid = NULL, pid_start_time = NULL"
                " WHERE id = ? AND owner = ?",
                (orch_id, owner),
            )

    def forget(self, orch_id: str) -> None:
        """Drop an orchestration's rows (cleanup, once nothing of its work remains)."""
        with self.transaction() as c:
            for table, key in (
                ("attempts", "orchestration_id"),
                ("tasks", "orchestration_id"),
                ("orchestrations", "id"),
            ):
                c.execute(f"DELETE FROM {table} WHERE {key} = ?", (orch_id,))  # noqa: S608

    def set_note(self, orch_id: str, note: str | None) -> None:
        """Why the orchestration is waiting (admission control), or None."""
        with self.transaction() as c:
            c.execute("UPDATE orchestrations SET note = ? WHERE id = ?", (note, orch_id))

    def set_accounts(
        self, orch_id: str, spent_usd: float, waited_seconds: Mapping[str, float]
    ) -> None:
        """What the orchestration's agents have cost, and how long it waited, per reason."""
        with self.transaction() as c:
            c.execute(
                "UPDATE orchestrations SET spent_usd = ?, waited_seconds = ? WHERE id = ?",
                (spent_usd, json.dumps(dict(waited_seconds)), orch_id),
            )

    def finish_orchestration(
        self, orch_id: str, state: str, result: Mapping[str, Any], owner: str | None = None
    ) -> None:
        with self.transaction() as c:
            if owner is not None:
                self._check_owner(c, orch_id, owner)
            c.execute(
                "UPDATE orchestrations SET state = ?, finished_at = ?, result = ?, owner = NULL"
                " WHERE id = ?",
                (state, time.time(), json.dumps(dict(result)), orch_id),
            )

    def update_landing(self, orch_id: str, *, owner: str | None = None, **fields: Any) -> None:
        """An orchestration's landing fields (``LANDING_ORCHESTRATION``), in one transaction."""
        if not fields:
            return
        if not set(fields) <= set(LANDING_ORCHESTRATION):
            raise ValueError(
                f"not landing fields: {sorted(set(fields) - set(LANDING_ORCHESTRATION))}"
            )
        sets = ", ".join(f"{k} = ?" for k in fields)
        with self.transaction() as c:
            if owner is not None:
                self._check_owner(c, orch_id, owner)
            c.execute(
                f"UPDATE orchestrations SET {sets} WHERE id = ?",  # noqa: S608
                (*fields.values(), orch_id),
            )

    def orchestration(self, orch_id: str | None = None) -> dict[str, Any]:
        """One orchestration by id, or the newest one."""
        if orch_id:
            rows = self._query("SELECT * FROM orchestrations WHERE id = ?", (orch_id,))
        else:
            rows = self._query("SELECT * FROM orchestrations ORDER BY started_at DESC LIMIT 1")
        if not rows:
            raise NotFoundError(
                f"no orchestration {orch_id!r} in {self.path}"
                if orch_id
                else "no orchestrations yet"
            )
        return rows[0]

    def orchestrations(self) -> list[dict[str, Any]]:
        return self._query("SELECT * FROM orchestrations ORDER BY started_at")

    # -- tasks --------------------------------------------------------------------

    @staticmethod
    def _insert_tasks(c: sqlite3.Connection, orch_id: str, rows: list[dict[str, Any]]) -> None:
        now = time.time()
        for seq, row in enumerate(rows):
            values = {
                "orchestration_id": orch_id,
                "seq": seq,
                "created_at": now,
                "status": "queued",
                **row,
            }
            cols = ", ".join(values)
            marks = ", ".join("?" for _ in values)
            c.execute(
                f"INSERT INTO tasks ({cols}) VALUES ({marks})",  # noqa: S608
                tuple(_encode(k, v) for k, v in values.items()),
            )

    def update_task(
        self, orch_id: str, task_id: str, *, owner: str | None = None, **fields: Any
    ) -> None:
        self.update_tasks(orch_id, {task_id: fields}, owner=owner)

    def update_tasks(
        self,
        orch_id: str,
        changes: Mapping[str, Mapping[str, Any]],
        *,
        owner: str | None = None,
    ) -> None:
        """Apply several tasks' changes (never their status) in one short transaction.

        With ``owner``, nothing is written unless that token still owns the orchestration.
        """
        if not changes:
            return
        if any("status" in f for f in changes.values()):
            raise ValueError("a task's status changes only through Registry.transition")
        with self.transaction() as c:
            if owner is not None:
                self._check_owner(c, orch_id, owner)
            for task_id, fields in changes.items():
                if not fields:
                    continue
                sets = ", ".join(f"{k} = ?" for k in fields)
                c.execute(
                    f"UPDATE tasks SET {sets} WHERE orchestration_id = ? AND task_id = ?",  # noqa: S608
                    (*(_encode(k, v) for k, v in fields.items()), orch_id, task_id),
                )

    @staticmethod
    def _check_owner(c: sqlite3.Connection, orch_id: str, owner: str) -> None:
        row = c.execute("SELECT owner FROM orchestrations WHERE id = ?", (orch_id,)).fetchone()
        if row is None or row[0] != owner:
            raise OwnerChanged(orch_id, row[0] if row else None)

    def transition(
        self,
        orch_id: str,
        change: Transition,
        at: float,
        *,
        owner: str | None = None,
        attempt: AttemptRecord | None = None,
        **fields: Any,
    ) -> None:
        """Change one task's status as a compare-and-set, with the fields that go with it.

        The row must still have ``change.old`` and, with ``owner``, the orchestration must
        still be owned by that token; otherwise ``LostRace`` and nothing is written.
        Entering a finished status sets ``completed_at``; leaving one clears it, so a
        task that runs again never carries the end time of an earlier attempt.
        """
        values = {
            "status": change.new.value,
            "error_message": change.reason,
            "completed_at": at if change.new.finished else None,
            **fields,
        }
        sets = ", ".join(f"{k} = ?" for k in values)
        guard = (
            " AND EXISTS (SELECT 1 FROM orchestrations WHERE id = ? AND owner = ?)"
            if owner is not None
            else ""
        )
        args: tuple[Any, ...] = (
            *(_encode(k, v) for k, v in values.items()),
            orch_id,
            change.task_id,
            change.old.value,
        )
        if owner is not None:
            args = (*args, orch_id, owner)
        with self.transaction() as c:
            cur = c.execute(
                f"UPDATE tasks SET {sets} WHERE orchestration_id = ? AND task_id = ?"  # noqa: S608
                f" AND status = ?{guard}",
                args,
            )
            if cur.rowcount != 1:
                raise LostRace(orch_id, change.task_id, change.old)
            if attempt is not None:
                self._write_attempt(c, orch_id, change.task_id, attempt)

    @staticmethod
    def _write_attempt(c: sqlite3.Connection, orch_id: str, task_id: str, a: AttemptRecord) -> None:
        """An attempt's start (a new row) or its end, in the transaction of its task's change."""
        if a.ended_at is None:
            c.execute(
                "INSERT OR REPLACE INTO attempts (orchestration_id, task_id, number, pid,"
                " pid_start_time, started_at, status) VALUES (?, ?, ?, ?, ?, ?, 'running')",
                (orch_id, task_id, a.number, a.pid, a.pid_start_time, a.started_at),
            )
        else:
            c.execute(
                "UPDATE attempts SET ended_at = ?, exit_code = ?, status = ?, error = ?"
                " WHERE orchestration_id = ? AND task_id = ? AND number = ?",
                (a.ended_at, a.exit_code, a.status, a.error, orch_id, task_id, a.number),
            )

    def tasks(self, orch_id: str, columns: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """The orchestration's tasks in request order; only ``columns`` when given."""
        if not all(_IDENTIFIER.fullmatch(c) for c in columns):
            raise ValueError(f"not column names: {columns!r}")
        wanted = ", ".join(columns) or "*"
        return self._query(
            f"SELECT {wanted} FROM tasks WHERE orchestration_id = ? ORDER BY seq",  # noqa: S608
            (orch_id,),
        )

    def find_task(self, task_id: str, orch_id: str | None = None) -> dict[str, Any]:
        """A task by id in the given orchestration, or the newest one that has it."""
        if orch_id:
            rows = self._query(
                "SELECT * FROM tasks WHERE orchestration_id = ? AND task_id = ?",
                (orch_id, task_id),
            )
        else:
            rows = self._query(
                "SELECT t.* FROM tasks t JOIN orchestrations o ON o.id = t.orchestration_id"
                " WHERE t.task_id = ? ORDER BY o.started_at DESC LIMIT 1",
                (task_id,),
            )
        if not rows:
            where = f" in orchestration {orch_id}" if orch_id else ""
            raise NotFoundError(f"no task {task_id!r}{where}")
        return rows[0]

    def request_cancel(self, orch_id: str, task_id: str, who: str) -> None:
        with self.transaction() as c:
            c.execute(
                "UPDATE tasks SET cancel_requested = ? WHERE orchestration_id = ? AND task_id = ?",
                (who, orch_id, task_id),
            )

    def cancel_requests(self, orch_id: str) -> dict[str, str]:
        rows = self._query(
            "SELECT task_id, cancel_requested FROM tasks WHERE orchestration_id = ?"
            " AND cancel_requested IS NOT NULL AND status IN ('queued', 'running')",
            (orch_id,),
        )
        return {r["task_id"]: r["cancel_requested"] for r in rows}

    # -- attempts -----------------------------------------------------------------

    def attempts(self, orch_id: str) -> list[dict[str, Any]]:
        return self._query(
            "SELECT * FROM attempts WHERE orchestration_id = ? ORDER BY task_id, number",
            (orch_id,),
        )

    def export(self) -> dict[str, Any]:
        """Everything, as one JSON-ready object."""
        out = []
        for orch in self.orchestrations():
            out.append(
                {**orch, "tasks": self.tasks(orch["id"]), "attempts": self.attempts(orch["id"])}
            )
        return {"schema_version": SCHEMA_VERSION, "orchestrations": out}

    def live_tasks(self, orch_id: str, since: float, others: int) -> list[dict[str, Any]]:
        """The tasks of ``orch_id`` and of at most ``others`` other orchestrations, the
        newest of those unfinished or finished after ``since``: what the monitoring files
        show. Indexed, so its cost does not grow with the history (which ``export`` has).
        """
        return self._query(
            "SELECT t.* FROM tasks t JOIN orchestrations o ON o.id = t.orchestration_id"
            " WHERE t.orchestration_id IN (SELECT ? UNION ALL SELECT id FROM"
            " (SELECT id FROM orchestrations WHERE id != ?"
            " AND (finished_at IS NULL OR finished_at >= ?) ORDER BY started_at DESC LIMIT ?))"
            " ORDER BY o.started_at, t.seq",
            (orch_id, orch_id, since, others),
        )

    def history(self, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """How many orchestrations there are, and the newest ``limit`` of them, each with its
        tasks counted by status (``tasks_by_status``) and its agents' summed ``cost_usd``
        (None when no agent reported one). Results and configurations stay unread."""
        total = self._query("SELECT COUNT(*) AS n FROM orchestrations")[0]["n"]
        rows = self._query(
            "SELECT id, state, started_at, finished_at, pid, pid_start_time, note,"
            " CASE WHEN json_valid(result)"
            " THEN json_extract(result, '$.execution_time_seconds') END AS execution_time_seconds,"
            " CASE WHEN json_valid(result)"
            " THEN json_extract(result, '$.plan_accuracy') END AS plan_accuracy"
            " FROM orchestrations ORDER BY started_at DESC LIMIT ?",
            (limit,),
        )
        by_id = {r["id"]: r | {"tasks_by_status": {}, "cost_usd": None} for r in rows}
        if by_id:
            marks = ", ".join("?" for _ in by_id)
            # Amounts only: a NaN, infinite or negative cost in a row is none (holds.amount).
            cost = (
                "SUM(CASE WHEN json_valid(agent) AND json_extract(agent, '$.cost_usd')"
                " BETWEEN 0 AND 1e300 THEN json_extract(agent, '$.cost_usd') END)"
            )
            sql = (
                f"SELECT orchestration_id, status, COUNT(*) AS n, {cost} AS cost FROM tasks"  # noqa: S608
                f" WHERE orchestration_id IN ({marks}) GROUP BY orchestration_id, status"
            )
            counts = self._query(sql, tuple(by_id))
            for count in counts:
                orch = by_id[count["orchestration_id"]]
                orch["tasks_by_status"][count["status"]] = count["n"]
                if count["cost"] is not None:
                    orch["cost_usd"] = (orch["cost_usd"] or 0.0) + count["cost"]
        return total, list(by_id.values())


# Indexes for the live views, made by the first writer that opens a registry without them
# (IF NOT EXISTS takes no lock when they are there).
_INDEXES = """
CREATE INDEX IF NOT EXISTS orchestrations_by_finish ON orchestrations(finished_at);
"""
_HEADER = b"SQLite format 3\x00"
_KINDS = {
    stat.S_IFDIR: "a directory",
    stat.S_IFIFO: "a named pipe (FIFO)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
}
_MOVE_ASIDE = "Move it aside to start a fresh registry, or restore it from a backup."
# SQLite reports ENOSPC on its shared-memory file as a plain I/O error; with less than
# this free beside the registry, that I/O error is taken for a full disk.
_NEARLY_FULL_BYTES = 1 << 20


def _inspect(path: Path) -> bool:
    """Whether a registry file is at ``path``; raises if something else is there.

    Only a regular file that starts as an SQLite database is handed to SQLite: SQLite
    blocks for ever reading a FIFO, and makes a -wal and -shm beside any file it opens.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        if os.path.lexists(path):
            raise _not_a_registry(path, "a symbolic link to nothing") from None
        return False
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise _not_a_registry(path, "a loop of symbolic links") from exc
        raise registry_error(path, exc) from exc
    if not stat.S_ISREG(info.st_mode):
        raise _not_a_registry(path, _KINDS.get(stat.S_IFMT(info.st_mode), "a special file"))
    if (info.st_dev, info.st_ino) in _SEEN_REGISTRIES:
        # Not opened again: closing any descriptor of a file drops every POSIX lock this
        # process holds on it, SQLite's included, so a second Registry beside a live one
        # (the dashboard's) would let another process delete the -wal and -shm under it.
        return True
    try:
        # Non-blocking: a FIFO put there since the stat must not hang the open.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            regular = stat.S_ISREG(os.fstat(fd).st_mode)
            header = os.read(fd, len(_HEADER)) if regular else b""
        finally:
            os.close(fd)
    except OSError as exc:
        raise registry_error(path, exc) from exc
    if not regular:
        raise _not_a_registry(path, "a special file")
    if not header:
        raise _not_a_registry(path, "an empty file")
    if header != _HEADER:
        raise _not_a_registry(path, "a file that is not an SQLite database")
    _SEEN_REGISTRIES.add((info.st_dev, info.st_ino))
    return True


# The registry files this process has checked (device, inode): see _inspect.
_SEEN_REGISTRIES: set[tuple[int, int]] = set()


def _connect(path: Path, readonly: bool) -> sqlite3.Connection:
    """A connection to the existing registry file; a reader's refuses every write.

    Readers connect read-write all the same (``query_only`` keeps them from writing):
    SQLite removes the -wal and -shm files when the last connection closes, and only a
    connection that may write can, so ``gadugi status`` leaves nothing behind.
    """
    uri = f"{Path(os.path.abspath(path)).as_uri()}?mode=rw"  # rw: never creates the file
    conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        if readonly:
            conn.execute("PRAGMA query_only = 1")
    except BaseException:
        conn.close()
        raise
    return conn


def _not_a_registry(path: Path, what: str) -> RegistryCorruptError:
    return RegistryCorruptError(
        f"{path} is {what}, not a gadugi registry; it was left as it is. {_MOVE_ASIDE}"
    )


def registry_error(path: Path, exc: sqlite3.Error | OSError) -> RegistryError:
    """The error to report for ``exc`` at ``path``, told apart by SQLite's error code.

    Only a damaged file is advice to move it aside; a lock held elsewhere passes, and a
    full disk needs space, and moving a live registry aside would lose its runs.
    """
    if isinstance(exc, OSError):
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return _full(path, errno.errorcode[exc.errno])
        return RegistryError(f"{path} cannot be used: {exc.strerror or exc}")
    code = getattr(exc, "sqlite_errorcode", None)
    name = getattr(exc, "sqlite_errorname", None) or type(exc).__name__
    primary = None if code is None else code & 0xFF
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB):
        return RegistryCorruptError(
            f"{path} is damaged ({name}: {exc}); it was left as it is. {_MOVE_ASIDE}"
        )
    if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
        return RegistryLockedError(
            f"{path} is locked by another process, which held it for more than "
            f"{BUSY_TIMEOUT_MS / 1000:g} s ({name}); the registry was not changed. "
            "Wait for that process (a gadugi run, or any program with the file open, "
            "which `fuser` names) to finish, then try again."
        )
    if primary == sqlite3.SQLITE_FULL or (primary == sqlite3.SQLITE_IOERR and _nearly_full(path)):
        return _full(path, name)
    return RegistryError(f"{path} cannot be used ({name}: {exc}); it was left as it is")


def _full(path: Path, name: str) -> RegistryFullError:
    return RegistryFullError(
        f"the disk holding {path} is full ({name}); the registry was not changed. "
        "Free some space, then try again."
    )


def _nearly_full(path: Path) -> bool:
    try:
        fs = os.statvfs(path.parent)
    except OSError:
        return False
    free = fs.f_bfree if os.geteuid() == 0 else fs.f_bavail  # root may use reserved blocks
    return free * fs.f_frsize < _NEARLY_FULL_BYTES


@dataclass(frozen=True)
class AttemptRecord:
    """One attempt's row: written when it starts (``ended_at`` None) and when it ends."""

    number: int
    started_at: float | None = None
    pid: int | None = None
    pid_start_time: float | None = None
    ended_at: float | None = None
    exit_code: int | None = None
    status: str | None = None
    error: str | None = None


class OwnerChanged(RegistryError):
    """The orchestration is no longer owned by the token that tried to write."""

    def __init__(self, orch_id: str, owner: str | None) -> None:
        super().__init__(
            f"orchestration {orch_id} is now owned by {owner or 'nobody'}; "
            "this process stopped writing to it"
        )
        self.orchestration_id = orch_id
        self.owner = owner


def _create(path: Path) -> None:
    """A new registry, schema and all, put in place in one step.

    It is built under a temporary name and hard-linked into place, so no reader ever
    sees a half-made database, two first runs cannot overwrite each other, and an
    existing ``state.db`` (however damaged) is never replaced. A failure (a full disk)
    leaves nothing behind, not even the folder it made.
    """
    made_folder = not path.parent.exists()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(tmp)
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.executescript(
                    f"BEGIN IMMEDIATE;{_SCHEMA}PRAGMA user_version = {SCHEMA_VERSION};COMMIT;"
                )
            finally:
                conn.close()
            with suppress(FileExistsError):  # another gadugi made it first: use theirs
                os.link(tmp, path)
        finally:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                with suppress(OSError):
                    leftover.unlink(missing_ok=True)
    except (OSError, sqlite3.Error) as exc:
        if made_folder:
            with suppress(OSError):
                path.parent.rmdir()
        raise registry_error(path, exc) from exc


def _encode(key: str, value: Any) -> Any:
    if key in _JSON_COLUMNS and value is not None and not isinstance(value, str):
        return json.dumps(value)
    return value


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for key in _JSON_COLUMNS | {"config", "result", "waited_seconds"}:
        if isinstance(row.get(key), str):
            with suppress(json.JSONDecodeError):
                row[key] = json.loads(row[key])
    return row
