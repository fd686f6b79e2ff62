"""Parsing requests and resolving prompt names: every accepted format, every refusal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gadugi.planning.request import parse_request, resolve_names


@pytest.mark.parametrize(
    "text",
    [
        "Execute these specific prompts in parallel:\n- a.md\n- b.md\n",
        "Execute these prompt files:\n1. a.md\n2. b.md\n",
        "Execute these prompts: a.md, b.md",
        "a.md\nb.md\n",
        "* a.md\n+ b.md\n",
        "- `a.md`\n- `b.md`\n",
        "1) a\n2) b\n",
        "Run `a.md` and `b.md` please",
        "Execute these prompts: a.md, b.md and nothing else",
        "a.md, b.md, a.md",
    ],
)
def test_every_request_format_names_the_same_prompts(text: str) -> None:
    names = parse_request(text)
    assert [n.removesuffix(".md") for n in names] == ["a", "b"]


def test_prefixes_and_order_are_kept() -> None:
    assert parse_request("- prompts/x.md\n- y\n") == ["prompts/x.md", "y"]


def test_prose_lines_are_not_names() -> None:
    assert parse_request("Please run the following now\n\n# heading\n") == []


@pytest.fixture
def project(tmp_path: Path) -> Path:
    root = tmp_path / "proj"
    (root / "prompts/sub").mkdir(parents=True)
    (root / "prompts/a.md").write_text("# a")
    (root / "prompts/sub/b.md").write_text("# b")
    (root / "prompts/notes.txt").write_text("x")
    (root / "docs").mkdir()
    (root / "docs/c.md").write_text("# c")
    (tmp_path / "secret.md").write_text("# secret")
    os.symlink(tmp_path / "secret.md", root / "prompts/link.md")
    return root


def test_names_resolve_inside_prompts(project: Path) -> None:
    res = resolve_names(["a", "a.md", "prompts/a.md", "sub/b"], project)
    assert res.paths == [project / "prompts/a.md", project / "prompts/sub/b.md"]
    assert any("more than once" in p for p in res.problems)


def test_command_line_paths_may_point_anywhere_inside_the_project(project: Path) -> None:
    res = resolve_names(["docs/c.md", str(project / "docs/c.md")], project, cwd=project)
    assert res.paths == [project / "docs/c.md"]
    escape = resolve_names(["../secret.md"], project, cwd=project)
    assert escape.paths == [] and "outside the project" in escape.problems[0]


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("missing", "not found"),
        ("notes.txt", "not a Markdown"),
        ("../secret.md", "with '..'"),
        ("../../etc/passwd", "with '..'"),
        ("link.md", "outside the project"),
        ("sub", "is a directory"),
        ("/etc/hostname", "outside the project"),
        ("a\x00.md", "not a usable file name"),
    ],
)
def test_unusable_names_are_reported_and_skipped(project: Path, name: str, reason: str) -> None:
    res = resolve_names([name, "a"], project)
    assert res.paths == [project / "prompts/a.md"]
    assert len(res.problems) == 1 and reason in res.problems[0], res.problems
    assert res.problems[0].startswith(name)
