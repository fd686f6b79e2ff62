"""The SQLite registry: WAL, short transactions, cancel requests, corrupt files."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pytest

from conftest import Repo, run_cli
from gadugi import registry as registry_module
from gadugi.errors import (
    NotFoundError,
    RegistryCorruptError,
    RegistryError,
    RegistryFullError,
    RegistryLockedError,
)
from gadugi.lifecycle import Transition
from gadugi.registry import Registry
from gadugi.tasks import TaskStatus

Q, R = TaskStatus.QUEUED, TaskStatus.RUNNING


def _seed(reg: Registry, orch: str = "orch-1") -> None:
    reg.create_orchestration(
        orch,
        Path("/p"),
        "abc",
        {"x": 1},
        1,
        2.0,
        False,
        [
            {"task_id": "a", "name": "A", "prompt_file": "prompts/a.md", "depends_on": ["b"]},
            {"task_id": "b", "name": "B", "prompt_file": "prompts/b.md"},
        ],
    )


def test_wal_mode_and_round_trip(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "state.db")
    _seed(reg)
    assert reg.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    reg.transition("orch-1", Transition("a", Q, R), 1.0, agent={"turns": 3}, pid=42)
    rows = reg.tasks("orch-1")
    assert [r["task_id"] for r in rows] == ["a", "b"]
    assert rows[0]["agent"] == {"turns": 3} and rows[0]["depends_on"] == ["b"]
    assert reg.orchestration()["config"] == {"x": 1}
    assert reg.find_task("b")["orchestration_id"] == "orch-1"
    with pytest.raises(NotFoundError):
        reg.find_task("zzz")
    with pytest.raises(NotFoundError):
        reg.orchestration("orch-404")


def test_cancel_requests_only_for_unfinished_tasks(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "state.db")
    _seed(reg)
    other = Registry(tmp_path / "state.db")
    other.request_cancel("orch-1", "a", "someone")
    other.request_cancel("orch-1", "b", "someone")
    reg.transition("orch-1", Transition("b", Q, R), 1.0)
    reg.transition("orch-1", Transition("b", R, TaskStatus.COMPLETED), 2.0)
    assert reg.cancel_requests("orch-1") == {"a": "someone"}


def test_readers_in_other_threads_never_see_locked(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    writer = Registry(path)
    _seed(writer)
    errors: list[BaseException] = []

    def read() -> None:
        try:
            reader = Registry(path, readonly=True)
            for _ in range(200):
                assert len(reader.tasks("orch-1")) == 2
            reader.close()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(8)]
    for t in threads:
        t.start()
    for n in range(300):
        writer.update_task("orch-1", "a", last_heartbeat=float(n))
    for t in threads:
        t.join()
    assert errors == []


@pytest.mark.parametrize("content", [b"this is not a database at all" * 100, b""])
def test_a_corrupt_registry_is_reported_and_left_alone(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "state.db"
    good = Registry(path)
    _seed(good)
    good.close()
    if content:
        path.write_bytes(content)
    else:  # truncated in the middle of the file
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2] + b"\x00garbage" * 50)
        for extra in ("-wal", "-shm"):
            Path(str(path) + extra).unlink(missing_ok=True)
    before = path.read_bytes()
    with pytest.raises(RegistryError, match="left as it is"):
        reg = Registry(path)
        reg.tasks("orch-1")
        reg.orchestration()
    assert path.read_bytes() == before


def test_a_foreign_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE other (x)")
    conn.commit()
    conn.close()
    with pytest.raises(RegistryError, match="not a gadugi registry"):
        Registry(path)


def test_readonly_open_of_a_missing_registry(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no orchestrations yet"):
        Registry(tmp_path / "nope.db", readonly=True)
    assert not (tmp_path / "nope.db").exists()


def test_a_registry_from_an_earlier_build_gains_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Registry(path).close()
    conn = sqlite3.connect(path)  # take it back to how the first builds wrote it
    conn.execute("ALTER TABLE orchestrations DROP COLUMN note")
    conn.execute("ALTER TABLE tasks DROP COLUMN conflicts_with")
    conn.commit()
    conn.close()
    reg = Registry(path)
    _seed(reg)
    assert reg.orchestration()["note"] is None
    assert reg.tasks("orch-1")[0]["conflicts_with"] == []


def test_a_failed_transaction_changes_nothing(tmp_path: Path) -> None:
    reg = Registry(tmp_path / "state.db")
    _seed(reg)
    with pytest.raises(RuntimeError, match="second step"), reg.transaction() as c:
        c.execute("UPDATE tasks SET status = 'failed' WHERE orchestration_id = 'orch-1'")
        raise RuntimeError("the second step failed")
    assert {r["status"] for r in reg.tasks("orch-1")} == {"queued"}
    reg.set_note("orch-1", "still usable")  # no transaction was left open
    assert Registry(tmp_path / "state.db", readonly=True).orchestration()["note"] == "still usable"


# -- what is at the registry's place ------------------------------------------------


def _beside(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir())


def _garbage(path: Path) -> None:
    path.write_bytes(b"this is not a database at all" * 100)


def _truncated(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + b"\x00garbage" * 50)


def _bad_schema_page(path: Path) -> None:
    """A valid header over a first page whose schema table is overwritten."""
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)
    path.write_bytes(bytes(data))


DAMAGE = {"garbage": _garbage, "truncated": _truncated, "bad schema page": _bad_schema_page}


@pytest.mark.parametrize("readonly", [True, False], ids=["read-only", "read-write"])
@pytest.mark.parametrize("damage", list(DAMAGE))
def test_refusing_a_damaged_registry_creates_nothing_beside_it(
    tmp_path: Path, damage: str, readonly: bool
) -> None:
    path = tmp_path / "state.db"
    good = Registry(path)
    _seed(good)
    good.close()
    DAMAGE[damage](path)
    before = path.read_bytes()
    with pytest.raises(RegistryError, match="Move it aside") as caught:
        reg = Registry(path, readonly=readonly)
        try:
            reg.tasks("orch-1")
            reg.orchestration()
        finally:
            reg.close()
    assert isinstance(caught.value, RegistryCorruptError)
    assert _beside(path) == ["state.db"]
    assert path.read_bytes() == before


def test_reading_a_good_registry_creates_nothing_beside_it(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    writer = Registry(path)
    _seed(writer)
    writer.close()
    assert _beside(path) == ["state.db"]
    reader = Registry(path, readonly=True)
    assert len(reader.tasks("orch-1")) == 2
    with pytest.raises(RegistryError, match="readonly"):
        reader.set_note("orch-1", "a reader must not write")
    reader.close()
    assert _beside(path) == ["state.db"]
    assert Registry(path, readonly=True).orchestration()["note"] is None


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _directory(path: Path) -> None:
    path.mkdir()


def _socket(path: Path) -> None:
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()


def _symlink_loop(path: Path) -> None:
    os.symlink(path.name, path)


def _dangling_symlink(path: Path) -> None:
    os.symlink("nowhere.db", path)


def _empty(path: Path) -> None:
    path.write_bytes(b"")


NOT_A_FILE = {
    "directory": (_directory, "a directory"),
    "socket": (_socket, "a socket"),
    "symlink loop": (_symlink_loop, "symbolic links"),
    "dangling symlink": (_dangling_symlink, "a symbolic link to nothing"),
    "empty file": (_empty, "empty"),
}


@pytest.mark.parametrize("readonly", [True, False], ids=["read-only", "read-write"])
@pytest.mark.parametrize("kind", list(NOT_A_FILE))
def test_what_is_not_a_registry_file_is_refused_and_left_alone(
    tmp_path: Path, kind: str, readonly: bool
) -> None:
    path = tmp_path / "state.db"
    make, words = NOT_A_FILE[kind]
    make(path)
    with pytest.raises(RegistryCorruptError, match=words) as caught:
        Registry(path, readonly=readonly).close()
    assert str(path) in str(caught.value) and "left as it is" in str(caught.value)
    assert _beside(path) == ["state.db"]


@pytest.mark.parametrize("args", [["status"], ["export", "-o", "out.json"], ["run", "a"]])
def test_a_fifo_at_the_registry_is_refused_at_once(repo: Repo, args: list[str]) -> None:
    repo.shell_prompt("a.md", "true")
    repo.commit()
    (repo.root / ".gadugi").mkdir()
    os.mkfifo(repo.root / ".gadugi/state.db")
    before = repo.snapshot()
    proc = run_cli([*args, "--agent", "shell"] if args[0] == "run" else args, repo.root, timeout=30)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "named pipe" in proc.stderr and "state.db" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert repo.snapshot() == before


COMMANDS = [
    ["status"],
    ["status", "--json"],
    ["export", "-o", "out.json"],
    ["run", "--agent", "shell", "a"],
    ["resume"],
    ["retry", "a"],
    ["cancel", "a"],
    ["cleanup"],
    ["cleanup", "--dry-run"],
    ["doctor"],
]


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "bad schema page"])
@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_no_command_leaves_wal_or_shm_beside_a_damaged_registry(
    repo: Repo, damage: str, args: list[str]
) -> None:
    repo.shell_prompt("a.md", "true")
    repo.commit()
    db = repo.root / ".gadugi/state.db"
    good = Registry(db)
    _seed(good)
    good.close()
    DAMAGE[damage](db)
    before = repo.snapshot()
    proc = run_cli(args, repo.root)
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert _beside(db) == ["state.db"]
    assert repo.snapshot() == before


# -- a lock held elsewhere, a full disk ----------------------------------------------

HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
if sys.argv[2] == "exclusive":
    conn.execute("PRAGMA locking_mode = EXCLUSIVE")
conn.execute("BEGIN IMMEDIATE")
conn.execute("UPDATE orchestrations SET note = 'held'")
print("held", flush=True)
sys.stdin.read()
"""


