"""Planning (plan, footprint, intent) on real prompt files in a temporary folder."""

from __future__ import annotations

import ast
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gadugi.errors import PlanError
from gadugi.planning import footprint as footprint_module
from gadugi.planning.accuracy import plan_accuracy
from gadugi.planning.plan import Plan, analyze, render_plan, sequential_plan
from gadugi.planning.prompts import read_prompt
from gadugi.tasks import ConflictPolicy, Prompt

SOURCES = {
    "README.md": "# demo\n",
    ".github/workflows/ci.yml": "on: push\n",
    "docs/guide.md": "guide\n",
    "docs/api.md": "api\n",
    "src/my-pkg/data-file.json": "{}\n",
    "src/app/__init__.py": "",
    "src/app/auth.py": "from .db import connect\nimport app.util\n",
    "src/app/db.py": "import sqlite3\n\ndef connect() -> None: ...\n",
    "src/app/util.py": "from app import deep\n",
    "src/app/deep.py": "from . import deeper\n",
    "src/app/deeper.py": "",
    "src/app/web.py": "from app.auth import login\n",
    "src/app/broken.py": "def (:\n",
    "tests/test_auth.py": "from app import auth\n",
    "tests/test_web.py": "import app.web\n",
}


def write_repo(root: Path, sources: dict[str, str] | None = None) -> list[str]:
    files = SOURCES if sources is None else sources
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return sorted(files)


def prompts_from(root: Path, specs: dict[str, str]) -> list[Prompt]:
    """Write each prompt file under root/prompts and read it back in the given order."""
    (root / "prompts").mkdir(exist_ok=True)
    out = []
    for name, text in specs.items():
        path = root / "prompts" / name
        path.write_text(text, encoding="utf-8")
        out.append(read_prompt(path, root))
    return out


PlanFor = Callable[..., Plan]


@pytest.fixture
def plan_for(tmp_path: Path) -> PlanFor:
    files = write_repo(tmp_path)

    def make(specs: dict[str, str], max_parallel: int = 4) -> Plan:
        return analyze(prompts_from(tmp_path, specs), tmp_path, files, max_parallel)

    return make


def front(**meta: Any) -> str:
    return "---\n" + json.dumps(meta) + "\n---\n"


def by_id(plan: Plan) -> dict[str, Any]:
    return {t.task_id: t for t in plan.tasks}


# -- dependencies, waves, critical path ---------------------------------------------


def test_chain_runs_in_order_with_no_speedup(plan_for: PlanFor) -> None:
    plan = plan_for(
        {
            "a.md": front(estimate_minutes=10) + "# A\n",
            "b.md": front(depends_on=["a.md"], estimate_minutes=20) + "# B\n",
            "c.md": front(depends_on=["b"], estimate_minutes=30) + "# C\n",
        }
    )
    assert plan.waves == (("a",), ("b",), ("c",))
    assert plan.critical_path == ("a", "b", "c")
    assert by_id(plan)["c"].depends_on == ("b",)
    assert plan.estimated_sequential_minutes == 60
    assert plan.estimated_parallel_minutes == 60
    assert plan.estimated_speedup == 1.0


def test_diamond_waves_critical_path_and_parallel_estimate(plan_for: PlanFor) -> None:
    plan = plan_for(
        {
            "a.md": front(estimate_minutes=10) + "# A\n",
            "b.md": front(depends_on=["a"], estimate_minutes=20) + "# B\n",
            "c.md": front(depends_on=["a"], estimate_minutes=10) + "# C\n",
            "d.md": front(depends_on=["c.md", "b.md"], estimate_minutes=10) + "# D\n",
        },
        max_parallel=2,
    )
    assert plan.waves == (("a",), ("b", "c"), ("d",))
    assert plan.critical_path == ("a", "b", "d")
    assert by_id(plan)["d"].depends_on == ("b", "c")  # request order, not as written
    assert plan.estimated_sequential_minutes == 50
    assert plan.estimated_parallel_minutes == 40
    assert plan.estimated_speedup == 1.25


