"""The console script ends with os._exit once its output is flushed (the interpreter's teardown cost
35-50 ms after every command). These tests hold it to that: with stdout and stderr buffered pipes, as
a CI runner gives them (PYTHONUNBUFFERED unset), everything a command wrote arrives, flushed by the
command or not, with the command's exit code; NACHOS_NO_FAST_EXIT=1 gives the ordinary exit."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

# A command that writes without flushing (a tail that stays in each stream's buffer: stdout is block
# buffered on a pipe, stderr line buffered) and an atexit handler, which only the ordinary exit runs.
CHILD = """
import atexit, sys
import typer
from nachos_deploy.interfaces import cli

@cli.app.command("unflushed")
def unflushed(code: int = 0) -> None:
    sys.stdout.write("o" * 100_000 + "END-OUT")
    sys.stderr.write("e" * 1_000 + "END-ERR")
    raise typer.Exit(code)

atexit.register(lambda: sys.stderr.write("|ATEXIT"))
sys.argv[0] = "nachos-deploy"
cli.main()
"""


def buffered_env(**extra: str) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if name not in ("PYTHONUNBUFFERED",)}
    env.pop("NACHOS_NO_FAST_EXIT", None)
    return {**env, **extra}


def run(args: list[str], cwd: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, capture_output=True, text=True, timeout=60, cwd=cwd, env=buffered_env(**extra)
    )


@pytest.mark.parametrize("code", [0, 6])
def test_unflushed_output_arrives_whole_with_the_exit_code(tmp_path: Path, code: int) -> None:
    done = run([sys.executable, "-c", CHILD, "unflushed", "--code", str(code)], tmp_path)
    assert done.returncode == code, done.stderr[-500:]
    assert done.stdout == "o" * 100_000 + "END-OUT"
    assert done.stderr == "e" * 1_000 + "END-ERR"  # and no atexit: the teardown was skipped


@pytest.mark.parametrize("code", [0, 6])
def test_the_variable_gives_the_ordinary_exit(tmp_path: Path, code: int) -> None:
    done = run(
        [sys.executable, "-c", CHILD, "unflushed", "--code", str(code)],
        tmp_path,
        NACHOS_NO_FAST_EXIT="1",
    )
    assert done.returncode == code, done.stderr[-500:]
    assert done.stdout == "o" * 100_000 + "END-OUT"
    assert done.stderr == "e" * 1_000 + "END-ERR|ATEXIT"


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (["render", "--set", "bus.max_payload=12MB"], 0),  # a line on stdout, a warning on stderr
        (["--help"], 0),
        (["status", "--json"], 4),  # a JSON document on stdout, the error on stderr
        (["up", "--json", "--timeout", "soon"], 2),
    ],
    ids=["render", "help", "status-no-engine", "usage"],
)
def test_real_commands_print_the_same_with_and_without_the_fast_exit(
    tmp_path: Path, args: list[str], code: int
) -> None:
    command = [sys.executable, "-m", "nachos_deploy", *args]
    nowhere = f"unix://{tmp_path}/no-docker.sock"
    fast = run(command, tmp_path, DOCKER_HOST=nowhere)
    shutil.rmtree(tmp_path / ".nachos", ignore_errors=True)  # render writes the same files again
    ordinary = run(command, tmp_path, DOCKER_HOST=nowhere, NACHOS_NO_FAST_EXIT="1")
    assert fast.returncode == ordinary.returncode == code, fast.stderr + ordinary.stderr
    assert fast.stdout == ordinary.stdout and fast.stdout.strip()
    assert fast.stderr == ordinary.stderr
    if "--json" in args:
        assert json.loads(fast.stdout)["exit_code"] == code
