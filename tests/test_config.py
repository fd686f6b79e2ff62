"""Configuration precedence and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from gadugi.config import OrchestrationConfig, load_config
from gadugi.errors import ConfigError


def test_seed_defaults() -> None:
    cfg = OrchestrationConfig()
    assert (
        cfg.max_parallel_tasks,
        cfg.execution_timeout_hours,
        cfg.monitoring_interval_seconds,
        cfg.fallback_to_sequential,
        cfg.worktrees_dir,
        cfg.monitoring_dir,
    ) == (4, 2.0, 30.0, True, ".worktrees", ".gadugi/monitoring")
    assert cfg.agent == "claude"


def test_flags_beat_environment_beat_project_file(tmp_path: Path) -> None:
    (tmp_path / "gadugi.toml").write_text("max_parallel_tasks = 3\nretries = 2\nagent = 'shell'\n")
    env = {"GADUGI_MAX_PARALLEL": "5", "GADUGI_TIMEOUT_HOURS": "0.5"}
    cfg = load_config(tmp_path, {"max_parallel_tasks": 7}, env)
    assert cfg.max_parallel_tasks == 7
    assert cfg.execution_timeout_hours == 0.5
    assert cfg.retries == 2 and cfg.agent == "shell"
    assert load_config(tmp_path, {}, env).max_parallel_tasks == 5
    assert load_config(tmp_path, {}, {}).max_parallel_tasks == 3


def test_pyproject_tool_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[project]\nname='x'\n[tool.gadugi]\nretries = 4\n")
    assert load_config(tmp_path, {}, {}).retries == 4


def test_agent_cmd_alone_selects_the_command_agent(tmp_path: Path) -> None:
    cfg = load_config(tmp_path, {}, {"GADUGI_AGENT_CMD": "echo {task_id}"})
    assert cfg.agent == "command"


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("max_parallel_tasks = 0", "max_parallel_tasks"),
        ("max_parallel_tasks = 'four'", "max_parallel_tasks"),
        ("execution_timeout_hours = -1", "execution_timeout_hours"),
        ("agent = 'robot'", "agent"),
        ("worktrees_dir = '../elsewhere'", "worktrees_dir"),
        ("monitoring_dir = '/tmp/x'", "monitoring_dir"),
        ("unknown_key = 1", "unknown_key"),
        ("fallback_to_sequential = 'maybe'", "fallback_to_sequential"),
        ("agent = 'command'", "agent_cmd"),
        ("base_ref = '--upload-pack=evil'", "base_ref"),
    ],
)
def test_invalid_settings_name_the_key_and_file(tmp_path: Path, toml: str, key: str) -> None:
    (tmp_path / "gadugi.toml").write_text(toml + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, {}, {})
    assert err.value.key == key
    assert "gadugi.toml" in str(err.value)


def test_unparseable_project_file(tmp_path: Path) -> None:
    (tmp_path / "gadugi.toml").write_text("max_parallel_tasks = = 3\n")
    with pytest.raises(ConfigError, match="cannot be parsed"):
        load_config(tmp_path, {}, {})
