"""The command line: argument parsing, output and exit codes, nothing else.

The only package that imports click and rich. ``main`` is the click group; each module
adds its commands to it: ``main`` (run, plan, demo), ``query`` (status, export, logs,
show, list, wait), ``recover`` (resume, retry, cancel, cleanup) and ``machine`` (doctor,
install-agent) and ``land`` (land).
"""

from . import land, machine, query, recover  # noqa: F401  (they register their commands)
from .main import main

__all__ = ["main"]
