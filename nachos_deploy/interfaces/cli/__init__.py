"""The command line: parse options, call :mod:`nachos_deploy.interfaces.api`, print. No deployment logic
lives here, and no lower layer is imported: the API is the one way down (an import-linter contract
keeps it so).

One module per command group. Importing this package registers every command on :data:`app`, in the
order `--help` lists them (Typer lists commands as they were registered, and an import sorter would
reorder a plain import list).
"""

import importlib

from nachos_deploy.interfaces.cli.app import app, main

COMMAND_MODULES = (
    "render",
    "up",
    "down",
    "status",
    "logs",
    "connect",
    "doctor",
    "bench",
    "credentials",
    "firewall",
    "lock",
    "plan",
    "rollback",
    "backup",
)

for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")

__all__ = ["app", "main"]
