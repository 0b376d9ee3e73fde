"""The ``spacebridge`` entry point (console script and ``python -m spacebridge``).

Standard library only until it knows where the command runs: a running command server takes it
(cli_client.py; ``serve`` starts one, docs/cli.md), else it runs here, in the Typer app of
cli_app.py. ``app`` and the app's other names are still importable from here (loaded on first use).
"""

from __future__ import annotations

import sys
from typing import Any


def main() -> None:
    """Run the ``spacebridge`` command: through the command server if one answers, else directly."""
    from spacebridge.cli_client import exit_like, run_remote

    code = run_remote(sys.argv[1:])
    if code is not None:
        exit_like(code)
    from spacebridge.cli_app import run

    run()


def __getattr__(name: str) -> Any:
    """``from spacebridge.cli import app`` (tests, drivers): the Typer app, imported when asked for."""
    if name.startswith("__"):
        raise AttributeError(name)
    from spacebridge import cli_app

    return getattr(cli_app, name)
