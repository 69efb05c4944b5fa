"""`plan`: what `up` would change, for people or as one JSON document; exit 2 when something would
(the convention of `terraform plan -detailed-exitcode`)."""

from typing import TYPE_CHECKING, Annotated

import typer

from nachos_deploy.core.errors import ExitCode
from nachos_deploy.interfaces.cli.app import app
from nachos_deploy.interfaces.cli.console import out, print_json
from nachos_deploy.interfaces.cli.guard import JsonCommand, handle_errors, load_stack
from nachos_deploy.interfaces.cli.options import ConfigOpt, JsonOpt, OnlyOpt, OutputOpt, ProjectOpt, SetOpt

if TYPE_CHECKING:
    from nachos_deploy.core.changes import PlanResult

# `plan`'s "up would change something" shares its number with Typer's usage error, as terraform's 2
# does; with --json the document tells them apart (a usage error prints the failure document).
CHANGES_PENDING = 2


@app.command(cls=JsonCommand)
@handle_errors
def plan(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    only: OnlyOpt = None,
    json_: JsonOpt = False,
    diff: Annotated[
        bool, typer.Option("--diff/--no-diff", help="Print each rendered file's unified diff.")
    ] = True,
) -> None:
    """Show what `up` (with the same options) would change, without changing anything: the diff of
    every rendered file against the output folder; per service whether it would be created,
    recreated (and why: image, environment, mounts, configuration), removed, or kept; the volumes,
    networks (on Swarm also configs and secrets) to be created. Writes no file and changes nothing on
    the engine. Exits 0 when nothing would change, 2 when something would, other codes as `up`.

    Example: nachos-deploy plan --json > plan.json || test $? -eq 2
    """
    from nachos_deploy.interfaces import api

    stack = load_stack(config, set_, project, output)
    result = api.plan(stack, only=only or ())
    if json_:
        print_json({"ok": True, "exit_code": CHANGES_PENDING if result.changes else 0, **result.as_json()})
    else:
        _print(result, diff=diff)
    if result.changes:
        raise typer.Exit(CHANGES_PENDING)
    raise typer.Exit(int(ExitCode.OK))


def _print(result: "PlanResult", *, diff: bool) -> None:
    lines = [f"Plan for project {result.project} ({result.target}), output folder {result.output_dir}"]
    if result.files:
        lines.append("Files:")
        lines += [f"  {f.state:<8} {f.name}" for f in result.files]
    else:
        lines.append("Files: the output folder is up to date.")
    width = max([len(s.name) for s in result.services] + [7])
    lines.append("Services:")
    lines.append(f"  {'SERVICE':<{width}}  {'ACTION':<8}  WHY")
    for service in result.services:
        why = ", ".join(service.reasons)
        if "orphan" in service.reasons and service.action == "keep":
            why += " (up leaves it running; `nachos-deploy down` removes it)"
        lines.append(f"  {service.name:<{width}}  {service.action:<8}  {why}".rstrip())
    created = result.create
    for kind, names in (
        ("volumes", created.volumes),
        ("networks", created.networks),
        ("configs", created.configs),
        ("secrets", created.secrets),
    ):
        if names:
            lines.append(f"To create, {kind}: {', '.join(names)}")
    if created.replaced_networks:
        lines.append(
            f"To replace, networks (their subnet or internal flag changes; every container on them is "
            f"replaced): {', '.join(created.replaced_networks)}"
        )
    out.print("\n".join(lines), markup=False, highlight=False, soft_wrap=True)
    if diff:
        for changed in result.files:
            out.print(changed.diff.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)
    summary = (
        "`nachos-deploy up` would apply these changes (exit 2)."
        if result.changes
        else "Nothing would change (exit 0)."
    )
    out.print(summary, markup=False, highlight=False)
