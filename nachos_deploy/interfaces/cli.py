"""The command line: parse options, call the library, print. No deployment logic lives here."""

# No `from __future__ import annotations` here: Typer reads every command's annotations on every
# start, and as strings each one costs a compile() (~170 of them, ~4 ms of a `--help`).
import contextlib
import functools
import json
import os
import shlex
import signal
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar, cast

import typer

from nachos_deploy import __version__
from nachos_deploy.core.errors import DeployError, ExitCode
from nachos_deploy.interfaces import lazyparams
from nachos_deploy.interfaces import outputs as outputs_mod

lazyparams.install()  # options not given cost no pydantic TypeAdapter (see the module)

if TYPE_CHECKING:
    # The loader, pydantic, Jinja, the plan and rich cost most of a start-up: only the commands that
    # use them import them (`--help` needs none of them). See benchmarks/cli_speed.py.
    from rich.console import Console

    from nachos_deploy.io.stack import Stack

P = ParamSpec("P")
R = TypeVar("R")

app = typer.Typer(
    name="nachos-deploy",
    help=(
        "Render, start, check and remove the Nachos stack: a NATS bus and the platform's containers "
        "on Docker.\n\nThe bus always starts first and must prove healthy before any component starts."
        "\n\nExample: nachos-deploy render && nachos-deploy up"
    ),
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class _LazyConsole:
    """A rich Console made on first use, with these options: `--help` prints without rich."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:  # only for names the proxy itself lacks
        console = self.__dict__.get("_console")
        if console is None:
            from rich.console import Console

            console = self._console = Console(**self.__dict__.get("_options", {}))
        return getattr(console, name)


def escape(text: str) -> str:
    """rich.markup.escape, imported when a styled line is printed."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


# Markup is off by default: paths, names and values are user text, and a `[/]` in them must print
# as it is (rich would raise MarkupError or swallow `[prod]`). Styled lines opt in and escape.
out = cast("Console", _LazyConsole(highlight=False, soft_wrap=True, markup=False))
err = cast("Console", _LazyConsole(stderr=True, highlight=False, soft_wrap=True, markup=False))

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        metavar="FILE",
        help="Deploy file (default: ./nachos-deploy.yaml, or $NACHOS_DEPLOY_CONFIG; built-in "
        "defaults when there is none).",
        show_default=False,
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        metavar="KEY=VALUE",
        help="Override one key, e.g. --set bus.max_payload=1MB (repeatable; beats the file and "
        "NACHOS_DEPLOY_* variables).",
        show_default=False,
    ),
]
ProjectOpt = Annotated[
    str | None,
    typer.Option(
        "--project",
        "-p",
        metavar="NAME",
        help="Compose project name (overrides the `project` key).",
        show_default=False,
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        metavar="DIR",
        help="Folder for the rendered files (default: the `output` key, ./.nachos beside the deploy file).",
        show_default=False,
    ),
]


def _complete_services(ctx: typer.Context, incomplete: str) -> list[str]:
    """Service names of the deploy file named on the command line so far (shell completion)."""
    from nachos_deploy.io.stack import prepare

    try:
        stack = prepare(ctx.params.get("config"), sets=ctx.params.get("set_") or ())
    except DeployError:
        return []
    return [s.name for s in stack.plan.services if s.name.startswith(incomplete)]


OnlyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--only",
        metavar="SERVICE",
        help="Start only this service (repeatable); the bus always starts first.",
        autocompletion=_complete_services,
    ),
]


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn domain errors into one message and the documented exit code: never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except DeployError as exc:
            err.print(f"[bold red]error:[/] {escape(exc.message)}", markup=True)
            if exc.details:
                err.print(exc.details, markup=False)
            raise typer.Exit(int(exc.exit_code)) from None
        except OSError as exc:  # a path the file system refuses (too long, a loop of links...)
            where = f" ({exc.filename})" if exc.filename else ""
            err.print(
                f"error: {exc.strerror or exc}{where}. Check the paths given (--config, --output, the "
                "`output` key) and the folders they name.",
                markup=False,
            )
            raise typer.Exit(int(ExitCode.OUTPUT)) from None
        except KeyboardInterrupt:
            err.print(_interrupted(func.__name__), markup=False)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None

    return wrapper


_CHANGING = ("up", "down", "rotate")  # commands that can leave a stack half changed
_current: list["Stack"] = []  # the stack the running command works on, for the interrupt message