def test_one_slot_gives_no_speedup(plan_for: PlanFor) -> None:
    specs = {f"t{i}.md": front(estimate_minutes=5) + f"# T{i}\n" for i in range(4)}
    plan = plan_for(specs, max_parallel=1)
    # Waves are what the scheduler starts together: with one slot, one task at a time.
    assert plan.waves == (("t0",), ("t1",), ("t2",), ("t3",))
    assert plan.estimated_parallel_minutes == 20
    assert plan.estimated_speedup == 1.0


def test_dependency_names_as_ids_paths_files_and_stems(plan_for: PlanFor) -> None:
    plan = plan_for(
        {
            "setup-db.md": front(id="db") + "# Set up\n",
            "other.md": "# Other\n",
            "x1.md": front(depends_on=["setup-db.md"]) + "# X\n",
            "x2.md": front(depends_on=["prompts/setup-db.md"]) + "# X\n",
            "x3.md": front(depends_on=["setup-db"]) + "# X\n",
            "x4.md": front(depends_on="db") + "# X\n",
            "x5.md": "# X\n\nDepends on: `other.md` and `./prompts/setup-db.md`\n",
            "x6.md": "# X\n\n- **Depends on:** other, db.\n",
            "x7.md": "# X\n\nDepends-On:\n\n- setup-db.md\n- other.md\n\nMore text.\n",
            "x8.md": "# X\n\n**Depends on**: none\n",
        }
    )
    deps = {t.task_id: t.depends_on for t in plan.tasks}
    assert deps["x1"] == deps["x2"] == deps["x3"] == deps["x4"] == ("db",)
    assert deps["x5"] == deps["x6"] == deps["x7"] == ("db", "other")
    assert deps["x8"] == ()


def test_depends_on_in_prose_or_code_makes_no_dependency(plan_for: PlanFor) -> None:
    plan = plan_for(
        {
            "a.md": "# A\n",
            "b.md": (
                "# B\n\nThis depends on the weather.\nThe result depends on: a.md, mostly.\n"
                "```yaml\nDepends on: a.md\n```\n"
            ),
        }
    )
    assert by_id(plan)["b"].depends_on == ()
    assert plan.waves == (("a", "b"),)


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        (front(depends_on=["nope.md"]) + "# B\n", "nope.md"),
        ("# B\n\nDepends on: the database being ready\n", "the database being ready"),
    ],
)
def test_unknown_dependency_names_it(plan_for: PlanFor, text: str, missing: str) -> None:
    with pytest.raises(PlanError) as info:
        plan_for({"a.md": "# A\n", "b.md": text})
    assert repr(missing) in str(info.value)
    assert info.value.tasks == ["b", missing]
    assert info.value.exit_code == 2


def test_cycle_is_named_in_order_from_the_first_requested_member(plan_for: PlanFor) -> None:
    with pytest.raises(PlanError) as info:
        plan_for(
            {
                "entry.md": front(depends_on=["a"]) + "# Reaches the cycle at a\n",
                "b.md": front(depends_on=["c.md"]) + "# B\n",
                "a.md": "# A\n\nDepends on: b.md\n",
                "c.md": front(depends_on=["a"]) + "# C\n",
            }
        )
    assert "dependency cycle: b -> c -> a -> b" in str(info.value)
    assert info.value.tasks == ["b", "c", "a"]


def test_self_dependency_is_a_cycle(plan_for: PlanFor) -> None:
    with pytest.raises(PlanError, match=r"dependency cycle: a -> a\b") as info:
        plan_for({"a.md": front(depends_on=["a.md"]) + "# A\n"})
    assert info.value.tasks == ["a"]