@contextmanager
def _lock_held(path: Path, how: str) -> Iterator[None]:
    """Another process in a long write transaction, or holding an exclusive lock."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), how],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        yield
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)


def _assert_locked(exc: RegistryError) -> None:
    assert isinstance(exc, RegistryLockedError)
    message = str(exc)
    assert "locked by another process" in message and "Move it aside" not in message


def test_a_write_transaction_held_elsewhere_is_reported_as_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "state.db"
    reg = Registry(path)
    _seed(reg)
    with _lock_held(path, "immediate"):
        with pytest.raises(RegistryError) as caught:
            reg.set_note("orch-1", "mine")
        _assert_locked(caught.value)
        assert len(Registry(path, readonly=True).tasks("orch-1")) == 2  # readers go on
    reg.set_note("orch-1", "mine")  # the lock gone, the same connection writes again
    assert reg.orchestration()["note"] == "mine"


def test_an_exclusive_lock_held_elsewhere_is_reported_as_locked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(registry_module, "BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "state.db"
    reg = Registry(path)
    _seed(reg)
    reg.close()
    with _lock_held(path, "exclusive"):
        for readonly in (True, False):
            with pytest.raises(RegistryError) as caught:
                Registry(path, readonly=readonly).tasks("orch-1")
            _assert_locked(caught.value)
    assert len(Registry(path, readonly=True).tasks("orch-1")) == 2


@pytest.mark.slow
def test_status_names_a_held_lock_and_gives_no_advice_to_move_the_file(repo: Repo) -> None:
    db = repo.root / ".gadugi/state.db"
    reg = Registry(db)
    _seed(reg)
    reg.close()
    with _lock_held(db, "exclusive"):
        proc = run_cli(["status"], repo.root)  # waits out the busy timeout first
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "locked by another process" in proc.stderr, proc.stderr
    assert "Move it aside" not in proc.stderr and "Traceback" not in proc.stderr


def _assert_full(exc: RegistryError) -> None:
    assert isinstance(exc, RegistryFullError)
    message = str(exc)
    assert "full" in message and "Move it aside" not in message


def test_a_registry_at_its_size_limit_is_reported_as_full(tmp_path: Path) -> None:
    """SQLite's own SQLITE_FULL, reached through a page limit instead of a full disk."""
    reg = Registry(tmp_path / "state.db")
    _seed(reg)
    pages = reg.conn.execute("PRAGMA page_count").fetchone()[0]
    reg.conn.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(RegistryError) as caught:
        reg.update_task("orch-1", "a", last_line="x" * 200_000)
    _assert_full(caught.value)
    assert reg.tasks("orch-1")[0]["last_line"] is None
    reg.update_task("orch-1", "a", last_line="short")  # small writes still fit
    assert reg.tasks("orch-1")[0]["last_line"] == "short"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs of its own, so filling it up touches nothing else."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {proc.stderr.strip()}")
    try:
        yield mount
    finally:
        # lazily: a connection a failed test left open must not keep the mount
        subprocess.run(["umount", "--lazy", str(mount)], check=True)


