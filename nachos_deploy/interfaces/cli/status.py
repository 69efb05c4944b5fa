"""`status`: judge the running stack by the rule `up` applies, for people or as one JSON document."""

from typing import Annotated

import typer

from nachos_deploy.core.errors import ExitCode
from nachos_deploy.interfaces.cli.app import app
from nachos_deploy.interfaces.cli.console import out, print_json
from nachos_deploy.interfaces.cli.guard import JsonCommand, complete_services, handle_errors, load_running
from nachos_deploy.interfaces.cli.options import ConfigOpt, JsonOpt, OutputOpt, ProjectOpt, SetOpt


@app.command(cls=JsonCommand)
@handle_errors
def status(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    json_: JsonOpt = False,
    only: Annotated[
        list[str] | None,
        typer.Option(
            "--only",
            metavar="SERVICE",
            help="Judge only this service (repeatable) with the bus; default: what the last `up "
            "--only` started, else everything.",
            autocompletion=complete_services,
        ),
    ] = None,
) -> None:
    """Show each service's state and health, whether it is connected to the bus (the bus's /connz),
    and the bus's own view: version, JetStream, client connections, server memory, the audit
    stream. Exits 0 only when everything is running, healthy and connected (the same rule `up`
    applies: with the bus down, no component is ok); 1 otherwise. Works without the required secrets.

    Example: nachos-deploy status --json
    """
    from nachos_deploy.interfaces import api

    result = api.status(load_running(config, set_, project, output, "status"), only)
    if json_:
        print_json(result.as_json())
    else:
        from nachos_deploy.interfaces import report

        report.print_status(out, result)
    if not result.ok:
        raise typer.Exit(int(ExitCode.FAILED))
