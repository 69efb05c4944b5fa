"""How tests run nachos-deploy and docker: one copy of each runner, so that every test file calls the
command the same way (in-process through Typer's runner, or as a child process as a user's shell does)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from nachos_deploy.interfaces.cli import app

runner = CliRunner()


def cli(*args: str) -> tuple[int, str, str]:
    """The command in this process: exit code, stdout, stderr."""
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def nachos(
    folder: Path, *args: str, timeout: float = 180, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The command as a child process started in ``folder``, with ``env`` added to this one's."""
    return subprocess.run(
        [sys.executable, "-m", "nachos_deploy", *args],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def nachos_on(file: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """The command ``args[0]`` as a child process on the deploy file ``file`` (``-c FILE``), from
    wherever the tests run."""
    return subprocess.run(
        [sys.executable, "-m", "nachos_deploy", args[0], "-c", str(file), *args[1:]],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def docker(*args: str) -> str:
    """A docker command's stdout, stripped; a failure raises with its stderr."""
    return subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def container(project: str, service: str) -> str:
    """The id of the running container of ``service`` in Compose project ``project``."""
    found = docker(
        "ps", "-q",
        "--filter", f"label=com.docker.compose.project={project}",
        "--filter", f"label=com.docker.compose.service={service}",
    ).split()  # fmt: skip
    if not found:
        raise AssertionError(f"no running container of {service} in project {project}")
    return found[0]


def compose_down(project: str) -> None:
    """Remove a test's project with its volumes, whatever state it was left in."""
    subprocess.run(
        ["docker", "compose", "-p", project, "down", "--volumes", "--remove-orphans", "-t", "2"],
        capture_output=True,
        timeout=120,
    )