def test_a_long_chain_does_not_hit_the_recursion_limit(tmp_path: Path) -> None:
    specs = {"t0.md": "# T\n"} | {
        f"t{i}.md": f"# T\n\nDepends on: t{i - 1}\n" for i in range(1, 1500)
    }
    plan = analyze(prompts_from(tmp_path, specs), tmp_path, [], 4)
    assert len(plan.waves) == 1500
    assert plan.critical_path[-1] == "t1499"


# -- footprints -------------------------------------------------------------------


def test_mentioned_paths_with_dots_dashes_and_punctuation(plan_for: PlanFor) -> None:
    plan = plan_for(
        {
            "a.md": (
                "# Tidy\n\nSee .github/workflows/ci.yml and `src/my-pkg/data-file.json`.\n"
                "Touch (README.md), then [the guide](docs/guide.md): and **src/app/db.py**.\n"
                "Line src/app/web.py:12 matters; ./src/app/deeper.py too. Edit the docs/ "
                "folder. Ignore src/app/missing.py, tests and e.g. version 3.11.\n"
            )
        }
    )
    assert plan.tasks[0].footprint == (
        ".github/workflows/ci.yml",
        "README.md",
        "docs/**",
        "docs/guide.md",
        "src/app/db.py",  # imports (auth.py, util.py) are not what the task changes
        "src/app/deeper.py",
        "src/app/web.py",
        "src/my-pkg/data-file.json",
    )


def test_sentence_final_dot_after_a_path(plan_for: PlanFor) -> None:
    plan = plan_for({"a.md": "# A\n\nChange docs/api.md.\n"})
    assert plan.tasks[0].footprint == ("docs/api.md",)


def test_declared_touches_are_the_whole_footprint(plan_for: PlanFor) -> None:
    plan = plan_for(
        {
            "a.md": front(touches=["src/auth/**", "docs"])
            + "# A\n\nCreate src/auth/forms.py, then fix src/app/web.py and README.md.\n"
        }
    )
    # Declared is authoritative: a directory becomes a glob, mentions and imports add nothing.
    assert plan.tasks[0].footprint == ("docs/**", "src/auth/**")


def test_declared_touches_narrow_a_footprint_out_of_a_conflict(plan_for: PlanFor) -> None:
    body = "# Doc pass\n\nDocument src/app/auth.py in docs/api.md.\n"
    wide = plan_for({"doc.md": body, "auth.md": "# Auth\n\nRewrite src/app/auth.py\n"})
    assert by_id(wide)["doc"].conflicts_with == ("auth",)
    narrow = plan_for(
        {
            "doc.md": front(touches=["docs/api.md"]) + body,
            "auth.md": "# Auth\n\nRewrite src/app/auth.py\n",
        }
    )
    assert by_id(narrow)["doc"].footprint == ("docs/api.md",)
    assert by_id(narrow)["doc"].conflicts_with == ()
    assert by_id(narrow)["auth"].conflicts_with == ()


def test_imports_follow_src_layout_and_relative_imports_two_levels(plan_for: PlanFor) -> None:
    specs = {"a.md": "# Flaky\n\nRepair tests/test_auth.py.\n"}
    for name in ("auth", "db", "util", "deep"):
        specs[f"{name}.md"] = f"# Edit {name}\n\nChange src/app/{name}.py.\n"
    plan = plan_for(specs)
    # test_auth -> app.auth -> (.db, app.util); util -> deep is a third level.
    assert footprint_module.IMPORT_DEPTH == 2
    assert plan.tasks[0].footprint == ("tests/test_auth.py",)
    assert plan.tasks[0].related_to == ("auth", "db", "util")
    assert plan.tasks[0].conflicts_with == ()


TRICKY_IMPORTS = """from app import (
    db,  # a comment (with a bracket
    util,
)
import app.web as w, \\
    app.deep
import json


def f() -> None:
    from .deeper import x


try:
    import app.auth
except ImportError:
    pass
"""


