"""`logs`: the services' logs, streamed as they come."""

import sys
from typing import Annotated

import typer

from nachos_deploy.interfaces.cli.app import app
from nachos_deploy.interfaces.cli.console import err
from nachos_deploy.interfaces.cli.guard import complete_services, handle_errors, load_running
from nachos_deploy.interfaces.cli.options import ConfigOpt, OutputOpt, ProjectOpt, SetOpt


@app.command()
@handle_errors
def logs(
    services: Annotated[
        list[str] | None,
        typer.Argument(help="Services to show (default: all).", autocompletion=complete_services),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines.")] = False,
    tail: Annotated[
        int | None, typer.Option("--tail", metavar="N", help="Only the last N lines of each.", min=0)
    ] = None,
) -> None:
    """Print the logs of the stack's services.

    Example: nachos-deploy logs bus --tail 50 -f
    """
    from nachos_deploy.interfaces import api

    stack = load_running(config, set_, project, output, "logs")
    printed = False
    for chunk in api.stream_logs(stack, services or (), follow=follow, tail=tail):
        sys.stdout.write(chunk)
        sys.stdout.flush()
        printed = printed or bool(chunk)
    if not printed and not api.has_containers(stack):
        err.print(
            f"note: project {stack.project} has no containers on this engine, so there is no log to "
            f"show (check the name; `nachos-deploy up -p {stack.project}` starts it).",
            markup=False,
        )
