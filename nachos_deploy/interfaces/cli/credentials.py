"""`credentials rotate`: new bus passwords, taken by the running bus and sidecars in place."""

import shlex
from typing import Annotated

import typer

from nachos_deploy.interfaces.cli.app import app
from nachos_deploy.interfaces.cli.console import err, out
from nachos_deploy.interfaces.cli.guard import handle_errors, load_stack
from nachos_deploy.interfaces.cli.options import ConfigOpt, OutputOpt, ProjectOpt, SetOpt

credentials_app = typer.Typer(
    help="The bus's generated passwords (kept in the output folder's credentials/, mode 0600).",
    no_args_is_help=True,
)
app.add_typer(credentials_app, name="credentials")


@credentials_app.command("rotate")
@handle_errors
def rotate(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout",
            metavar="SECONDS",
            help="Seconds for the `up` that replaces the bus and sidecars on Swarm.",
            min=1,
        ),
    ] = 120.0,
) -> None:
    """Replace every bus password (the operator's and each sidecar's leaf login). On a running
    Compose stack the bus and then the sidecars reload them in place: the components stay connected
    to their sidecars and are not restarted, each sidecar is without its link to the bus for some
    tens of milliseconds (a request crossing it then fails once), and the bus is then shown to
    refuse the old operator password. The old operator URL stops working. On Swarm the passwords
    are new Swarm secrets and the bus and the sidecars are replaced instead (docs/security.md).

    Example: nachos-deploy credentials rotate -c deploy/prod.yaml
    """
    from nachos_deploy.interfaces import api, report

    stack = load_stack(config, set_, project, output)
    with err.status("Rotating the bus passwords", spinner="dots") as status:
        rotation = api.rotate_credentials(stack, progress=lambda text: status.update(text))
    out.print(f"New bus passwords written to {rotation.folder}.")
    if rotation.reloaded is not None:
        done = rotation.reloaded
        out.print(
            f"The bus and {len(done.sidecars)} sidecars took them in place in {done.seconds:.2f} s; "
            "no component was restarted, and the bus refuses the old operator password."
        )
        if done.restarted:
            out.print(f"Restarted after a reload that did not log in again: {', '.join(done.restarted)}.")
    elif rotation.running:
        with err.status("Replacing the bus and its sidecars", spinner="dots") as status:
            result = api.up(stack, timeout=timeout, progress=lambda text: status.update(text))
        report.print_up(out, result, f"-p {shlex.quote(result.project)}")
    else:
        out.print(
            "No running bus could be given them (the stack is not running, or its credentials "
            "folder was made anew): the next `nachos-deploy up` starts the bus with them."
        )
