"""`down`: remove the stack's containers and networks, and its volumes only when confirmed."""

import sys
from typing import Annotated

import typer

from nachos_deploy.core.errors import ExitCode
from nachos_deploy.interfaces.cli.app import app
from nachos_deploy.interfaces.cli.console import err, notice, out, spinner
from nachos_deploy.interfaces.cli.guard import handle_errors, load_running
from nachos_deploy.interfaces.cli.options import ConfigOpt, OutputOpt, ProjectOpt, SetOpt


@app.command()
@handle_errors
def down(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    volumes: Annotated[
        bool, typer.Option("--volumes", help="Also delete the volumes: the bus's JetStream data is lost.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before deleting volumes.")] = False,
) -> None:
    """Stop and remove the stack's containers and networks. Volumes (JetStream data, the gateway's
    database) are kept unless --volumes is given; then they are named and you are asked to confirm
    (--yes skips the question; without a terminal, --volumes needs --yes). Removing a stack that does
    not exist is not an error.

    Example: nachos-deploy down --volumes --yes
    """
    from nachos_deploy.interfaces import api

    stack = load_running(config, set_, project, output, "down")
    if volumes and not yes:
        names = api.stack_volumes(stack)
        if names:
            if not sys.stdin.isatty():
                err.print(
                    f"error: --volumes would delete {', '.join(names)} (JetStream data is lost). Add --yes "
                    "to confirm when not running in a terminal."
                )
                raise typer.Exit(int(ExitCode.USAGE))
            if not typer.confirm(f"Delete volumes {', '.join(names)}? Their data is lost", default=False):
                err.print("Nothing removed.")
                raise typer.Exit(int(ExitCode.FAILED))
    with spinner(f"Removing project {stack.project}'s containers and networks"):  # a terminal only
        result = api.down(stack, volumes=volumes, notice=notice)
    if result.found:
        out.print(f"Removed project {result.project}'s containers and networks.")
    else:  # not an error (a second `down` finds nothing too), but no stack of that name was removed
        out.print(
            f"Project {result.project} has no containers on this engine: nothing was running to remove "
            "(check the name: `nachos-deploy status -p NAME` shows what a project runs)."
        )
    if result.volumes_removed:
        out.print(f"Deleted volumes: {', '.join(result.volumes_removed)}.")
    elif result.volumes_kept:
        out.print(f"Kept volumes: {', '.join(result.volumes_kept)} (delete them with --volumes).")