@pytest.mark.parametrize("preamble", ["", '"""Docs.\n\nimport the thing, then use it\n"""\n'])
def test_imports_in_brackets_continuations_and_blocks(tmp_path: Path, preamble: str) -> None:
    sources = {k: v for k, v in SOURCES.items() if k.startswith("src/")}
    sources["src/app/tricky.py"] = preamble + TRICKY_IMPORTS
    index = footprint_module.RepoIndex(tmp_path, write_repo(tmp_path, sources))
    assert index.imports("src/app/tricky.py") == {
        "src/app/db.py",
        "src/app/util.py",
        "src/app/web.py",
        "src/app/deep.py",
        "src/app/deeper.py",
        "src/app/auth.py",
    }


def test_unparsable_python_imports_nothing(plan_for: PlanFor) -> None:
    plan = plan_for({"a.md": "# A\n\nRepair src/app/broken.py\n"})
    assert plan.tasks[0].footprint == ("src/app/broken.py",)


def test_each_python_file_is_parsed_at_most_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = write_repo(tmp_path)
    parsed: Counter[str] = Counter()
    real_parse = ast.parse

    def counting_parse(*args: Any, **kw: Any) -> Any:
        parsed[str(kw.get("filename", args[1] if len(args) > 1 else ""))] += 1
        return real_parse(*args, **kw)

    monkeypatch.setattr(ast, "parse", counting_parse)
    mentions = "tests/test_web.py src/app/web.py tests/test_auth.py src/app/auth.py"
    specs = {f"t{i}.md": f"# T\n\nSee {mentions}\n" for i in range(5)}
    analyze(prompts_from(tmp_path, specs), tmp_path, files, 4)
    assert parsed
    assert max(parsed.values()) == 1


# -- conflicts --------------------------------------------------------------------


def test_conflict_through_a_declared_glob(plan_for: PlanFor) -> None:
    plan = plan_for(
        {
            "auth.md": front(touches=["src/app/*.py"]) + "# Auth\n",
            "db.md": "# DB\n\nChange src/app/db.py\n",
            "docs.md": "# Docs\n\nChange docs/api.md\n",
        }
    )
    tasks = by_id(plan)
    assert tasks["auth"].conflicts_with == ("db",)
    assert tasks["db"].conflicts_with == ("auth",)
    assert tasks["docs"].conflicts_with == ()


def test_glob_against_glob(plan_for: PlanFor) -> None:
    plan = plan_for(
        {
            "wide.md": front(touches=["src/**"]) + "# Wide\n",
            "new.md": front(touches=["src/newpkg/*.py"]) + "# New\n",  # no tracked file yet
            "newer.md": front(touches=["src/newpkg/extra_*.py"]) + "# Newer\n",
            "docs.md": front(touches=["docs/*.md"]) + "# Docs\n",
            "md.md": front(touches=["docs/**"]) + "# Md\n",
        }
    )
    tasks = by_id(plan)
    assert tasks["wide"].conflicts_with == ("new", "newer")
    assert tasks["new"].conflicts_with == ("newer", "wide")
    assert tasks["docs"].conflicts_with == ("md",)


def test_nested_prefixes_under_a_recursive_glob_overlap(plan_for: PlanFor) -> None:
    # Neither glob's sample path matches the other and no tracked file exists there.
    plan = plan_for(
        {
            "pkg.md": front(touches=["src/newpkg/**"]) + "# Pkg\n",
            "py.md": front(touches=["src/**/*.py"]) + "# Py\n",
            "other.md": front(touches=["lib/**"]) + "# Other\n",
        }
    )
    tasks = by_id(plan)
    assert tasks["pkg"].conflicts_with == ("py",)
    assert tasks["other"].conflicts_with == ()


