"""`firewall install | remove | status`: the opt-in host rule that keeps the private networks off the
host's own services (docs/security.md#the-host-behind-the-private-networks)."""

from typing import TYPE_CHECKING, Annotated

import typer

from nachos_deploy.core.errors import ExitCode
from nachos_deploy.interfaces.cli.app import app
from nachos_deploy.interfaces.cli.console import out, print_json
from nachos_deploy.interfaces.cli.guard import JsonCommand, handle_errors, load_stack
from nachos_deploy.interfaces.cli.options import ConfigOpt, JsonOpt, OutputOpt, ProjectOpt, SetOpt

if TYPE_CHECKING:
    from nachos_deploy.interfaces.api import FirewallState

firewall_app = typer.Typer(
    help=(
        "Opt-in: drop what the project's internal networks send to this host.\n\n"
        "Docker's internal networks keep a component off other networks and off the machine, but not "
        "off the host itself: every program listening on 0.0.0.0 or :: answers a component at its "
        "network's gateway address (`nachos-deploy doctor` lists them). `install` puts one iptables "
        "INPUT drop per internal bridge of the project (replies to connections the host opened still "
        "pass), tagged nachos-deploy:<project>:<network>; `remove` takes back exactly those. Needs "
        "root and iptables (ip6tables too, when installed). The rules name the bridges `up` creates: "
        "run `install` again after an `up` that made the networks anew (after a `down`); it also "
        "removes the project's rules for bridges that are gone. Compose only: a Swarm stack's overlay "
        "networks have no address on the host."
    ),
    no_args_is_help=True,
)
app.add_typer(firewall_app, name="firewall")


def _project(config: ConfigOpt, set_: SetOpt, project: ProjectOpt, output: OutputOpt) -> str:
    return load_stack(config, set_, project, output, warn=False).project


def _networks(state: "FirewallState") -> None:
    for bridge in state.bridges:
        dropped = "dropped" if state.covered(bridge) else "NOT dropped" if bridge.internal else "open (plain)"
        out.print(
            f"  {bridge.network:<20} {bridge.interface:<16} {bridge.gateway:<16} {dropped}", markup=False
        )


@firewall_app.command("install")
@handle_errors
def install(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    egress: Annotated[
        bool,
        typer.Option(
            "--egress",
            help="Also drop what the project's plain networks (egress, host-access) send to this host: "
            "the components with egress (llm-proxy, most channels) then reach nothing on it either. "
            "Leave it out when one must use a service on this host (a local model server) or a DNS "
            "resolver at one of this host's own addresses.",
        ),
    ] = False,
) -> None:
    """Drop what the running project's internal networks send to this host (root). Idempotent: run
    it again after any `up`; it adds the rules missing for the current bridges and takes back the
    project's rules for bridges that are gone. Exit 1 when the project has no internal network on
    this engine (start it first), 4 without root or iptables.

    Example: sudo nachos-deploy firewall install -p nachos-dev
    """
    from nachos_deploy.interfaces import api

    state = api.firewall(_project(config, set_, project, output), "install", egress=egress)
    dropped = sum(state.covered(bridge) for bridge in state.bridges)
    out.print(
        f"Project {state.project}: {dropped} network(s) may no longer reach this host "
        f"({', '.join(state.families)}); {len(state.added)} rule(s) added, {len(state.removed)} stale "
        "rule(s) removed.",
        markup=False,
    )
    _networks(state)
    if state.open_egress:
        out.print(
            "The components with egress still reach this host through `egress` (see --egress).", markup=False
        )
    out.print(f"Take them back with `nachos-deploy firewall remove -p {state.project}`.", markup=False)


@firewall_app.command("remove")
@handle_errors
def remove(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
) -> None:
    """Take back every rule tagged nachos-deploy:<project> (root); none left is not an error.
    Rules of other projects, Docker's and your own are not touched.

    Example: sudo nachos-deploy firewall remove -p nachos-dev
    """
    from nachos_deploy.interfaces import api

    state = api.firewall(_project(config, set_, project, output), "remove")
    tag = f"nachos-deploy:{state.project}"
    if state.removed:
        out.print(
            f"Project {state.project}: removed {len(state.removed)} rule(s) tagged {tag}; its internal "
            "networks reach this host's listeners again.",
            markup=False,
        )
    else:
        out.print(
            f"Project {state.project}: no rule tagged {tag} was in place; nothing changed.", markup=False
        )


@firewall_app.command("status", cls=JsonCommand)
@handle_errors
def status(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Show each internal network of the project, its bridge, its gateway address and whether the
    host drops what it sends (root: reading the firewall needs it too). Exit 0 when every one is
    dropped, 1 otherwise.

    Example: sudo nachos-deploy firewall status -p nachos-dev --json
    """
    from nachos_deploy.interfaces import api

    state = api.firewall(_project(config, set_, project, output), "status")
    if json_:
        print_json({"ok": state.installed, **state.as_json()})
    else:
        verdict = "installed" if state.installed else "not installed"
        out.print(f"Project {state.project}: firewall {verdict} ({', '.join(state.families)}).", markup=False)
        _networks(state)
        if state.stale:
            out.print(
                f"{len(state.stale)} rule(s) name bridges that are gone: `firewall install` takes them back.",
                markup=False,
            )
        if not state.bridges:
            out.print("No internal network of this project on the engine (not running?).", markup=False)
    if not state.installed:
        raise typer.Exit(int(ExitCode.FAILED))
