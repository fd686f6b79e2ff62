"""Configuration precedence and validation."""

from __future__ import annotations

import resource
from pathlib import Path

import pytest

from gadugi.config import OrchestrationConfig, load_config, machine_memory_mb
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


FLOAT_KEYS = [
    "execution_timeout_hours",
    "monitoring_interval_seconds",
    "retry_base_delay_seconds",
    "kill_grace_seconds",
    "stall_timeout_minutes",
    "max_load_per_cpu",
]


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_non_finite_numbers_are_refused(tmp_path: Path, key: str, value: str) -> None:
    (tmp_path / "gadugi.toml").write_text(f"{key} = {value}\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, {}, {})
    assert err.value.key == key and "gadugi.toml" in str(err.value)


@pytest.mark.parametrize("key", FLOAT_KEYS)
def test_non_finite_flags_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, {key: float("nan")}, {})
    assert err.value.key == key and "command-line flags" in str(err.value)


def test_a_number_too_large_for_a_float_is_refused(tmp_path: Path) -> None:
    (tmp_path / "gadugi.toml").write_text(f"kill_grace_seconds = {10**400}\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, {}, {})
    assert err.value.key == "kill_grace_seconds"


def test_memory_settings_are_bounded_by_the_machine(tmp_path: Path) -> None:
    total = machine_memory_mb()
    assert OrchestrationConfig(min_available_memory_mb=total - 1).min_available_memory_mb
    for key, value in (("min_available_memory_mb", total), ("memory_limit_mb", total + 1)):
        (tmp_path / "gadugi.toml").write_text(f"{key} = {value}\n")
        with pytest.raises(ConfigError) as err:
            load_config(tmp_path, {}, {})
        assert err.value.key == key and str(total) in err.value.reason


def test_open_files_limit_is_bounded_by_the_hard_limit() -> None:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    assert OrchestrationConfig(open_files_limit=hard).open_files_limit == hard
    with pytest.raises(ConfigError) as err:
        OrchestrationConfig(open_files_limit=hard + 1)
    assert err.value.key == "open_files_limit" and str(hard) in err.value.reason


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ('claude_model = "a\\u0000b"', "claude_model"),
        ('codex_extra_args = ["ok", "a\\u0000b"]', "codex_extra_args"),
        ('agent_cmd = "true \\u0000"', "agent_cmd"),
    ],
)
def test_nul_bytes_in_settings_are_refused(tmp_path: Path, toml: str, key: str) -> None:
    (tmp_path / "gadugi.toml").write_text(toml + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, {}, {})
    assert err.value.key == key and "NUL" in err.value.reason


@pytest.mark.parametrize(
    "template", ["true {task_id:d}", "true {task_id!r}", "true {branch:>9}", "true {x}", "true {"]
)
def test_agent_cmd_placeholders_are_checked_at_load(tmp_path: Path, template: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path, {}, {"GADUGI_AGENT_CMD": template})
    assert err.value.key == "agent_cmd" and "GADUGI_AGENT_CMD" in str(err.value)
