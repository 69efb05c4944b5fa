"""The command line: parse options, call the library, print. No deployment logic lives here."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console

from nachos_deploy import __version__
from nachos_deploy.errors import DeployError, ExitCode
from nachos_deploy.stack import Stack, prepare

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
    add_completion=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        "-c",
        help="Deploy file (default: ./nachos-deploy.yaml, or $NACHOS_DEPLOY_CONFIG; built-in "
        "defaults when there is none).",
        show_default=False,
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
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
        help="Compose project name (overrides the `project` key).",
        show_default=False,
    ),
]
OutputOpt = Annotated[
    Path | None,
    typer.Option(
        "--output",
        "-o",
        help="Folder for the rendered files (default: the `output` key, ./.nachos beside the deploy file).",
        show_default=False,
    ),
]


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn domain errors into one message and the documented exit code: never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except DeployError as exc:
            err.print(f"[bold red]error:[/] {exc.message}", markup=True)
            if exc.details:
                err.print(exc.details, markup=False)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            err.print("interrupted")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None

    return wrapper


def _stack(config: Path | None, sets: list[str] | None, project: str | None, output: Path | None) -> Stack:
    stack = prepare(config, sets=sets or (), project=project, output=output)
    for warning in stack.plan.warnings:
        err.print(f"[yellow]warning:[/] {warning}", markup=True)
    return stack


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
    from nachos_deploy import files

    stack = _stack(config, set_, project, output)
    if check:
        changed = files.differences(stack.output_dir, stack.files)
        if changed:
            err.print(
                f"{stack.output_dir} is out of date: {', '.join(changed)} differ(s) from the "
                "configuration. Run `nachos-deploy render` to update."
            )
            raise typer.Exit(int(ExitCode.FAILED))
        out.print(f"{stack.output_dir} is up to date ({', '.join(sorted(stack.files))}).")
        return
    changed = files.write_all(stack.output_dir, stack.files)
    state = f"updated {', '.join(changed)}" if changed else "unchanged"
    out.print(f"Rendered {stack.output_dir} ({state}).")


@app.command()
@handle_errors
def validate(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    project: ProjectOpt = None,
    output: OutputOpt = None,
) -> None:
    """Check the configuration, then let `docker compose config` check the rendered files (when a
    Compose v2 CLI is installed; no engine is needed). Writes nothing to the output folder.

    Example: nachos-deploy validate --set bus.max_payload=1MB
    """
    import tempfile

    from nachos_deploy import engine
    from nachos_deploy import files as files_mod

    stack = _stack(config, set_, project, output)
    out.print(
        f"Configuration is valid: project {stack.project}, services "
        + ", ".join(service.name for service in stack.plan.services)
        + "."
    )
    version = engine.compose_version()
    if version is None:
        out.print("Skipped the Compose check: no Compose v2 CLI found (`docker compose version`).")
        return
    with tempfile.TemporaryDirectory(prefix="nachos-deploy-validate-") as tmp:
        staged = Path(tmp) / stack.output_dir.name
        files_mod.write_all(staged, stack.files)
        # Relative paths in the file are resolved from the real output folder, as at `up`.
        engine.check_compose_file(stack.project, staged / stack.compose_file.name, stack.output_dir)
    out.print(f"Docker Compose {version} accepts the rendered files.")


def main() -> None:
    app(prog_name="nachos-deploy")


if __name__ == "__main__":  # pragma: no cover
    main()
