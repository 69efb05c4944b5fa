"""What every command shares around its work: the stack it loads, one message and the documented exit
code for each failure (never a traceback), and, for `--json`, one document on stdout whatever happens."""

from __future__ import annotations

import functools
import shlex
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

import typer
import typer.core

from nachos_deploy.core.errors import ConfigError, DeployError, ExitCode
from nachos_deploy.interfaces.cli.console import err, escape, failure_json

if TYPE_CHECKING:
    from nachos_deploy.interfaces.api import Stack

P = ParamSpec("P")
R = TypeVar("R")

_CHANGING = ("up", "down", "rotate")  # commands that can leave a stack half changed
_current: list[Stack] = []  # the stack the running command works on, for the interrupt message


def handle_errors(func: Callable[P, R]) -> Callable[P, R]:
    """Turn domain errors into one message and the documented exit code: never a traceback. A command
    run with --json (a ``json_`` parameter that is true) also prints ``{"ok": false, "exit_code",
    "error"}`` on stdout, so that its stdout is one JSON document for every exit code."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        as_json = kwargs.get("json_") is True
        try:
            return func(*args, **kwargs)
        except DeployError as exc:
            if as_json:
                failure_json(int(exc.exit_code), exc.message, exc.fields)
            err.print(f"[bold red]error:[/] {escape(exc.message)}", markup=True)
            if exc.details:
                err.print(exc.details, markup=False)
            raise typer.Exit(int(exc.exit_code)) from None
        except BrokenPipeError:  # stdout's reader went away (`logs -f | grep -m1 ...`, `| head`)
            _quiet_stdout()
            raise typer.Exit(int(ExitCode.PIPE_CLOSED)) from None
        except OSError as exc:  # a path the file system refuses (too long, a loop of links...)
            where = f" ({exc.filename})" if exc.filename else ""
            message = (
                f"{exc.strerror or exc}{where}. Check the paths given (--config, --output, the "
                "`output` key) and the folders they name."
            )
            if as_json:
                failure_json(int(ExitCode.OUTPUT), message)
            err.print(f"error: {message}", markup=False)
            raise typer.Exit(int(ExitCode.OUTPUT)) from None
        except KeyboardInterrupt:
            message = interrupted(func.__name__)
            if as_json:
                failure_json(int(ExitCode.INTERRUPTED), message)
            err.print(message, markup=False)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None

    return wrapper


def _quiet_stdout() -> None:
    """Point stdout at /dev/null, so that Python's flush at exit does not fail on the closed pipe
    again and print a traceback (the Python documentation's recipe for SIGPIPE)."""
    import contextlib
    import os
    import sys

    devnull = os.open(os.devnull, os.O_WRONLY)
    with contextlib.suppress(OSError, ValueError):  # no real stdout (a test's capture): nothing to flush
        os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


class JsonCommand(typer.core.TyperCommand):
    """A command whose --json promise covers a bad command line too (exit 2): Click reports it on
    stderr as usual, and stdout gets the failure document before the command ever runs. Click's
    usage errors are recognised by their exit code (Typer 0.29 carries its own copy of Click, whose
    classes are private), so no private name is imported here."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        as_json = "--json" in args
        try:
            return super().parse_args(ctx, args)
        except Exception as exc:
            if as_json and getattr(exc, "exit_code", None) == ExitCode.USAGE:
                message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
                failure_json(int(ExitCode.USAGE), message)
            raise


def interrupted(command: str) -> str:
    """One line: what an interrupt may have left, and how to finish or remove it."""
    if command not in _CHANGING or not _current:
        return "Interrupted."
    name = _current[-1].project
    config_path = _current[-1].loaded.config_path  # absolute: the hint works from any folder
    up = shlex.join(["nachos-deploy", "up", *(["-c", str(config_path)] if config_path else []), "-p", name])
    return (
        f"Interrupted: project {name} may be left partly {'removed' if command == 'down' else 'started'}; "
        f"run `{up}` to finish it or `nachos-deploy down -p {name}` to remove it."
    )


def load_stack(
    config: Path | None,
    sets: Sequence[str] | None,
    project: str | None,
    output: Path | None,
    *,
    warn: bool = True,
    strict_lock: bool = True,
) -> Stack:
    """The command's stack, validated and rendered in memory; its warnings go to stderr when ``warn``.
    The configuration's warnings are said by the commands that judge or apply it (render, validate,
    up, doctor); the ones that only look at or talk to a running stack (status, request, env, logs,
    bench, down) pass ``warn=False``, or every `request` would repeat them all (issue 18).
    ``strict_lock=False`` lets a command go on past a broken nachos-deploy.lock (see api.load)."""
    from nachos_deploy.interfaces import api

    stack = api.load(config, sets=sets or (), project=project, output=output, strict_lock=strict_lock)
    _current.append(stack)
    if warn:
        for warning in stack.warnings:
            err.print(f"[yellow]warning:[/] {escape(warning)}", markup=True)
    return stack


def load_running(
    config: Path | None, sets: Sequence[str] | None, project: str | None, output: Path | None, command: str
) -> Stack:
    """The stack the project runs, as it was deployed (from any folder, whatever the deploy file in
    front says now), for the commands that read or remove it; when the configuration given differs
    from it, one line on stderr says so and which command would apply it."""
    from nachos_deploy.interfaces import api

    try:
        given = load_stack(config, sets, project, output, warn=False, strict_lock=False)
    except ConfigError as unreadable:
        located = api.deployed_by_name(config, sets, project, output)
        if located is None:
            raise
        err.print(
            f"warning: {unreadable.message} `{command}` goes on with what project {located.stack.project} "
            f"runs, as deployed from {located.source}.",
            markup=False,
        )
        stack: Stack = located.stack
        _current.append(stack)
        return stack
    if given.lock_error is not None:  # pins images for the next `up`; nothing here needs it
        err.print(f"warning: {given.lock_error} `{command}` goes on without it.", markup=False)
    located = api.deployed(given)
    line = running_note(given, located, sets or (), output, command)
    if line:
        err.print(line, markup=False)
    _current[-1] = located.stack
    return located.stack


def running_note(
    given: Stack, located: Any, sets: Sequence[str], output: Path | None, command: str
) -> str | None:
    """One line when what runs is not what the configuration in front of the command describes:
    a deploy file or ``--set`` values that differ (with the ``up`` that applies them), or a stack
    whose folder keeps no record of what was deployed."""
    project = given.project
    if located.unrecorded:
        return (
            f"note: project {project} runs from {located.running_from}, which keeps no record of what was "
            "deployed (an older nachos-deploy or Compose alone): judged by the configuration in front of "
            f"you; `nachos-deploy up -p {project}` from its deploy file's folder records it."
        )
    config_path = given.loaded.config_path
    if not located.differs or (config_path is None and not sets):
        return None  # nothing in front of the command to compare: the defaults with -p, say
    from nachos_deploy.interfaces import api

    own = api.file_project(given)
    if own is not None and own != project:  # another project's folder: its file is not this one's
        return (
            f"note: the deploy file {config_path} is project {own}'s, not {project}'s; {command} works on "
            f"what project {project} runs (deployed from {located.source})."
        )
    front = f"the deploy file {config_path}" if config_path else "the configuration"
    front += " with the --set values given" if sets else ""
    apply = ["nachos-deploy", "up", *(["-c", str(config_path)] if config_path else [])]
    apply += [item for value in sets for item in ("--set", value)]
    apply += [*(["-o", str(output.absolute())] if output else []), "-p", project]
    came = (
        "that file as it was then, or with other --set values"
        if config_path is not None and located.source == str(config_path)
        else located.source
    )
    return (
        f"note: {front} differs from what project {project} runs (deployed from {came}); "
        f"{command} works on what runs; `{shlex.join(apply)}` applies it."
    )


def complete_services(ctx: typer.Context, incomplete: str) -> list[str]:
    """Service names of the deploy file named on the command line so far (shell completion)."""
    from nachos_deploy.interfaces import api

    try:
        stack = api.load(ctx.params.get("config"), sets=ctx.params.get("set_") or ())
    except DeployError:
        return []
    return [s.name for s in stack.plan.services if s.name.startswith(incomplete)]
