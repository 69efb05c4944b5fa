"""`rollback`: return the stack to its previous successful deployment, proven as `up` proves it."""

import shlex
from pathlib import Path

from nachos_deploy.interfaces.cli.app import app
from nachos_deploy.interfaces.cli.console import notice, out, print_json, spinner
from nachos_deploy.interfaces.cli.guard import JsonCommand, handle_errors, load_running
from nachos_deploy.interfaces.cli.options import (
    ConfigOpt,
    JsonOpt,
    OutputOpt,
    ProjectOpt,
    SetOpt,
    StartTimeoutOpt,
)


@app.command(cls=JsonCommand)
@handle_errors
def rollback(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    timeout: StartTimeoutOpt = 120.0,
    json_: JsonOpt = False,
) -> None:
    """Return the stack to its previous successful deployment: the rendered files and the image (by id)
    of each service as that `up` left them, recorded in the output folder's .releases. It is an `up` of
    that deployment: the bus first and proven, changed components replaced one at a time, each running,
    healthy and on the bus before the next; one that fails is put back again (exit 6). The deployment
    it leaves becomes the previous one, so a second rollback returns to it.

    Exit 1 with nothing changed when no previous deployment is recorded (after a single `up`).
    See docs/upgrades.md.

    Example: nachos-deploy rollback -p nachos-demo --json
    """
    from nachos_deploy.interfaces import api

    stack = load_running(config, set_, project, output, "rollback")
    if json_:
        result = api.rollback(stack, timeout=timeout, notice=notice)
        print_json(result.as_json())
        return
    with spinner("Rolling back") as progress:
        result = api.rollback(stack, timeout=timeout, progress=progress, notice=notice)
    from nachos_deploy.interfaces import report

    selector = f"-p {shlex.quote(result.project)}" + (
        f" -o {shlex.quote(str(Path(output).absolute()))}" if output is not None else ""
    )
    report.print_up(out, result, selector)
    out.print(
        "Rolled back to the previous deployment; `nachos-deploy rollback` again returns to the one left."
    )
