"""What a setup's or verification's output becomes in messages and follow-ups: its tail,
bounded, with no byte an agent's command line cannot carry."""

from __future__ import annotations

from pathlib import Path

from gadugi.landing import _tail
from gadugi.phases import TAIL_CHARS, tail_of


def _noisy_log(path: Path) -> Path:
    with path.open("wb") as fh:
        fh.write(b"x" * (50 * 2**20))  # 50 MB on one line
        fh.write(b"\nE: broken\0here \x1b[31mred\x1b[0m\n")
    return path


def test_a_phase_s_tail_is_bounded_and_carries_no_control_character(tmp_path: Path) -> None:
    tail = tail_of(_noisy_log(tmp_path / "verify.log"))
    assert tail.endswith(
        "E: broken\N{REPLACEMENT CHARACTER}here \N{REPLACEMENT CHARACTER}[31mred"
        "\N{REPLACEMENT CHARACTER}[0m"
    )
    assert len(tail) <= TAIL_CHARS and "\0" not in tail and "\x1b" not in tail


def test_a_landing_verification_s_tail_too(tmp_path: Path) -> None:
    # It becomes the re-run's follow-up, which Claude Code takes as an argument.
    tail = _tail(_noisy_log(tmp_path / "land.1.verify.log"))
    assert tail.endswith(
        "E: broken\N{REPLACEMENT CHARACTER}here \N{REPLACEMENT CHARACTER}[31mred"
        "\N{REPLACEMENT CHARACTER}[0m"
    )
    assert len(tail) <= TAIL_CHARS + 100 and "\0" not in tail
    assert _tail(tmp_path / "missing.log") == "(no output)"
