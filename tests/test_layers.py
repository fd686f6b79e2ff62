"""The layers the folder layout promises: checked on the source, so a stray import fails CI."""

from __future__ import annotations

import ast
from pathlib import Path

import gadugi

PACKAGE = Path(gadugi.__file__).parent
# What pure planning may not reach: processes, git, the loop, the registry, the clock.
NOT_IN_PLANNING = {
    "subprocess",
    "psutil",
    "sqlite3",
    "time",
    "gadugi.procs",
    "gadugi.worktrees",
    "gadugi.runner",
    "gadugi.registry",
    "gadugi.coordinator",
    "gadugi.cli",
}
UI_LIBRARIES = ("click", "rich")


def _imports(path: Path, package: list[str] | None = None) -> set[str]:
    """Every module a file imports, relative imports made absolute."""
    if package is None:
        package = list(path.relative_to(PACKAGE.parent).parts[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *([node.module] if node.module else [])])
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def _reaches(imported: set[str], forbidden: str) -> bool:
    return any(name == forbidden or name.startswith(f"{forbidden}.") for name in imported)


def test_planning_is_pure() -> None:
    for path in sorted((PACKAGE / "planning").glob("*.py")):
        imported = _imports(path)
        bad = sorted(f for f in NOT_IN_PLANNING if _reaches(imported, f))
        assert not bad, f"{path.name} imports {bad}"


def test_only_the_command_line_imports_click_and_rich() -> None:
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.parts[0] == "cli":
            continue
        imported = _imports(path)
        bad = [lib for lib in UI_LIBRARIES if _reaches(imported, lib)]
        assert not bad, f"{rel} imports {bad}"


def test_the_check_sees_a_forbidden_import(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("import subprocess\nfrom ..procs import spawn\n", encoding="utf-8")
    imported = _imports(probe, ["gadugi", "planning"])
    assert _reaches(imported, "subprocess") and _reaches(imported, "gadugi.procs")


WEB_LIBRARIES = ("starlette", "uvicorn")


def test_only_the_dashboard_server_imports_the_web_framework() -> None:
    # Every other command starts without them; `report` renders without a server.
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        if rel.as_posix() == "dashboard/server.py":
            continue
        imported = _imports(path)
        bad = [lib for lib in WEB_LIBRARIES if _reaches(imported, lib)]
        assert not bad, f"{rel} imports {bad}"


def test_the_dashboard_acts_through_the_command_line_not_beside_it() -> None:
    # Its actions run `gadugi cancel`/`retry` as children; it never imports cli/ or writes.
    for path in sorted((PACKAGE / "dashboard").glob("*.py")):
        imported = _imports(path)
        bad = sorted(
            m
            for m in ("gadugi.cli", "gadugi.coordinator", "gadugi.runner")
            if _reaches(imported, m)
        )
        assert not bad, f"{path.name} imports {bad}"
