"""The registry: SQLite in WAL mode at ``.gadugi/state.db``, the single source of truth.

The orchestrator is the only writer of task state; other processes only read, or ask
for a cancellation by setting ``cancel_requested``, which the orchestrator acts on.
Transactions are short and a busy timeout lets readers and the writer take turns, so
``gadugi status`` never sees "database is locked". A file that is not a valid
database is reported and never silently replaced.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import NotFoundError, RegistryError, RequestError
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
    owner TEXT
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
# Columns that came after the first registries were written, and how to add them.
ADDED_COLUMNS = {
    "orchestrations": {"note": "TEXT", "owner": "TEXT"},
    "tasks": {"conflicts_with": "TEXT NOT NULL DEFAULT '[]'", "not_before": "REAL"},
}
_IDENTIFIER = re.compile(r"[a-z_]+")
_JSON_COLUMNS = frozenset({"depends_on", "conflicts_with", "command", "agent"})


class Registry:
    """One connection to ``state.db``; open one per thread or process."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = path
        if readonly and not path.exists():
            raise NotFoundError(f"no orchestrations yet: {path} does not exist")
        try:
            if readonly:
                uri = f"file:{path}?mode=ro"
                self.conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_MS / 1000)
            else:
                if not path.exists():
                    _create(path)
                self.conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)
            self.conn.isolation_level = None
            self.conn.row_factory = sqlite3.Row
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._check_version()
            if not readonly:
                self._add_missing_columns()
                # WAL (set when the file was made) with NORMAL sync: durable at each
                # checkpoint, and a commit costs no fsync on the hot path.
                self.conn.execute("PRAGMA synchronous = NORMAL")
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from exc

    @classmethod
    def existing(cls, path: Path) -> Registry:
        """Open a registry for writing only if one exists (commands that act on past runs)."""
        if not path.exists():
            raise NotFoundError(f"no orchestrations yet: {path} does not exist")
        return cls(path)

    def _corrupt(self, exc: sqlite3.Error) -> RegistryError:
        return RegistryError(
            f"{self.path} cannot be used ({exc}); it was left as it is. "
            "Move it aside to start a fresh registry, or restore it from a backup."
        )

    def _add_missing_columns(self) -> None:
        """Bring a registry from an earlier build up to date; columns are only ever added."""
        for table, columns in ADDED_COLUMNS.items():
            have = {r[1] for r in self.conn.execute(f"PRAGMA table_info({table})")}
            for name, decl in columns.items():
                if name not in have:
                    self.conn.execute(f"ALTER TABLE {table} ADD COLUMN {name} {decl}")

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
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")
        except sqlite3.DatabaseError as exc:
            raise self._corrupt(exc) from exc

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
    existing ``state.db`` (however damaged) is never replaced.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
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
            leftover.unlink(missing_ok=True)


def _encode(key: str, value: Any) -> Any:
    if key in _JSON_COLUMNS and value is not None and not isinstance(value, str):
        return json.dumps(value)
    return value


def _decode(row: dict[str, Any]) -> dict[str, Any]:
    for key in _JSON_COLUMNS | {"config", "result"}:
        if isinstance(row.get(key), str):
            with suppress(json.JSONDecodeError):
                row[key] = json.loads(row[key])
    return row
