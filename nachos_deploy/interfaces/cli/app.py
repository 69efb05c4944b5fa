"""The `nachos-deploy` Typer application and the console script that runs it.

The commands live in the modules beside this one, one per command group; importing the package
registers them all on :data:`app`.
"""

# No `from __future__ import annotations` in the command modules: Typer reads every command's
# annotations on every start, and as strings each one costs a compile() (~170 of them, ~4 ms of a
# `--help`).
import contextlib
import os
import signal
import sys
from typing import Annotated

import typer

from nachos_deploy import __version__
from nachos_deploy.core.errors import ExitCode
from nachos_deploy.interfaces import lazyparams
from nachos_deploy.interfaces.cli.console import out

lazyparams.install()  # options not given cost no pydantic TypeAdapter (see the module)

# Set to 1 for the interpreter's ordinary exit (atexit handlers, module teardown) instead of os._exit.
# Not NACHOS_DEPLOY_*: every variable of that prefix is read as a configuration key.
NO_FAST_EXIT = "NACHOS_NO_FAST_EXIT"

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


def _terminate(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM ends a run the way Ctrl-C does: one line, exit 130


def main() -> None:
    """The console script.

    Pydantic's plugins are off (unless the variable says otherwise): their scan of every installed
    package costs about 9 ms of each start, and no plugin has any use for this tool's own models.

    The process ends without the interpreter's teardown, once its output is flushed: freeing every
    imported module (pydantic, nats-py, rich) cost 35-50 ms after each command had finished. Nothing
    can be left half done by then: each command has closed its files and thread pools, and the one
    background thread (the NATS client's import, see ``gate.warm_up``) is a daemon. Whatever a
    command wrote and did not flush is flushed here first (tests/test_fast_exit.py proves it with
    buffered pipes); NACHOS_NO_FAST_EXIT=1 gives the ordinary exit, for an embedding or a
    debugger that needs atexit handlers to run."""
    signal.signal(signal.SIGTERM, _terminate)
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        app(prog_name="nachos-deploy")
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    except BrokenPipeError:  # a write outside a command's guard (`--version | true`) to a closed pipe
        code = int(ExitCode.PIPE_CLOSED)
    if isinstance(code, str):  # sys.exit("message"), as the interpreter would print it
        sys.stderr.write(f"{code}\n")
    status = code if isinstance(code, int) else 0 if code is None else 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # a closed pipe: nothing left to say there
            stream.flush()
    if os.environ.get(NO_FAST_EXIT, "") not in ("", "0"):
        sys.exit(status)
    os._exit(status)
