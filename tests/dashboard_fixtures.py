"""A real `gadugi dashboard` as a child process, and a headless Chromium when there is one."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import GIT_ENV, Repo, wait_until

BROWSERS = ("chromium-headless-shell", "chromium")
HOW_TO_ENABLE = (
    "no Chromium for the browser tests: install Debian's chromium-headless-shell "
    "(apt-get install -y chromium-headless-shell) and Playwright (pip install playwright); "
    ".ci/run does both"
)


@dataclass
class Dashboard:
    proc: subprocess.Popen[str]
    url: str  # with the token
    stderr: Path  # what the server logged

    @property
    def base(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.netloc}"

    @property
    def token(self) -> str:
        return self.url.split("token=", 1)[1]

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
        return request(self.base + path, headers=headers)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def request(
    url: str, method: str = "GET", headers: dict[str, str] | None = None
) -> tuple[int, str]:
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def start_dashboard(repo: Repo) -> Dashboard:
    # Its output goes to files: a pipe nobody reads would fill and stall the server.
    out, err = repo.root.parent / "dashboard.out", repo.root.parent / "dashboard.err"
    with out.open("w") as stdout, err.open("w") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gadugi", "dashboard", "--no-open"],
            cwd=repo.root,
            text=True,
            stdout=stdout,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **GIT_ENV},
        )
    wait_until(lambda: "\n" in out.read_text() or proc.poll() is not None)
    line = out.read_text().splitlines()[0] if out.read_text() else ""
    assert "http://127.0.0.1:" in line, line + err.read_text()
    return Dashboard(proc, line.split(": ", 1)[1].strip(), err)


@pytest.fixture
def dashboard(repo: Repo) -> Iterator[Dashboard]:
    board = start_dashboard(repo)
    try:
        yield board
    finally:
        board.stop()


def chromium() -> str | None:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    for path in ("/usr/lib/chromium/headless_shell", "/usr/lib/chromium/chromium"):
        if os.access(path, os.X_OK):
            return path
    return None


@pytest.fixture
def browser() -> Iterator[object]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip(HOW_TO_ENABLE)
    executable = chromium()
    if executable is None:
        pytest.skip(HOW_TO_ENABLE)
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


def screenshot_dir() -> Path | None:
    """Where to save the docs' screenshots (GADUGI_SCREENSHOTS), if anywhere."""
    folder = os.environ.get("GADUGI_SCREENSHOTS")
    return Path(folder) if folder else None