def test_new_file_against_a_glob(plan_for: PlanFor) -> None:
    plan = plan_for(
        {
            "a.md": front(touches=["src/auth/**"]) + "# A\n\nCreate src/auth/forms.py\n",
            "b.md": front(touches=["src/auth/forms.py"]) + "# B\n",
            "c.md": front(touches=["src/auth/views.py"]) + "# C\n",
        }
    )
    tasks = by_id(plan)
    assert tasks["a"].conflicts_with == ("b", "c")
    assert tasks["b"].conflicts_with == ("a",)


def test_imports_relate_tasks_but_never_conflict_them(plan_for: PlanFor) -> None:
    plan = plan_for(
        {
            "fix-test.md": "# Flaky\n\nRepair tests/test_auth.py\n",
            "db.md": "# Schema\n\nChange `src/app/db.py`\n",
            "docs.md": "# Docs\n\nChange docs/api.md\n",
        }
    )
    tasks = by_id(plan)
    assert tasks["fix-test"].conflicts_with == tasks["db"].conflicts_with == ()
    assert tasks["fix-test"].related_to == ("db",)
    assert tasks["db"].related_to == ("fix-test",)
    assert tasks["docs"].related_to == ()
    text = render_plan(plan)
    assert "Related through imports (not conflicts): db ~ fix-test" in text


def test_sharing_only_an_import_is_no_conflict(plan_for: PlanFor) -> None:
    plan = plan_for(
        {
            "auth-test.md": "# Flaky\n\nRepair tests/test_auth.py\n",  # imports app/auth.py
            "web.md": "# Web\n\nRepair src/app/web.py\n",  # imports app/auth.py too
            "auth.md": "# Auth\n\nRewrite src/app/auth.py\n",
        }
    )
    tasks = by_id(plan)
    assert "src/app/auth.py" not in tasks["auth-test"].footprint
    assert tasks["auth-test"].conflicts_with == tasks["web"].conflicts_with == ()
    assert tasks["auth-test"].related_to == tasks["web"].related_to == ("auth",)
    assert tasks["auth"].related_to == ("auth-test", "web")


def test_dependent_tasks_are_not_listed_as_conflicting(plan_for: PlanFor) -> None:
    plan = plan_for(
        {
            "a.md": "# A\n\nEdit README.md\n",
            "b.md": "# B\n\nDepends on: a.md\n",
            "c.md": "# C\n\nDepends on: b.md\n\nEdit README.md\n",
            "d.md": "# D\n\nEdit README.md\n",
        }
    )
    tasks = by_id(plan)
    assert tasks["a"].conflicts_with == ("d",)
    assert tasks["c"].conflicts_with == ("d",)
    assert tasks["d"].conflicts_with == ("a", "c")


def test_conflicts_serialize_the_parallel_estimate(plan_for: PlanFor) -> None:
    apart = plan_for({n: front(estimate_minutes=10) + f"# {n}\n" for n in ("a.md", "b.md")})
    together = plan_for(
        {n: front(estimate_minutes=10) + "# T\n\nEdit README.md\n" for n in ("c.md", "d.md")}
    )
    assert apart.estimated_parallel_minutes == 10
    assert together.estimated_parallel_minutes == 20
    assert together.estimated_speedup == 1.0


# -- classification and estimates -------------------------------------------------


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("# Improve prefix handling\n\nThe debug output and attestation flow.\n", "feature"),
        ("# Fix the login crash\n\nAdd a check.\n", "bug fix"),
        ("# Login\n\nThere is a bug: the form is broken.\n", "bug fix"),
        ("# Testing the parser\n", "tests"),
        ("# Add tests for the parser\n", "tests"),
        ("# Login\n\nEdit tests/test_auth.py and test_auth in `test` mode.\n", "feature"),
        ("# Update the README\n", "docs"),
        ("# Parser\n\nRefactor it: extract a helper.\n", "refactor"),
        ("# Set up CI\n", "config"),
        (front(type="docs") + "# Fix the crash\n", "docs"),
    ],
)
def test_type_from_whole_words(plan_for: PlanFor, text: str, kind: str) -> None:
    assert plan_for({"t.md": text}).tasks[0].type == kind


