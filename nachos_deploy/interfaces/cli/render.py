"""`render` and `validate`: the configuration turned into files, or only checked."""

from typing import Annotated

import typer

from nachos_deploy.core.errors import ExitCode
from nachos_deploy.interfaces.cli.app import app
from nachos_deploy.interfaces.cli.console import err, out
from nachos_deploy.interfaces.cli.guard import handle_errors, load_stack
from nachos_deploy.interfaces.cli.options import ConfigOpt, OutputOpt, ProjectOpt, SetOpt


@app.command()
@handle_errors
def render(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    check: Annotated[
        bool,
        typer.Option("--check", help="Write nothing; exit 1 and name the files when the folder differs."),
    ] = False,
) -> None:
    """Write the Compose file, the NATS config (and a minimal nachos.toml when none sits beside the
    deploy file) into the output folder, all or nothing. Output is byte-for-byte deterministic. The
    bus credentials those files read are made in credentials/ when missing (never rendered), so
    `docker compose -f <output>/docker-compose.yml up -d --wait` runs the stack without nachos-deploy.

    Example: nachos-deploy render -c deploy/prod.yaml -o deploy/rendered --check
    """
    from nachos_deploy.interfaces import api

    stack = load_stack(config, set_, project, output)
    if check:
        changed = api.stale_files(stack)
        if changed:
            err.print(
                f"{stack.output_dir} is out of date: {', '.join(changed)} differ(s) from the "
                "configuration. Run `nachos-deploy render` to update."
            )
            raise typer.Exit(int(ExitCode.FAILED))
        out.print(f"{stack.output_dir} is up to date ({', '.join(sorted(stack.files))}).")
        return
    changed = api.write_files(stack)
    state = f"updated or removed {', '.join(changed)}" if changed else "unchanged"
    out.print(f"Rendered {stack.output_dir} ({state}).")
    if api.uses_credentials(stack):
        where = stack.output_dir / "credentials"
        out.print(f"Bus credentials: {where} (made when missing, never rendered, ignored by git).")


@app.command()
@handle_errors
def validate(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
) -> None:
    """Check the configuration and that every required secret is set (in the environment or the
    output folder's .env), then let `docker compose config` check the rendered files (when a Compose
    v2 CLI is installed; no engine is needed). Says which missing bind-source folders `up` will
    create (those named relative to the deploy file) and refuses a missing absolute one (exit 3), the
    same on Compose and Swarm. With nachos-deploy.lock beside the deploy file, every image is checked
    against it (this needs the engine; an image that differs: exit 4). Writes nothing to the output
    folder.

    Example: nachos-deploy validate --set bus.max_payload=1MB
    """
    from nachos_deploy.interfaces import api

    stack = load_stack(config, set_, project, output)
    stack.require_secrets()
    folders = api.bind_sources(stack)  # a missing absolute bind source is refused here (exit 3)
    out.print(
        f"Configuration is valid: project {stack.project}, services "
        + ", ".join(
            f"{service.name} (tool id {service.tool_id})" if service.tool_id else service.name
            for service in stack.plan.services
        )
        + "."
    )
    out.print(f"Bind sources: {folders}.", markup=False)
    tls = api.check_bus_tls(stack)  # the user's certificate files are refused here (exit 3)
    if tls is not None:
        out.print(f"TLS on the bus's client port: {tls}.", markup=False)
    ingress = api.check_ingress_tls(stack)  # the user's certificate files are refused here (exit 3)
    if ingress is not None:
        out.print(f"The ingress: {ingress}.", markup=False)
    locked = api.check_lock(stack)  # an image that differs from nachos-deploy.lock: exit 4
    if locked is not None:
        out.print(f"Every image is the one {stack.lock_file} locks ({locked} services).", markup=False)
    checked = api.check_compose(stack)
    if checked.skipped is not None:
        out.print(f"Skipped the Compose check: {checked.skipped}.")
        return
    out.print(f"Docker Compose {checked.version} accepts the rendered files.")
