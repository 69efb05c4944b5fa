"""`request` and `env`: talk to the running stack's bus, or hand its connection details to a script."""

import sys
from typing import Annotated

import typer

from nachos_deploy.core.errors import DeployError, ExitCode
from nachos_deploy.interfaces import outputs as outputs_mod
from nachos_deploy.interfaces.cli.app import app
from nachos_deploy.interfaces.cli.console import out
from nachos_deploy.interfaces.cli.guard import handle_errors, load_running
from nachos_deploy.interfaces.cli.options import ConfigOpt, OutputOpt, ProjectOpt, SetOpt


@app.command()
@handle_errors
def request(
    subject: Annotated[str, typer.Argument(help="Subject, e.g. nachos.gateway.subagents.list.")],
    data: Annotated[
        str | None,
        typer.Argument(
            help="Payload (UTF-8 text). Left out: {} (the platform's components read every request "
            "as JSON and drop an empty one).",
            show_default=False,
        ),
    ] = None,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    timeout: Annotated[
        float, typer.Option("--timeout", metavar="SECONDS", help="Seconds to wait for the reply.", min=0.1)
    ] = 2.0,
    raw: Annotated[bool, typer.Option("--raw", help="Send DATA as it is, also when it is not JSON.")] = False,
) -> None:
    """Send one request through the running stack's bus and print the reply: a quick way to talk to
    a component. Without DATA the payload is {}. DATA that is not JSON is refused (exit 2) unless
    --raw: the platform's components drop any other payload, so nothing would answer; so is a
    SUBJECT nothing can be sent on (empty, white space, an empty token, a wildcard * or >). Exits 1
    when nobody answers in time, naming the subject and how long it waited.

    Example: nachos-deploy request nachos.gateway.subagents.list '{}'
    """
    from nachos_deploy.interfaces import api

    _require_subject(subject)
    if data is not None and not raw:
        _require_json(data)
    stack = load_running(config, set_, project, output, "request")
    payload = api.REQUEST_PAYLOAD if data is None else data.encode()
    reply = api.request(stack, subject, payload, timeout=timeout)
    out.print(reply.decode("utf-8", errors="replace"), markup=False)


def _require_subject(subject: str) -> None:
    """A subject nothing can be sent on refused at once (exit 2), not as "No reply": NATS subjects
    are tokens separated by dots, with no white space, and a request goes to one subject, not to a
    wildcard (``*`` or ``>``, which only a subscription may name)."""
    tokens = subject.split(".")
    if subject and not any(c.isspace() for c in subject) and all(tokens):
        wild = [t for t in tokens if t in ("*", ">")]
        if not wild:
            return
        why = f"its token {wild[0]!r} is a wildcard, which only a subscription may name"
    elif not subject:
        why = "it is empty"
    elif any(c.isspace() for c in subject):
        why = "it holds white space"
    else:
        why = "it has an empty token (a leading, trailing or doubled dot)"
    raise DeployError(
        f"SUBJECT {subject!r} is not a subject a request can be sent on: {why}. A NATS subject is "
        "tokens separated by dots, e.g. nachos.gateway.subagents.list.",
        exit_code=ExitCode.USAGE,
    )


def _require_json(data: str) -> None:
    """A payload the components would drop refused at once, rather than after the --timeout wait."""
    import json

    try:
        json.loads(data)
    except (ValueError, RecursionError) as exc:  # json's decoder recurses: `[[[...` deep enough raises
        if isinstance(exc, json.JSONDecodeError):
            where = f" ({exc.msg} at character {exc.pos})"
        elif isinstance(exc, RecursionError):
            where = " (nested deeper than Python's JSON decoder reads)"
        else:
            where = ""
        raise DeployError(
            f"DATA is not JSON{where}: the platform's components read every request as JSON and drop "
            "any other payload, so nothing would answer it. Quote it for the shell, e.g. "
            "'{\"limit\": 5}', or send it as it is with --raw.",
            exit_code=ExitCode.USAGE,
        ) from None


@app.command()
@handle_errors
def env(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    format_: Annotated[
        outputs_mod.Format,
        typer.Option("--format", help="dotenv (KEY=value), json, or shell (`export KEY=...` for eval)."),
    ] = outputs_mod.Format.DOTENV,
) -> None:
    """Print the running stack's connection details for a script: NATS_URL (with the operator's
    credentials, usable as it is; tls:// when the bus speaks TLS), NATS_MONITOR_URL (only with
    bus.publish_monitor), NATS_CA_FILE (the CA a tls:// client trusts, only with TLS) and NACHOS_PROJECT.
    Exits 1 when the bus is not running.

    Example: eval "$(nachos-deploy env --format shell)"
    """
    from nachos_deploy.interfaces import api

    stack = load_running(config, set_, project, output, "env")
    sys.stdout.write(outputs_mod.text(api.env(stack), format_))