def test_estimates_follow_type_and_length_unless_given(plan_for: PlanFor) -> None:
    words = " ".join(["word"] * 299)
    plan = plan_for(
        {
            "short.md": "# Login\n",
            "long.md": f"# Login\n{words}\n",
            "huge.md": "# Login\n" + "word " * 10_000,
            "doc.md": f"# Docs\n{words}\n",
            "given.md": front(estimate_minutes=7.5) + f"# Login\n{words}\n",
        }
    )
    tasks = by_id(plan)
    assert tasks["short"].estimate_minutes == 30
    assert tasks["long"].estimate_minutes == 60  # a 300-word feature is an hour
    assert tasks["huge"].estimate_minutes == 120  # capped
    assert tasks["doc"].estimate_minutes < tasks["long"].estimate_minutes
    assert tasks["given"].estimate_minutes == 7.5


# -- output -----------------------------------------------------------------------


def test_to_json_has_exactly_the_product_shape(plan_for: PlanFor) -> None:
    plan = plan_for(
        {
            "a.md": front(priority=3, touches=["docs/**"]) + "# A\n",
            "b.md": "# B\n\nDepends on: a.md\n",
        }
    )
    data = json.loads(json.dumps(plan.to_json()))
    assert set(data) == {
        "max_parallel",
        "conflict_policy",
        "tasks",
        "waves",
        "critical_path",
        "estimated_sequential_minutes",
        "estimated_parallel_minutes",
        "estimated_speedup",
    }
    assert data["tasks"][0] == {
        "task_id": "a",
        "prompt_file": "prompts/a.md",
        "title": "A",
        "type": "feature",
        "estimate_minutes": 30.0,
        "priority": 3,
        "footprint": ["docs/**"],
        "depends_on": [],
        "conflicts_with": [],
        "related_to": [],
    }
    assert data["tasks"][1]["depends_on"] == ["a"]
    assert data["waves"] == [["a"], ["b"]]
    assert data["critical_path"] == ["a", "b"]
    assert data["max_parallel"] == 4


def test_slots_carry_order_priority_dependencies_and_conflicts(plan_for: PlanFor) -> None:
    plan = plan_for(
        {
            "a.md": front(priority=5) + "# A\n\nEdit README.md\n",
            "b.md": "# B\n\nEdit README.md\n",
            "c.md": "# C\n\nDepends on: a\n",
        }
    )
    slots = plan.slots()
    assert [s.task_id for s in slots] == ["a", "b", "c"]
    assert [s.order for s in slots] == [0, 1, 2]
    assert slots[0].priority == 5
    assert slots[0].conflicts_with == frozenset({"b"})
    assert slots[1].conflicts_with == frozenset({"a"})
    assert slots[2].depends_on == ("a",)


def test_render_plan_shows_tasks_waves_and_speedup_within_100_columns(
    plan_for: PlanFor,
) -> None:
    long_id = "a-very-long-task-identifier-that-goes-on-and-on"
    plan = plan_for(
        {
            "a.md": front(estimate_minutes=10) + "# A\n\nEdit README.md and docs/\n",
            f"{long_id}.md": front(estimate_minutes=10) + "# L\n\nDepends on: a.md\n",
            "c.md": front(estimate_minutes=10) + "# C\n",
        }
    )
    text = render_plan(plan)
    assert text == render_plan(plan)
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 100
    assert "  1: a, c" in lines
    assert any(line.startswith("  2: a-very-long-task") for line in lines)
    assert any(line.startswith("Critical path: a -> a-very-long") for line in lines)
    assert "speedup 1.5x" in text
    row = next(line for line in lines if line.startswith("a "))
    assert "docs/**" in row and "10m" in row


