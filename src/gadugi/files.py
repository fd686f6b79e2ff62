"""Writing a file so that a reader sees the old one or the new one, never half of one."""

from __future__ import annotations

import json
import math
import os
import secrets
from pathlib import Path
from typing import Any


def write_text_atomic(path: Path, text: str, mode: int | None = None) -> None:
    """Write ``text`` to a temporary file beside ``path``, then move it into place.

    Not mkstemp, whose files are 0600: without ``mode`` the umask decides, as for any
    file a user's other tools read.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, dumps(data, separators=(",", ":")) + "\n")


def dumps(data: Any, **options: Any) -> str:
    """``json.dumps`` that writes NaN and infinities as null (see ``finite``); the walk
    over ``data`` happens only when there is one, so big documents stay fast."""
    try:
        return json.dumps(data, allow_nan=False, **options)
    except ValueError:
        return json.dumps(finite(data), **options)


def finite(data: Any) -> Any:
    """``data`` with every NaN or infinite float as None: JSON has no such numbers, and
    ``json.dumps`` would write ``NaN``, which a strict reader (JavaScript's JSON.parse,
    jq) refuses. They come only from damaged rows or an agent's odd report."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [finite(v) for v in data]
    return data