def _interrupted(command: str) -> str:
    """One line: what an interrupt may have left, and how to finish or remove it."""
    if command not in _CHANGING or not _current:
        return "Interrupted."
    name = _current[-1].project
    return (
        f"Interrupted: project {name} may be left partly {'removed' if command == 'down' else 'started'}; "
        f"run `nachos-deploy up -p {name}` to finish it or `nachos-deploy down -p {name}` to remove it."
    )


def _stack(config: Path | None, sets: list[str] | None, project: str | None, output: Path | None) -> "Stack":
    from nachos_deploy.io.stack import prepare

    stack = prepare(config, sets=sets or (), project=project, output=output)
    _current.append(stack)
    for warning in stack.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}", markup=True)
    return stack


@contextlib.contextmanager
def _spinner(text: str) -> Iterator[Callable[[str], None]]:
    """A spinner that shows each progress line, on a terminal. Where rich would draw none (stderr is
    a pipe or a file, as in CI, and no variable says otherwise), rich is not even imported before
    the bus starts: about 16 ms of the start of every `up`."""
    if not sys.stderr.isatty() and not any(
        name in os.environ for name in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
    ):
        yield lambda _: None
        return
    with err.status(text, spinner="dots") as status:
        yield status.update


def _notice(text: str) -> None:
    """A line for the user that a spinner must not swallow (e.g. waiting for another run's lock)."""
    err.print(f"{text}.", markup=False)


def _version(value: bool) -> None:
    if value:
        out.print(f"nachos-deploy {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Render, start, check and remove the Nachos stack."""


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
    deploy file) into the output folder, all or nothing. Output is byte-for-byte deterministic.

    Example: nachos-deploy render -c deploy/prod.yaml -o deploy/rendered --check
    """
    from nachos_deploy.core.render import HEADER
    from nachos_deploy.io import files

    stack = _stack(config, set_, project, output)
    if check:
        changed = files.differences(stack.output_dir, stack.files, stack.stale)
        if changed:
            err.print(
                f"{stack.output_dir} is out of date: {', '.join(changed)} differ(s) from the "
                "configuration. Run `nachos-deploy render` to update."
            )
            raise typer.Exit(int(ExitCode.FAILED))
        out.print(f"{stack.output_dir} is up to date ({', '.join(sorted(stack.files))}).")
        return
    changed = files.write_all(stack.output_dir, stack.files, stack.stale, marker=HEADER)
    state = f"updated or removed {', '.join(changed)}" if changed else "unchanged"
    out.print(f"Rendered {stack.output_dir} ({state}).")


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
    v2 CLI is installed; no engine is needed). Writes nothing to the output folder.

    Example: nachos-deploy validate --set bus.max_payload=1MB
    """
    from nachos_deploy.docker import engine
    from nachos_deploy.targets import project as project_mod

    stack = _stack(config, set_, project, output)
    stack.require_secrets()
    out.print(
        f"Configuration is valid: project {stack.project}, services "
        + ", ".join(
            f"{service.name} (tool id {service.tool_id})" if service.tool_id else service.name
            for service in stack.plan.services
        )
        + "."
    )
    if stack.swarm:
        out.print("Skipped the Compose check: target is swarm (`docker stack deploy` has no dry run).")
        return
    version = engine.compose_version()
    if version is None:
        out.print("Skipped the Compose check: no Compose v2 CLI found (`docker compose version`).")
        return
    with project_mod.compose_client(stack) as client:
        engine.check_compose_file(client, stack.compose_file)
    out.print(f"Docker Compose {version} accepts the rendered files.")


JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout instead of text.")]