def test_render_plan_fits_long_paths_and_many_entries(tmp_path: Path) -> None:
    long_dir = "src/" + "/".join(["a-rather-long-directory-name"] * 3)
    sources = {f"{long_dir}/m{i}.md": "" for i in range(12)}
    files = write_repo(tmp_path, sources)
    mentions = " ".join(sources)
    prompts = prompts_from(
        tmp_path,
        {f"t{i}.md": f"# T\n\nEdit {mentions}\n" for i in range(8)},
    )
    text = render_plan(analyze(prompts, tmp_path, files, 2))
    assert max(len(line) for line in text.splitlines()) <= 100
    row = next(line for line in text.splitlines() if line.startswith("t0 "))
    assert " t1, t2, t3 (+4) " in row  # conflicts: as many as fit, then how many more
    assert row.endswith("... (+11)")  # one long path, cut, then the other eleven


def test_sequential_plan_runs_the_request_one_at_a_time(tmp_path: Path) -> None:
    prompts = prompts_from(
        tmp_path, {"b.md": "# B\n\nEdit README.md\n", "a.md": "# A\n", "c.md": "# C\n"}
    )
    plan = sequential_plan(prompts)
    assert [t.depends_on for t in plan.tasks] == [(), (), ()]
    assert plan.max_parallel == 1
    assert plan.waves == (("b",), ("a",), ("c",))
    assert all(t.footprint == () and t.conflicts_with == () for t in plan.tasks)
    assert plan.estimated_speedup == 1.0
    assert plan.estimated_parallel_minutes == plan.estimated_sequential_minutes


def test_no_prompts_and_bad_parallelism(tmp_path: Path) -> None:
    empty = analyze([], tmp_path, [], 2)
    assert empty.tasks == () and empty.waves == () and empty.critical_path == ()
    assert empty.estimated_speedup == 1.0
    with pytest.raises(PlanError, match="max_parallel"):
        analyze([], tmp_path, [], 0)


@pytest.mark.parametrize(
    ("policy", "waves", "minutes"),
    [
        (ConflictPolicy.STACK, (("a", "c"), ("b",)), 20),
        (ConflictPolicy.SERIALIZE, (("a", "c"), ("b",)), 20),
        (ConflictPolicy.OPTIMISTIC, (("a", "b", "c"),), 10),
    ],
)
def test_waves_simulate_the_conflict_policy(
    tmp_path: Path, policy: ConflictPolicy, waves: tuple[tuple[str, ...], ...], minutes: float
) -> None:
    files = write_repo(tmp_path)
    specs = {
        "a.md": front(estimate_minutes=10) + "# A\n\nEdit README.md\n",
        "b.md": front(estimate_minutes=10) + "# B\n\nEdit README.md\n",
        "c.md": front(estimate_minutes=5) + "# C\n\nEdit docs/api.md\n",
    }
    plan = analyze(prompts_from(tmp_path, specs), tmp_path, files, 4, policy)
    assert plan.waves == waves
    assert plan.estimated_parallel_minutes == minutes
    assert plan.to_json()["conflict_policy"] == policy.value
    stacked = {s.task_id: s.after for s in plan.slots()}
    assert stacked["b"] == (("a",) if policy is ConflictPolicy.STACK else ())


def test_plan_accuracy_counts_only_judged_pairs() -> None:
    predicted = {"a": ["b", "c"], "b": ["a"], "c": ["a"], "d": []}
    changed = {"a": ["x.py"], "b": ["y.py"], "d": ["x.py", "z.py"]}  # c did not complete
    assert plan_accuracy(predicted, changed) == {
        "predicted_pairs": [["a", "b"]],
        "actual_pairs": [["a", "d"]],
        "precision": 0.0,
        "recall": 0.0,
    }
    nothing = plan_accuracy({"a": [], "b": []}, {"a": ["x"], "b": ["y"]})
    assert nothing["precision"] is None and nothing["recall"] is None
