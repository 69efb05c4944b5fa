"""The options most commands share, declared once so that every command spells and documents them alike."""

# No `from __future__ import annotations`: Typer reads these annotations as objects.
from pathlib import Path
from typing import Annotated

import typer

from nachos_deploy.interfaces.cli.guard import complete_services

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE",
        help="Deploy file (default: ./nachos-deploy.yaml, or $NACHOS_DEPLOY_CONFIG; built-in "
        "defaults when there is none).",
        show_default=False,
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override one key, e.g. --set bus.max_payload=1MB (repeatable; beats the file and "
        "NACHOS_DEPLOY_* variables).",
        show_default=False,
    ),
]
ProjectOpt = Annotated[
    str | None,
    typer.Option(
        "--project",
        "-p",
        metavar="NAME",
        help="Compose project name (overrides the `project` key).",
        show_default=False,
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        metavar="DIR",
        help="Folder for the rendered files (default: the `output` key, ./.nachos beside the deploy file).",
        show_default=False,
    ),
]
OnlyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--only",
        metavar="SERVICE",
        help="Only this service (repeatable), as `up --only` starts it: the bus always comes first.",
        autocompletion=complete_services,
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of text.")]
# The budget of one whole `up` (`rollback` is an `up` of the previous deployment); a --timeout that bounds
# something else (each `up` of a restore, a request's reply) is declared by its command.
StartTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--timeout", metavar="SECONDS", help="Seconds for the whole start, bus and components.", min=1
    ),
]