def _print_json(data: object) -> None:
    """One JSON document on stdout, as rich's print_json writes it off a terminal, without its cost."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _fail_json(exc: DeployError) -> None:
    _print_json({"ok": False, "exit_code": int(exc.exit_code), "error": exc.message})


@app.command()
@handle_errors
def up(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", metavar="SECONDS", help="Seconds for the whole start, bus and components.", min=1
        ),
    ] = 120.0,
    only: OnlyOpt = None,
    json_: JsonOpt = False,
    env_file: Annotated[
        Path | None,
        typer.Option(
            "--env-file",
            metavar="PATH",
            help="Also write NATS_URL (with the operator's credentials), NATS_MONITOR_URL and "
            "NACHOS_PROJECT to this dotenv file (atomically, mode 0600).",
            show_default=False,
        ),
    ] = None,
    github: Annotated[
        bool,
        typer.Option(
            "--github",
            help="Also append them to $GITHUB_OUTPUT (as nats_url, monitor_url, project) and "
            "$GITHUB_ENV, and mask the password in the job's log.",
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
    inspection. Running `up` again on an unchanged stack changes nothing.

    --only starts the named services (and their sidecars) after the bus; `status` then judges those
    until a full `up` or `down`. For CI: `up --only bus --set bus.client_port=0 --env-file nats.env`.

    Example: nachos-deploy up --timeout 60 --json
    """
    from nachos_deploy.interfaces import api

    stack = _stack(config, set_, project, output)
    if github:
        outputs_mod.github_targets(os.environ)  # fails now, before anything starts, if unset
    try:
        if json_:
            result = api.up(stack, timeout=timeout, only=only or (), notice=_notice)
        else:
            with _spinner("Starting") as progress:
                result = api.up(
                    stack,
                    timeout=timeout,
                    only=only or (),
                    progress=progress,
                    notice=_notice,
                    warm_up=("nachos_deploy.interfaces.report",),  # the summary's tables, while Compose works
                )
    except DeployError as exc:
        if json_:
            _fail_json(exc)
        raise
    variables = outputs_mod.values(result.endpoints, result.project)
    if github:
        password = outputs_mod.secret_of(variables)
        if password:  # GitHub hides it in the job's log; stderr keeps --json's stdout one document
            (sys.stderr if json_ else sys.stdout).write(f"::add-mask::{password}\n")
        outputs_mod.append_github(variables, os.environ)
    if env_file is not None:
        outputs_mod.write_env_file(env_file, variables)
    if json_:
        _print_json(result.as_json())
    else:
        selector = " ".join(
            f"{flag} {shlex.quote(str(value))}"
            for flag, value in (("-c", config), ("-p", result.project), ("-o", output))
            if value is not None
        )
        from nachos_deploy.interfaces import report

        report.print_up(out, result, selector)


@app.command()
@handle_errors
def down(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    volumes: Annotated[
        bool, typer.Option("--volumes", help="Also delete the volumes: the bus's JetStream data is lost.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before deleting volumes.")] = False,
) -> None:
    """Stop and remove the stack's containers and networks. Volumes (JetStream data, the gateway's
    database) are kept unless --volumes is given; then they are named and you are asked to confirm
    (--yes skips the question; without a terminal, --volumes needs --yes). Removing a stack that does
    not exist is not an error.

    Example: nachos-deploy down --volumes --yes
    """
    from nachos_deploy.docker import engine
    from nachos_deploy.interfaces import api

    stack = _stack(config, set_, project, output)
    if volumes and not yes:
        engine.require_engine()
        names = _volumes(stack)
        if names:
            if not sys.stdin.isatty():
                err.print(
                    f"error: --volumes would delete {', '.join(names)} (JetStream data is lost). Add --yes "
                    "to confirm when not running in a terminal."
                )
                raise typer.Exit(int(ExitCode.USAGE))
            if not typer.confirm(f"Delete volumes {', '.join(names)}? Their data is lost", default=False):
                err.print("Nothing removed.")
                raise typer.Exit(int(ExitCode.FAILED))
    result = api.down(stack, volumes=volumes, notice=_notice)
    out.print(f"Removed project {result.project}'s containers and networks.")
    if result.volumes_removed:
        out.print(f"Deleted volumes: {', '.join(result.volumes_removed)}.")
    elif result.volumes_kept:
        out.print(f"Kept volumes: {', '.join(result.volumes_kept)} (delete them with --volumes).")


@app.command()
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
            autocompletion=_complete_services,
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

    result = api.status(_stack(config, set_, project, output), only)
    if json_:
        _print_json(result.as_json())
    else:
        from nachos_deploy.interfaces import report

        report.print_status(out, result)
    if not result.ok:
        raise typer.Exit(int(ExitCode.FAILED))


