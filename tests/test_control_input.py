"""Budgets, cost caps and usage-limit margins: bad values exit 2 and change nothing; the
summary line says what was spent and waited."""

from __future__ import annotations

import pytest

from conftest import Repo, run_cli
from gadugi.cli.main import _accounts_lines
from gadugi.coordinator import OrchestrationResult


@pytest.mark.parametrize(
    ("flags", "said"),
    [
        (["--budget-usd", "nan"], "budget_usd"),
        (["--budget-usd", "inf"], "budget_usd"),
        (["--budget-usd", "0"], "budget_usd"),
        (["--budget-usd", "-1"], "budget_usd"),
        (["--budget-usd", "ten"], "--budget-usd"),
        (["--budget-hard"], "budget_hard"),
    ],
)
def test_a_bad_budget_flag_exits_2_and_creates_nothing(
    repo: Repo, flags: list[str], said: str
) -> None:
    repo.shell_prompt("a.md", "true")
    repo.commit()
    before = repo.snapshot()
    done = run_cli(["run", "--agent", "shell", *flags, "a"], repo.root)
    assert done.returncode == 2, done.stdout + done.stderr
    assert said in done.stderr
    assert repo.snapshot() == before


@pytest.mark.parametrize(
    "setting",
    ['budget_usd = "lots"', "budget_usd = nan", "usage_limit_margin_seconds = -1",
     "budget_hard = true"],
)  # fmt: skip
def test_a_bad_budget_setting_exits_2_naming_the_key(repo: Repo, setting: str) -> None:
    (repo.root / "gadugi.toml").write_text(setting + "\n")
    repo.shell_prompt("a.md", "true")
    repo.commit()
    done = run_cli(["run", "--agent", "shell", "a"], repo.root)
    assert done.returncode == 2, done.stdout + done.stderr
    assert setting.split(" ", maxsplit=1)[0] in done.stderr
    assert not (repo.root / ".gadugi").exists()


@pytest.mark.parametrize("value", ["0", "-2", ".nan", ".inf", "true", "cheap", "[1]"])
def test_a_bad_max_cost_usd_exits_2_naming_the_key(repo: Repo, value: str) -> None:
    repo.shell_prompt("a.md", "true", front=f"max_cost_usd: {value}")
    repo.commit()
    done = run_cli(["run", "--agent", "shell", "a"], repo.root)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "max_cost_usd" in done.stderr
    assert not (repo.root / ".gadugi").exists()


def _result(**fields: object) -> OrchestrationResult:
    base: dict[str, object] = {
        "orchestration_id": "orch-x",
        "started_at": None,
        "finished_at": None,
        "total_tasks": 0,
        "successful_tasks": 0,
        "failed_tasks": 0,
        "execution_time_seconds": 1.0,
        "parallel_speedup": 1.0,
        "fallback_used": False,
        "error_summary": [],
    }
    return OrchestrationResult(**{**base, **fields})  # type: ignore[arg-type]


def test_the_summary_says_what_was_spent_and_waited_only_when_there_is_something() -> None:
    assert _accounts_lines(_result()) == []
    lines = _accounts_lines(
        _result(
            budget_usd=0.5,
            spent_usd=0.0135,
            waited_seconds={"load": 134.2, "usage_limit": 61.04, "memory": 0.0},
        )
    )
    assert lines == [
        "budget: $0.0135 of $0.5 spent",
        "waited for admission: load 134.2s, usage limit 61.0s",
    ]
