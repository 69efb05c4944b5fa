"""`credentials rotate`: new bus passwords, and the running stack brought up again with them."""

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
        float, typer.Option("--timeout", metavar="SECONDS", help="Seconds for the restart.", min=1)
    ] = 120.0,
) -> None:
    """Replace every bus password (the operator's and each sidecar's), then, when the stack is
    running, bring it up again: the bus and the sidecars are recreated with the new passwords (a
    pause of a second or two; JetStream data stays on its volume) and the components reconnect to
    their sidecars. The old operator URL stops working.

    Example: nachos-deploy credentials rotate -c deploy/prod.yaml
    """
    from nachos_deploy.interfaces import api, report

    stack = load_stack(config, set_, project, output)
    rotation = api.rotate_credentials(stack)
    out.print(f"New bus passwords written to {rotation.folder}.")
    if rotation.running:
        with err.status("Restarting the bus and its sidecars", spinner="dots") as status:
            result = api.up(stack, timeout=timeout, progress=lambda text: status.update(text))
        report.print_up(out, result, f"-p {shlex.quote(result.project)}")