@app.command()
@handle_errors
def logs(
    services: Annotated[
        list[str] | None,
        typer.Argument(help="Services to show (default: all).", autocompletion=_complete_services),
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
    from nachos_deploy.docker import engine

    stack = _stack(config, set_, project, output)
    unknown = sorted(set(services or ()) - {s.name for s in stack.plan.services})
    if unknown:
        raise DeployError(
            f"No service named {', '.join(unknown)} in project {stack.project}; its services are "
            f"{', '.join(s.name for s in stack.plan.services)}.",
            exit_code=ExitCode.USAGE,
        )
    engine.require_engine()
    if stack.swarm:
        from nachos_deploy.docker import swarm

        chunks = swarm.stream_logs(
            stack.project, services or [s.name for s in stack.plan.services], follow, tail
        )
    else:
        chunks = _compose_logs(stack, services or [], follow=follow, tail=tail)
    for chunk in chunks:
        sys.stdout.write(chunk)
        sys.stdout.flush()


def _compose_logs(stack: "Stack", services: list[str], *, follow: bool, tail: int | None) -> Iterator[str]:
    from nachos_deploy.docker import engine
    from nachos_deploy.targets import project as project_mod

    with project_mod.compose_client(stack) as client:
        yield from engine.stream_logs(client, services, follow=follow, tail=tail)


def _volumes(stack: "Stack") -> list[str]:
    """The stack's volumes on this engine, by the label Compose or Swarm gave them."""
    from nachos_deploy.docker import engine, swarm

    return swarm.volumes(stack.project) if stack.swarm else engine.project_volumes(stack.project)


@app.command()
@handle_errors
def request(
    subject: Annotated[str, typer.Argument(help="Subject, e.g. nachos.gateway.subagents.list.")],
    data: Annotated[str, typer.Argument(help="Payload (UTF-8 text).")] = "",
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    timeout: Annotated[
        float, typer.Option("--timeout", metavar="SECONDS", help="Seconds to wait for the reply.", min=0.1)
    ] = 2.0,
) -> None:
    """Send one request through the running stack's bus and print the reply: a quick way to talk to
    a component. Exits 1 when nobody answers in time.

    Example: nachos-deploy request nachos.gateway.subagents.list '{}'
    """
    from nachos_deploy.bus import natsclient
    from nachos_deploy.bus.monitor import BusUnavailable
    from nachos_deploy.targets import project as project_mod

    endpoints = project_mod.running_endpoints(_stack(config, set_, project, output))
    try:
        reply = natsclient.request(endpoints.nats_url, subject, data.encode(), timeout=timeout)
    except BusUnavailable as exc:
        raise DeployError(f"No reply on {subject}: {exc}", exit_code=ExitCode.FAILED) from None
    out.print(reply.decode("utf-8", errors="replace"), markup=False)


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
    credentials, usable as it is), NATS_MONITOR_URL and NACHOS_PROJECT. Exits 1 when the bus is not
    running.

    Example: eval "$(nachos-deploy env --format shell)"
    """
    from nachos_deploy.interfaces import api

    stack = _stack(config, set_, project, output)
    sys.stdout.write(outputs_mod.text(api.env(stack), format_))


@app.command()
@handle_errors
def doctor(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    json_: JsonOpt = False,
) -> None:
    """Check this machine for a deployment: the configuration, the Docker engine and its version,
    Compose v2, healthcheck start_interval support (Engine 25+), free disk, whether every image is on
    the engine, and whether the configured host ports are free. Each check passes, warns or fails with
    a fix; any failure exits 1.

    Example: nachos-deploy doctor --json
    """
    from nachos_deploy.interfaces import report
    from nachos_deploy.io.stack import prepare
    from nachos_deploy.lifecycle import doctor as doctor_mod

    stack: Stack | None = None
    problem: DeployError | None = None
    try:
        stack = prepare(config, sets=set_ or (), project=project, output=output)
    except DeployError as exc:
        problem = exc
    checks = doctor_mod.run_checks(stack, problem)
    failed = any(check.level == "fail" for check in checks)
    if json_:
        _print_json({"ok": not failed, "checks": [c.as_json() for c in checks]})
    else:
        report.print_checks(out, checks)
    if failed:
        raise typer.Exit(int(ExitCode.FAILED))


credentials_app = typer.Typer(
    help="The bus's generated passwords (kept in the output folder's credentials/, mode 0600).",
    no_args_is_help=True,
)
app.add_typer(credentials_app, name="credentials")


@app.command()
@handle_errors
def bench(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
    url: Annotated[
        str | None,
        typer.Option(
            "--url",
            metavar="NATS_URL",
            help="Measure the bus at this URL (with its credentials, if any) instead of the running "
            "stack's; the deploy file is not read.",
            show_default=False,
        ),
    ] = None,
    monitor_url: Annotated[
        str | None,
        typer.Option(
            "--monitor-url",
            metavar="URL",
            help="With --url: the bus's HTTP monitoring, for its memory and CPU (not measured without).",
            show_default=False,
        ),
    ] = None,
    duration: Annotated[
        float,
        typer.Option(
            "--duration",
            metavar="SECONDS",
            help="Seconds of measurements, at least 0.5; connecting and clean-up add a second or two.",
            min=0.5,
            clamp=True,
        ),
    ] = 5.0,
    json_: JsonOpt = False,
) -> None:
    """Measure the running stack's bus (or the one at --url) against the platform's targets, within
    about --duration seconds plus a second or two to connect and clean up:

    - request/reply latency (p50, p90, p99, max) and requests/s, one request in flight, echoed by a
      responder on a second connection, for 128 B, 1 KiB, 64 KiB and max_payload payloads (half the
      time);
    - the core publish rate of 128-byte messages and how many a subscriber got (a quarter);
    - the JetStream acked publish rate into a scratch memory stream, deleted afterwards whatever
      happens (a quarter; not measured when JetStream is off);
    - the bus's memory and CPU from its monitor's /varz (the highest readings; memory before the
      load too).

    Targets: request/reply p99 of 128 B below 10 ms, bus memory below 50 MiB (50 * 1024 * 1024
    bytes). Without a monitor URL the memory target is "not measured", not missed.

    --json prints one object: ok, nats_url (no password), monitor_url, server_version, max_payload,
    duration_s, elapsed_s, request_reply (a list of size, requests, p50_ms, p90_ms, p99_ms, max_ms,
    requests_per_s), publish (size, messages, seconds, msgs_per_s, mib_per_s, delivered), jetstream
    (the same, or null) with jetstream_note (why it is null), memory_bytes, memory_idle_bytes,
    cpu_percent, and targets (a list of name, target, limit, unit, measured, ok: true, false, or
    null when not measured). On an error: ok false, exit_code and error.

    Exit codes: 0 every target met, 1 a target missed (or the bus is not running, or failed during
    the run), and the other commands' codes for the configuration and the engine.

    Example: nachos-deploy bench --duration 10 --json
    """
    from nachos_deploy.bus import bench as bench_mod

    try:
        if monitor_url is not None and url is None:
            raise DeployError(
                "--monitor-url goes with --url; without --url the running stack's monitor is used.",
                exit_code=ExitCode.USAGE,
            )
        max_payload: int | None = None
        if url is None:
            from nachos_deploy.targets import project as project_mod

            stack = _stack(config, set_, project, output)
            endpoints = project_mod.running_endpoints(stack)
            url, monitor_url = endpoints.nats_url, endpoints.monitor_url
            max_payload = stack.plan.bus.max_payload
        if json_:
            result = bench_mod.run(url, monitor_url, duration=duration, max_payload=max_payload)
        else:
            with err.status(f"Measuring the bus for {duration:g}s", spinner="dots"):
                result = bench_mod.run(url, monitor_url, duration=duration, max_payload=max_payload)
    except DeployError as exc:
        if json_:
            _fail_json(exc)
        raise
    if json_:
        _print_json(result.as_json())
    else:
        bench_mod.print_result(out, result)
    if not result.ok:
        raise typer.Exit(int(ExitCode.FAILED))


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
    from nachos_deploy.docker import engine
    from nachos_deploy.interfaces import api, report
    from nachos_deploy.io import credentials
    from nachos_deploy.targets import project as project_mod

    stack = _stack(config, set_, project, output)
    if not stack.plan.auth:
        raise DeployError(
            "bus.auth is false: this bus has no credentials to rotate.", exit_code=ExitCode.USAGE
        )
    engine.require_engine()
    if stack.swarm:
        running = project_mod.bus_endpoints(None, stack) is not None
    else:
        with project_mod.compose_client(stack) as client:
            running = project_mod.bus_endpoints(client, stack) is not None
    credentials.ensure(stack.output_dir, stack.plan, rotate=True)
    out.print(f"New bus passwords written to {credentials.folder(stack.output_dir)}.")
    if running:
        with err.status("Restarting the bus and its sidecars", spinner="dots") as status:
            result = api.up(stack, timeout=timeout, progress=lambda text: status.update(text))
        report.print_up(out, result, f"-p {shlex.quote(result.project)}")


def _terminate(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a run the way Ctrl-C does: one line, exit 130


def main() -> None:
    """The console script.

    Pydantic's plugins are off (unless the variable says otherwise): their scan of every installed
    package costs about 9 ms of each start, and no plugin has any use for this tool's own models.

    The process ends without the interpreter's teardown, once its output is flushed: freeing every
    imported module (pydantic, nats-py, rich) cost 35-50 ms after each command had finished. Nothing
    can be left half done by then: each command has closed its files and thread pools, and the one
    background thread (the NATS client's import, see ``gate.warm_up``) is a daemon."""
    signal.signal(signal.SIGTERM, _terminate)
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        app(prog_name="nachos-deploy")
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if isinstance(code, str):  # sys.exit("message"), as the interpreter would print it
        sys.stderr.write(f"{code}\n")
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing left to say there
            stream.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)


if __name__ == "__main__":  # pragma: no cover
    main()
