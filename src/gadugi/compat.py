"""The seed's Python names, for code written against the seed's guide.

``from orchestrator_main import OrchestratorCoordinator, OrchestrationConfig`` runs the
guide's snippet unchanged; ``python3 -m process_registry status|export|cancel`` is
``gadugi status|export|cancel``. The one difference from gadugi's own classes: like the
command line, the seed's API reads the project's configuration (``gadugi.toml`` or
``[tool.gadugi]``) and the ``GADUGI_*`` environment, and the fields given to
``OrchestrationConfig(...)`` take the place of command-line flags over both.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from . import config as _config
from . import coordinator as _coordinator
from .worktrees import repository_root

if TYPE_CHECKING:
    from .runner import Listener

REGISTRY_COMMANDS = ("status", "export", "cancel")


class OrchestrationConfig(_config.OrchestrationConfig):
    """gadugi's configuration, remembering which fields the caller gave."""

    def __init__(self, **given: Any) -> None:
        super().__init__(**given)
        object.__setattr__(self, "given", dict(given))  # frozen: set once, here

    given: dict[str, Any]


class OrchestratorCoordinator(_coordinator.OrchestratorCoordinator):
    """gadugi's coordinator, configured as ``gadugi run`` would be in ``project_root``."""

    def __init__(
        self,
        config: _config.OrchestrationConfig | None = None,
        project_root: str | os.PathLike[str] = ".",
        *,
        listener: Listener | None = None,
        warn: Callable[[str], None] | None = None,
    ) -> None:
        root = repository_root(Path(project_root).resolve())
        if config is None or isinstance(config, OrchestrationConfig):
            # A gadugi OrchestrationConfig built by hand is taken as it is.
            config = _config.load_config(root, config.given if config is not None else None)
        super().__init__(config, root, listener=listener, warn=warn)


def process_registry_main(argv: Sequence[str] | None = None) -> NoReturn:
    """``python3 -m process_registry COMMAND ...``: gadugi's status, export or cancel."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in REGISTRY_COMMANDS:
        print(
            f"usage: python3 -m process_registry {{{'|'.join(REGISTRY_COMMANDS)}}} [OPTIONS]\n"
            "  status [--json]           gadugi status\n"
            "  export --output FILE      gadugi export\n"
            "  cancel --task-id TASK_ID  gadugi cancel",
            file=sys.stderr,
        )
        sys.exit(2)
    from .cli import main

    main.main(args=args, prog_name="python3 -m process_registry")
    sys.exit(0)  # click exits by itself; this is only for the type checker
