"""Reading prompt files: front matter, titles, safe and unique ids, clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from gadugi.agents import check_prompts
from gadugi.errors import PromptError
from gadugi.planning.prompts import read_prompt, safe_id, split_front_matter, unique_ids


def _write(root: Path, name: str, text: str) -> Path:
    path = root / "prompts" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_front_matter_and_body(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "add-login.md",
        (
            "---\nid: Login Form!\ndepends_on: [setup-db.md]\ntouches: src/auth/**\npriority: 10\n"
            "timeout_minutes: 30\nretries: 2\nagent: shell\n---\n# Add a login form\n\nBody.\n"
        ),
    )
    prompt = read_prompt(path, tmp_path)
    assert prompt.task_id == "login-form"
    assert prompt.title == "Add a login form"
    assert prompt.depends_on == ("setup-db.md",)
    assert prompt.touches == ("src/auth/**",)
    assert (prompt.priority, prompt.timeout_minutes, prompt.retries) == (10, 30.0, 2)
    assert prompt.agent == "shell"
    assert prompt.body.startswith("# Add a login form")
    assert prompt.rel_path == "prompts/add-login.md"


def test_defaults_without_front_matter(tmp_path: Path) -> None:
    prompt = read_prompt(
        _write(tmp_path, "Fix Bug #12.md", "Some text\n# Title here ##\n"), tmp_path
    )
    assert prompt.task_id == "fix-bug-12"
    assert prompt.title == "Title here"
    assert prompt.priority == 0 and prompt.depends_on == ()


@pytest.mark.parametrize(
    ("front", "key"),
    [
        ("priority: high", "priority"),
        ("retries: -1", "retries"),
        ("timeout_minutes: 0", "timeout_minutes"),
        ("depends_on: {a: 1}", "depends_on"),
        ("touches: [1, 2]", "touches"),
        ("colour: blue", "colour"),
        ("type: chore", "type"),
        ("id: ''", "id"),
        ("priority: true", "priority"),
    ],
)
def test_invalid_front_matter_names_the_file_and_key(tmp_path: Path, front: str, key: str) -> None:
    path = _write(tmp_path, "bad.md", f"---\n{front}\n---\n# t\n")
    with pytest.raises(PromptError) as err:
        read_prompt(path, tmp_path)
    assert err.value.key == key
    assert "prompts/bad.md" in str(err.value) and key in str(err.value)


@pytest.mark.parametrize("text", ["---\n[unclosed\n---\n", "---\n- a list\n---\n"])
def test_front_matter_that_is_not_a_mapping(tmp_path: Path, text: str) -> None:
    with pytest.raises(PromptError, match="front matter"):
        read_prompt(_write(tmp_path, "x.md", text), tmp_path)


def test_binary_and_huge_prompts_are_refused(tmp_path: Path) -> None:
    binary = tmp_path / "prompts/bin.md"
    binary.parent.mkdir(parents=True)
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(PromptError, match="UTF-8"):
        read_prompt(binary, tmp_path)
    huge = _write(tmp_path, "huge.md", "x" * 1_000_001)
    with pytest.raises(PromptError, match="limited"):
        read_prompt(huge, tmp_path)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Add Login", "add-login"),
        ("../../etc/passwd", "etc-passwd"),
        ("-rf", "rf"),
        ("...", "task"),
        ("a..b", "a.b"),
        ("ÜBER über", "ber-ber"),
        ("x" * 200, "x" * 64),
        ("$(rm -rf /)", "rm-rf"),
    ],
)
def test_safe_ids(raw: str, expected: str) -> None:
    assert safe_id(raw) == expected


def test_duplicate_ids_get_suffixes(tmp_path: Path) -> None:
    a = read_prompt(_write(tmp_path, "a.md", "---\nid: same\n---\n"), tmp_path)
    b = read_prompt(_write(tmp_path, "b.md", "---\nid: same\n---\n"), tmp_path)
    c = read_prompt(_write(tmp_path, "same.md", ""), tmp_path)
    assert [p.task_id for p in unique_ids([a, b, c])] == ["same", "same-2", "same-3"]


@pytest.mark.parametrize(
    ("front", "key"),
    [
        ("timeout_minutes: .nan", "timeout_minutes"),
        ("timeout_minutes: .inf", "timeout_minutes"),
        ("timeout_minutes: 10081", "timeout_minutes"),
        ("estimate_minutes: .nan", "estimate_minutes"),
        ("estimate_minutes: .inf", "estimate_minutes"),
        ("estimate_minutes: 1.0e+308", "estimate_minutes"),
        ("priority: 1000001", "priority"),
        ("priority: -1000001", "priority"),
        (f"priority: {2**70}", "priority"),
        (f"memory_limit_mb: {2**40}", "memory_limit_mb"),
        (f"open_files_limit: {2**40}", "open_files_limit"),
        ("agent: robot", "agent"),
        ('title: "a\\0b"', "title"),
        ('touches: ["src/\\0"]', "touches"),
    ],
)
def test_out_of_range_front_matter_names_the_key(tmp_path: Path, front: str, key: str) -> None:
    path = _write(tmp_path, "bad.md", f"---\n{front}\n---\n# t\n")
    with pytest.raises(PromptError) as err:
        read_prompt(path, tmp_path)
    assert err.value.key == key


def test_the_bounds_themselves_are_accepted(tmp_path: Path) -> None:
    front = "priority: -1000000\ntimeout_minutes: 10080\nestimate_minutes: 10080"
    prompt = read_prompt(_write(tmp_path, "ok.md", f"---\n{front}\n---\n"), tmp_path)
    assert (prompt.priority, prompt.timeout_minutes, prompt.estimate_minutes) == (
        -1_000_000,
        10080.0,
        10080.0,
    )


@pytest.mark.parametrize(
    ("front", "key"),
    [
        ("priority: 1\ntitle: x\npriority: 2", "priority"),
        ("touches: [a]\nid: x\ntouches: [b]", "touches"),
        ("title: x\nextra: {a: 1, a: 2}", "a"),
    ],
)
def test_duplicate_keys_are_refused_naming_the_key(tmp_path: Path, front: str, key: str) -> None:
    path = _write(tmp_path, "dup.md", f"---\n{front}\n---\n")
    with pytest.raises(PromptError) as err:
        read_prompt(path, tmp_path)
    assert err.value.key == key and "duplicate" in err.value.reason


def test_a_merge_key_is_not_a_duplicate(tmp_path: Path) -> None:
    front = "base: &b {x: 1}\nmerged: {<<: *b, x: 2}"
    meta, _ = split_front_matter(f"---\n{front}\n---\n", "m.md")
    assert meta["merged"] == {"x": 2}


@pytest.mark.parametrize("deep", ["[" * 10_000 + "]" * 10_000, "{a: " * 5_000 + "1" + "}" * 5_000])
def test_deeply_nested_front_matter_is_refused(tmp_path: Path, deep: str) -> None:
    path = _write(tmp_path, "deep.md", f"---\ntouches: {deep}\n---\n")
    with pytest.raises(PromptError, match="nested"):
        read_prompt(path, tmp_path)


def test_a_nul_byte_is_refused_only_for_agents_that_take_the_prompt_as_an_argument(
    tmp_path: Path,
) -> None:
    plain = read_prompt(_write(tmp_path, "plain.md", "# p\n\nx\x00y\n"), tmp_path)
    aider = read_prompt(_write(tmp_path, "aider.md", "---\nagent: aider\n---\nx\x00y\n"), tmp_path)
    for agent in ("shell", "command", "aider"):
        check_prompts([plain], agent)
    check_prompts([aider], "claude")
    for agent in ("claude", "codex", "gemini"):
        with pytest.raises(PromptError, match=f"NUL byte, which the {agent} agent") as err:
            check_prompts([plain], agent)
        assert err.value.path == "prompts/plain.md"
