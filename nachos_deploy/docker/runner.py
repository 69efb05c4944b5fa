"""The one way nachos-deploy runs ``docker``: every docker and Compose call passes through here (and
the few ``iptables`` calls of the opt-in host firewall, :mod:`nachos_deploy.docker.firewall`).

One choke point means one place that knows how a missing binary looks, how a timeout ends and how
output is decoded, and one type of failure (:class:`DockerFailure`) for callers to hand to the
classifier in :mod:`nachos_deploy.docker.errors`. It runs the CLI itself rather than through
python-on-whales, whose import alone (about 160 pydantic models) cost 0.2 s of every start.
"""

from __future__ import annotations

import collections
import os
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from nachos_deploy.core.errors import EnvironmentProblem
from nachos_deploy.docker import compose_program

INSTALL_HINT = (
    "Install Docker Engine and Compose v2 (on Debian as root: `bash scripts/install-engine.sh` from a "
    "nachos-deploy checkout), then check with `nachos-deploy doctor`."
)
NOT_INSTALLED = f"The docker command is not installed. {INSTALL_HINT}"
T = TypeVar("T")


@dataclass(frozen=True)
class Done:
    """A docker command that ran to its end, whatever its exit code."""

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class DockerFailure(Exception):
    """A docker command that exited non-zero (or was stopped by its timeout). ``stderr`` holds what
    Docker or Compose said; :func:`nachos_deploy.docker.errors.classify` says what it means."""

    def __init__(self, argv: Sequence[str], returncode: int, stdout: str, stderr: str) -> None:
        self.argv = tuple(argv)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(self.text)

    @property
    def text(self) -> str:
        """Docker's own words, on one line (its stdout when stderr is empty, as some commands do)."""
        return " ".join((self.stderr or self.stdout).split())[-800:] or f"exit {self.returncode}"


class DockerTimeout(DockerFailure):
    """A docker command ended by its timeout; the return code is -1."""

    def __init__(self, argv: Sequence[str], timeout: float) -> None:
        super().__init__(argv, -1, "", f"`{' '.join(argv[:3])}` did not answer within {timeout:g} s")


def _environment(env: Mapping[str, str] | None) -> dict[str, str] | None:
    """The process's environment with ``env`` on top (None: inherit it unchanged)."""
    return None if env is None else {**os.environ, **env}


def _text(data: bytes | None) -> str:
    return (data or b"").decode("utf-8", errors="replace")


def _first_that_starts(
    args: list[str], environment: dict[str, str] | None, start: Callable[[list[str]], T]
) -> T:
    """``start`` (run or Popen) of what to start for ``args``: Compose's own program where
    :mod:`compose_program` allows it, else ``args`` as written, which is also tried when that
    program went away since it was found. FileNotFoundError: ``args`` cannot start either."""
    started = compose_program.program(args, environment or os.environ)
    if started != args:
        try:
            return start(started)
        except FileNotFoundError:
            pass
    return start(args)


def _spawn(
    args: list[str],
    data: bytes | None,
    *,
    timeout: float | None,
    env: Mapping[str, str] | None,
    merge_stderr: bool = False,
    missing: str = NOT_INSTALLED,
) -> subprocess.CompletedProcess[bytes]:
    """One process to its end, its output as bytes: the one place a command is started and waited
    for (:func:`run` for text, :func:`run_bytes` for archives). ``docker compose`` runs Compose's
    own program where that changes nothing (:mod:`compose_program`); messages keep ``args``."""
    environment = _environment(env)
    try:
        return _first_that_starts(
            args,
            environment,
            lambda started: subprocess.run(
                started,
                input=data,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if merge_stderr else subprocess.PIPE,
                timeout=timeout,
                env=environment,
                check=False,
            ),
        )
    except FileNotFoundError:
        raise EnvironmentProblem(missing) from None
    except subprocess.TimeoutExpired:
        raise DockerTimeout(args, timeout or 0.0) from None


def run(
    argv: Sequence[str],
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    check: bool = True,
    merge_stderr: bool = False,
    missing: str = NOT_INSTALLED,
    stdin: str | None = None,
) -> Done:
    """Run one docker command to its end and capture its output. ``env``: variables added to this
    process's own. A non-zero exit raises :class:`DockerFailure` unless ``check`` is false; a
    timeout raises :class:`DockerTimeout` either way (the command was killed, its output is not an
    answer); a missing docker binary is an EnvironmentProblem naming the fix. ``merge_stderr``: one
    stream in the order written (``service logs``, whose container stderr comes out on stderr).
    ``missing``: the message when the program itself is not installed (the host firewall's
    ``iptables`` runs through here too, and its fix is not Docker's). ``stdin``: text the command
    reads (``docker compose -f -``)."""
    args = [str(arg) for arg in argv]
    data = stdin.encode() if stdin is not None else None
    done = _spawn(args, data, timeout=timeout, env=env, merge_stderr=merge_stderr, missing=missing)
    result = Done(tuple(args), done.returncode, _text(done.stdout), _text(done.stderr))
    if check and result.returncode != 0:
        raise DockerFailure(args, result.returncode, result.stdout, result.stderr)
    return result


def output(
    argv: Sequence[str],
    *,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
) -> str:
    """The stdout of a docker command that must succeed (:func:`run` with ``check``)."""
    return run(argv, timeout=timeout, env=env, stdin=stdin).stdout


def stream(argv: Sequence[str], *, env: Mapping[str, str] | None = None) -> Iterator[str]:
    """The lines of a long-running docker command (``logs --follow``) as they come, stdout and
    stderr as one stream (a container's stderr comes out on the command's stderr). A non-zero exit
    raises :class:`DockerFailure` after the last line, with the last lines as its text. Closing the
    iterator early (the reader stopped, Ctrl-C) ends the command."""
    args = [str(arg) for arg in argv]
    environment = _environment(env)
    try:
        process = _first_that_starts(
            args,
            environment,
            lambda started: subprocess.Popen(
                started, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=environment
            ),
        )
    except FileNotFoundError:
        raise EnvironmentProblem(NOT_INSTALLED) from None
    last: collections.deque[str] = collections.deque(maxlen=20)
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            line = _text(raw)
            last.append(line)
            yield line
        returncode = process.wait()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    if returncode != 0:
        raise DockerFailure(args, returncode, "", "".join(last))


def run_bytes(
    argv: Sequence[str],
    *,
    data: bytes | None = None,
    timeout: float | None = None,
    env: Mapping[str, str] | None = None,
) -> bytes:
    """Run one docker command that moves bytes (an archive in or out of a one-shot container): ``data``
    on its stdin, its stdout returned as it is. A non-zero exit raises :class:`DockerFailure` with
    its stderr; a timeout :class:`DockerTimeout`."""
    args = [str(arg) for arg in argv]
    done = _spawn(args, data if data is not None else b"", timeout=timeout, env=env)
    if done.returncode != 0:
        raise DockerFailure(args, done.returncode, "", _text(done.stderr))
    return done.stdout
