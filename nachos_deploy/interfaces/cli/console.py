"""Where the command line prints: results on stdout, messages on stderr, JSON documents for scripts.

rich is imported on the first styled line, not at start: `--help`, `render` and every `--json` run
print without it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from rich.console import Console


class _LazyConsole:
    """A rich Console made on first use, with these options: `--help` prints without rich."""

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._console: Console | None = None

    def __getattr__(self, name: str) -> Any:  # only for names the proxy itself lacks
        console = self.__dict__.get("_console")
        if console is None:
            console = self._console = _quiet_on_broken_pipe(**self.__dict__.get("_options", {}))
        return getattr(console, name)


def _quiet_on_broken_pipe(**options: Any) -> Console:
    """A rich Console that leaves a closed pipe to the commands' guard (exit 141, quietly, as for a
    plain write), where rich's own ``on_broken_pipe`` would exit 1: "a check failed" to a script."""
    from rich.console import Console

    class PipeAwareConsole(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True  # nothing more on this stream
            raise BrokenPipeError

    return PipeAwareConsole(**options)


def escape(text: str) -> str:
    """rich.markup.escape, imported when a styled line is printed."""
    from rich.markup import escape as rich_escape

    return rich_escape(text)


# Markup is off by default: paths, names and values are user text, and a `[/]` in them must print
# as it is (rich would raise MarkupError or swallow `[prod]`). Styled lines opt in and escape.
out = cast("Console", _LazyConsole(highlight=False, soft_wrap=True, markup=False))
err = cast("Console", _LazyConsole(stderr=True, highlight=False, soft_wrap=True, markup=False))


def print_json(data: object) -> None:
    """One JSON document on stdout, as rich's print_json writes it off a terminal, without its cost."""
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def failure_json(exit_code: int, message: str, fields: Mapping[str, object] | None = None) -> None:
    """The document a `--json` command prints when it fails, whatever the exit code: scripts parse
    stdout the same way every time and read ``ok`` first (``fields``: more of the failure, such as
    the components a failed upgrade rolled back)."""
    print_json({"ok": False, "exit_code": exit_code, "error": message, **(fields or {})})


@contextlib.contextmanager
def spinner(text: str) -> Iterator[Callable[[str], None]]:
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


def notice(text: str) -> None:
    """A line for the user that a spinner must not swallow (e.g. waiting for another run's lock)."""
    err.print(f"{text}.", markup=False)