def _fill(disk: Path) -> Path:
    filler = disk / "filler"
    with filler.open("ab", buffering=0) as fh, suppress(OSError):
        while True:
            fh.write(b"\0" * 65536)
    return filler


def test_creating_a_registry_on_a_full_disk_is_reported_and_leaves_nothing(
    small_disk: Path,
) -> None:
    _fill(small_disk)
    with pytest.raises(RegistryError) as caught:
        Registry(small_disk / ".gadugi" / "state.db")
    _assert_full(caught.value)
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]


def test_a_full_disk_under_a_registry_is_reported_as_full(small_disk: Path) -> None:
    path = small_disk / "state.db"
    reg = Registry(path)
    _seed(reg)
    filler = _fill(small_disk)
    with pytest.raises(RegistryError) as caught:
        reg.update_task("orch-1", "a", last_line="x" * 200_000)
    _assert_full(caught.value)
    filler.unlink()
    assert [r["last_line"] for r in reg.tasks("orch-1")] == [None, None]
    reg.update_task("orch-1", "a", last_line="x" * 200_000)  # with space, the same one works
    reg.close()
    assert _beside(path) == ["state.db"]

    # Opening needs room for SQLite's shared-memory file, which SQLite reports as an I/O error.
    filler = _fill(small_disk)
    for readonly in (True, False):
        with pytest.raises(RegistryError) as caught:
            Registry(path, readonly=readonly).tasks("orch-1")
        _assert_full(caught.value)
    filler.unlink()
    reader = Registry(path, readonly=True)
    assert reader.tasks("orch-1")[0]["last_line"] == "x" * 200_000
    reader.close()
    assert _beside(path) == ["state.db"]


