"""`up`: start the stack bus-first, then print a summary for people or one JSON document for scripts."""

import os
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from nachos_deploy.interfaces import outputs as outputs_mod
from nachos_deploy.interfaces.cli.app import app
from nachos_deploy.interfaces.cli.console import notice, out, print_json, spinner
from nachos_deploy.interfaces.cli.guard import JsonCommand, handle_errors, load_stack
from nachos_deploy.interfaces.cli.options import (
    ConfigOpt,
    JsonOpt,
    OnlyOpt,
    OutputOpt,
    ProjectOpt,
    SetOpt,
    StartTimeoutOpt,
)


@app.command(cls=JsonCommand)
@handle_errors
def up(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    timeout: StartTimeoutOpt = 120.0,
    only: OnlyOpt = None,
    json_: JsonOpt = False,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            metavar="PATH",
            help="Also write NATS_URL (with the operator's credentials), NATS_MONITOR_URL (only with "
            "bus.publish_monitor), NACHOS_PROJECT and each webhook channel's NACHOS_WEBHOOK_URL_<CHANNEL> "
            "to this dotenv file (atomically, mode 0600).",
            show_default=False,
        ),
    ] = None,
    github: Annotated[
        bool,
        typer.Option(
            "--github",
            help="Also append them to $GITHUB_OUTPUT (as nats_url, monitor_url, project, and "
            "nachos_webhook_url_<channel> per webhook channel) and $GITHUB_ENV, and mask the password "
            "in the job's log.",
        ),
    ] = False,
) -> None:
    """Start the stack: check the configuration and required secrets, let Compose check the files,
    write them, start the bus alone and prove it healthy from the host (/healthz, JetStream on in /jsz,
    max_payload in /varz, a NATS request/reply round trip), only then start the components and wait
    until each is running, healthy and connected to the bus (/connz).

    Converges on a stack a bus outage left behind: components running but off the bus, or stuck in a
    restart back-off, are restarted; only restarts and failed healthchecks of this run count.

    A bus that fails stops everything before any component starts (exit 5); a component that fails is
    named with the exit code of its failed run and its last log lines (exit 6) and the stack is left for
    inspection. Last, each webhook channel's public URL is called from the host as its provider calls
    it (Meta's verification handshake, Slack's signed url_verification); one that fails is exit 8.
    Running `up` again on an unchanged stack changes nothing.

    --only starts the named services (and their sidecars) after the bus; `status` then judges those
    until a full `up` or `down`. For CI: `up --only bus --set bus.client_port=0 --env-file nats.env`.

    Example: nachos-deploy up --timeout 60 --json
    """
    from nachos_deploy.interfaces import api

    stack = load_stack(config, set_, project, output)
    if github:
        outputs_mod.github_targets(os.environ)  # fails now, before anything starts, if unset
    if json_:
        result = api.up(stack, timeout=timeout, only=only or (), notice=notice)
    else:
        with spinner("Starting") as progress:
            result = api.up(
                stack,
                timeout=timeout,
                only=only or (),
                progress=progress,
                notice=notice,
                warm_up=("nachos_deploy.interfaces.report",),  # the summary's tables, while Compose works
            )
    webhooks = {webhook.channel: webhook.url for webhook in result.webhooks}
    variables = outputs_mod.values(result.endpoints, result.project, webhooks)
    if github:
        password = outputs_mod.secret_of(variables)
        if password:  # GitHub hides it in the job's log; stderr keeps --json's stdout one document
            (sys.stderr if json_ else sys.stdout).write(f"::add-mask::{password}\n")
        outputs_mod.append_github(variables, os.environ)
    if env_file is not None:
        outputs_mod.write_env_file(env_file, variables)
    if json_:
        print_json(result.as_json())
    else:
        # Absolute paths: each hint must work pasted into a shell in any folder; with the --set
        # values, the configuration it names is the one deployed (else `status` notes a difference).
        options = [("-c", config), *(("--set", value) for value in set_ or ()), ("-p", result.project)]
        selector = " ".join(
            f"{flag} {shlex.quote(str(value.absolute() if isinstance(value, Path) else value))}"
            for flag, value in (*options, ("-o", output))
            if value is not None
        )
        from nachos_deploy.interfaces import report

        report.print_up(out, result, selector)
