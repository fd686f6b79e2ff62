"""The SQLite registry: WAL, short transactions, cancel requests, corrupt files."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from gadugi.errors import NotFoundError, RegistryError
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