def test_a_registry_from_an_earlier_build_gains_the_index_of_the_live_views(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    Registry(path).close()
    conn = sqlite3.connect(path)
    conn.execute("DROP INDEX orchestrations_by_finish")
    conn.commit()
    conn.close()
    reg = Registry(path)
    plan = " ".join(
        row[3]
        for row in reg.conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM orchestrations"
            " WHERE finished_at IS NULL OR finished_at >= 0"
        )
    )
    assert "orchestrations_by_finish" in plan


def test_a_second_registry_keeps_the_locks_of_a_live_one(repo: Repo) -> None:
    # Closing a descriptor drops every POSIX lock the process holds on that file: were the
    # second open to read the header again, the writer below, closing last as far as it
    # can tell, would checkpoint and delete the -wal and -shm the live reader maps.
    repo.shell_prompt("a.md", "true")
    repo.commit()
    assert run_cli(["run", "--agent", "shell", "--quiet", "--all"], repo.root).returncode == 0
    db = repo.root / ".gadugi" / "state.db"
    live = Registry(db, readonly=True)
    try:
        live.orchestration()  # a read: it now maps the -shm
        Registry(db, readonly=True).close()
        writer = "\n".join(
            [
                "import sys",
                "from pathlib import Path",
                "from gadugi.registry import Registry",
                "r = Registry(Path(sys.argv[1]))",
                "r.set_note(r.orchestration()['id'], 'written')",
                "r.close()",
            ]
        )
        subprocess.run([sys.executable, "-c", writer, str(db)], check=True)
        assert Path(f"{db}-shm").exists()
        assert live.orchestration()["note"] == "written"
    finally:
        live.close()
