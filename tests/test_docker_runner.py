"""The one docker runner and the one classifier of Docker's and Compose's error texts.

The classifier's cases are the texts the real engine printed (Docker Engine 20.10.24, CLI 28.2.2,
Compose 2.40.3), recorded by running the failing command: an engine that does not answer
(DOCKER_HOST at a socket nobody serves), a user outside the docker group, a host port taken twice
(by a stack and by another program), a missing image, a file Compose refuses, two networks of one
name, a node outside any swarm, and objects that are not there. The few texts that could not be
provoked on one machine say where they come from.

The runner's own mechanics (output, exit code, timeout, a missing binary, streaming) are tested
with a stand-in ``docker`` script on PATH: that tests our runner, not Docker.
"""

from __future__ import annotations

import ast
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nachos_deploy.core.errors import (
    BusFailure,
    ComponentFailure,
    ConfigError,
    DeployError,
    EnvironmentProblem,
    ExitCode,
)
from nachos_deploy.docker import engine, errors, runner
from nachos_deploy.docker.errors import PATTERNS, Meaning, classify, meaning_of
from nachos_deploy.docker.runner import DockerFailure, DockerTimeout

COMPOSE_UP_NO_IMAGE = """\
 Network ndr-bad_default  Creating
 Network ndr-bad_default  Created
 Container ndr-bad-x-1  Creating
 Container ndr-bad-x-1  Error response from daemon: No such image: ndr-missing:latest
Error response from daemon: No such image: ndr-missing:latest
"""
COMPOSE_UP_PORT_ALLOCATED = """\
 Network ndr-p2_default  Creating
 Network ndr-p2_default  Created
 Container ndr-p2-x-1  Creating
 Container ndr-p2-x-1  Created
 Container ndr-p2-x-1  Starting
Error response from daemon: driver failed programming external connectivity on endpoint ndr-p2-x-1 \
(af363f9b26319de217eeebdf72e99024793cc32b9a006a376bacfad5908fd09a): Bind for 127.0.0.1:47123 failed: \
port is already allocated
"""
COMPOSE_UP_PORT_IN_USE = """\
 Container ndr-p3-x-1  Starting
Error response from daemon: driver failed programming external connectivity on endpoint ndr-p3-x-1 \
(9bf1791e4ef741e2b9aa22b06c2cf5407a728b48377214e095f1a51fffb2aeeb): Error starting userland proxy: \
listen tcp4 127.0.0.1:47124: bind: address already in use
"""
COMPOSE_UP_AMBIGUOUS = """\
 Container ndr-amb-x-1  Creating
 Container ndr-amb-x-1  Created
 Container ndr-amb-x-1  Starting
Error response from daemon: network ndr-amb_default is ambiguous (2 matches found on name)
"""
NOT_MANAGER = (
    'Error response from daemon: This node is not a swarm manager. Use "docker swarm init" or '
    '"docker swarm join" to connect this node to swarm and try again.'
)

# (the text as the engine printed it, what it means)
RECORDED: list[tuple[str, Meaning]] = [
    (
        "Cannot connect to the Docker daemon at unix:///nonexistent. Is the docker daemon running?",
        Meaning.ENGINE_UNREACHABLE,
    ),
    (
        "Cannot connect to the Docker daemon at tcp://127.0.0.1:1. Is the docker daemon running?",
        Meaning.ENGINE_UNREACHABLE,
    ),
    (
        "unable to get image 'ndr-missing:latest': Cannot connect to the Docker daemon at "
        "unix:///nonexistent. Is the docker daemon running?",
        Meaning.ENGINE_UNREACHABLE,  # Compose's wording: the engine, not the image, is what is missing
    ),
    (
        'error during connect: Get "http://nonexistent.invalid:2375/v1.50/containers/json": dial tcp: '
        "lookup nonexistent.invalid on 10.255.255.53:53: no such host",
        Meaning.ENGINE_UNREACHABLE,
    ),
    (
        "WARNING: Error loading config file: open /root/.docker/config.json: permission denied\n"
        "permission denied while trying to connect to the Docker daemon socket at "
        'unix:///var/run/docker.sock: Get "http://%2Fvar%2Frun%2Fdocker.sock/v1.50/containers/json": '
        "dial unix /var/run/docker.sock: connect: permission denied",
        Meaning.ENGINE_PERMISSION,
    ),
    (COMPOSE_UP_NO_IMAGE, Meaning.NO_SUCH_IMAGE),
    (
        "Error response from daemon: no such image: ndr-missing:latest: No such image: ndr-missing:latest",
        Meaning.NO_SUCH_IMAGE,
    ),
    (NOT_MANAGER, Meaning.NOT_SWARM_MANAGER),
    (COMPOSE_UP_PORT_ALLOCATED, Meaning.PORT_TAKEN),
    (COMPOSE_UP_PORT_IN_USE, Meaning.PORT_TAKEN),
    (COMPOSE_UP_AMBIGUOUS, Meaning.NETWORK_DUPLICATED),
    (
        "Since --detach=false was not specified, tasks will be created in the background.\n"
        "failed to create service ndr-sw_healthy: Error response from daemon: network ndr-sw_inner not found",
        Meaning.NETWORK_NOT_FOUND,  # a stack deployed again right after `docker stack rm`
    ),
    ("Error response from daemon: network ndr-nope not found\nexit status 1", Meaning.NETWORK_NOT_FOUND),
    ("nothing found in stack: ndr-none", Meaning.STACK_EMPTY),  # docker stack ps
    ("Nothing found in stack: ndr-none", Meaning.STACK_EMPTY),  # docker stack services / rm
    ("Error response from daemon: No such container: ndr-nope", Meaning.GONE),
    ("Error: No such object: ndr-nope", Meaning.GONE),
    ("Error: no such service: ndr-none_x", Meaning.GONE),  # docker service inspect
    ("Error response from daemon: service ndr-none_x not found", Meaning.GONE),  # service rm / update
    ("Error response from daemon: task nosuchtask not found", Meaning.GONE),
    ("Error response from daemon: node nosuchnode not found", Meaning.GONE),
    ("Error response from daemon: get ndr-nope: no such volume", Meaning.GONE),
    ("no such service: nope", Meaning.GONE),  # docker compose restart
    # Files Compose refuses: no pattern, the operation (`compose config`) says what they are.
    (
        "decoding failed due to the following error(s):\n\n'services[x].command' invalid command line string",
        Meaning.OTHER,
    ),
    ("invalid hostPort: 99999", Meaning.OTHER),
    (
        "failed to parse /tmp/rec/bad/compose.yaml: yaml: line 2: did not find expected node content",
        Meaning.OTHER,
    ),
    ("top-level object must be a mapping", Meaning.OTHER),  # docker stack deploy of an empty file
]

# Texts this machine could not provoke, with their source.
QUOTED: list[tuple[str, Meaning]] = [
    # moby's libnetwork (ipamutils) when every default pool is in use
    (
        "Error response from daemon: could not find an available, non-overlapping IPv4 address pool "
        "among the defaults to assign to the network",
        Meaning.ADDRESS_POOLS_EXHAUSTED,
    ),
    (
        "Error response from daemon: all predefined address pools have been fully subnetted",
        Meaning.ADDRESS_POOLS_EXHAUSTED,
    ),
    # the swarm-mode form of two networks of one name, as engine.up's docstring has quoted it since it was met
    (
        "Error response from daemon: Could not attach to network ndr-x_default: rpc error: code = "
        "NotFound desc = network ndr-x_default not found",
        Meaning.NETWORK_DUPLICATED,
    ),
    # moby's swarm allocator when a removed stack's network still has a task on another node
    (
        "Error response from daemon: rpc error: code = FailedPrecondition desc = network "
        "qzkfq5vy1j0lvr4v1fwmn6pm1 is in use by task 0j2nqi6tu0i7lk8aenxsnpjzh",
        Meaning.NETWORK_IN_USE_BY_TASK,
    ),
    # docker CLI 28 without the compose plugin: the text of `docker foo` recorded here, with compose
    (
        "docker: unknown command: docker compose\n\nRun 'docker --help' for more information",
        Meaning.COMPOSE_MISSING,
    ),
    ("docker: 'compose' is not a docker command.\nSee 'docker --help'", Meaning.COMPOSE_MISSING),  # CLI < 28
]


def failed(text: str, returncode: int = 1, argv: tuple[str, ...] = ("docker", "x")) -> DockerFailure:
    return DockerFailure(argv, returncode, "", text)


@pytest.mark.parametrize(("text", "meaning"), RECORDED + QUOTED, ids=lambda v: str(v)[:40])
def test_each_text_means_what_it_says(text: str, meaning: Meaning) -> None:
    assert meaning_of(text) is meaning
    assert meaning_of(failed(text)) is meaning


def test_every_row_of_the_table_has_a_text_that_reaches_it() -> None:
    # A row no case selects is either dead or shadowed by an earlier one.
    reached = {errors.pattern_of(text) for text, _ in RECORDED + QUOTED}
    assert [row.meaning for row in PATTERNS if row not in reached] == []


def test_a_machine_failure_is_exit_4_whatever_ran() -> None:
    for text, meaning in RECORDED + QUOTED:
        error = classify(failed(text), "docker compose up bus failed", exit_code=ExitCode.BUS)
        row = errors.pattern_of(text)
        if row is not None and row.environment:
            assert isinstance(error, EnvironmentProblem) and error.exit_code == 4, meaning
            assert row.fix in error.message
        else:
            assert isinstance(error, BusFailure), meaning


def test_an_engine_that_does_not_answer_names_the_reason_and_the_fix() -> None:
    text = RECORDED[0][0]
    error = classify(failed(text), "Cannot list volumes", exit_code=ExitCode.ENVIRONMENT)
    assert error.message == (
        f"Cannot list volumes: {text} Start it (as root: `bash scripts/install-engine.sh` starts dockerd) "
        "or set DOCKER_HOST. `nachos-deploy doctor` checks everything."
    )


def test_a_taken_port_keeps_the_operations_code_and_adds_the_port_fix() -> None:
    error = classify(
        failed(COMPOSE_UP_PORT_ALLOCATED), "docker compose up bus failed", exit_code=ExitCode.BUS
    )
    assert isinstance(error, BusFailure)
    assert error.message.startswith(
        "docker compose up bus failed: Error response from daemon: driver failed programming external"
    )
    assert "port is already allocated." in error.message
    assert error.message.endswith(errors.PORT_FIX)
    # Compose's progress lines are not the reason.
    assert "Container ndr-p2-x-1" not in error.message
    component = classify(
        failed(COMPOSE_UP_PORT_IN_USE), "docker compose up x failed", exit_code=ExitCode.COMPONENT
    )
    assert isinstance(component, ComponentFailure) and errors.PORT_FIX in component.message


def test_a_file_compose_refuses_is_a_config_error_with_the_callers_fix() -> None:
    text = next(text for text, _ in RECORDED if text.startswith("decoding failed"))
    error = classify(
        failed(text), "Docker Compose rejects the rendered x.yaml", fix="Nothing was written.", config=True
    )
    assert isinstance(error, ConfigError) and error.exit_code == 3
    assert error.message == (
        "Docker Compose rejects the rendered x.yaml: decoding failed due to the following error(s): "
        "'services[x].command' invalid command line string. Nothing was written."
    )
    # ...but a Compose that is not there is the machine's problem, not the file's.
    missing = classify(failed(QUOTED[-2][0]), "Docker Compose rejects the rendered x.yaml", config=True)
    assert isinstance(missing, EnvironmentProblem)


def test_an_unknown_text_is_the_operations_own_error_quoting_docker() -> None:
    error = classify(failed("something new"), "Cannot restart x")
    assert type(error) is DeployError and error.exit_code == ExitCode.FAILED
    assert error.message == "Cannot restart x: something new."
    assert classify(failed("", returncode=5), "Cannot restart x").message == "Cannot restart x: exit 5."


def test_the_reason_is_the_engines_lines_out_of_composes_progress() -> None:
    assert errors.reason(COMPOSE_UP_NO_IMAGE) == (
        "Container ndr-bad-x-1 Error response from daemon: No such image: ndr-missing:latest "
        "Error response from daemon: No such image: ndr-missing:latest"
    )
    assert errors.reason("  plain\n text ") == "plain text"


# The runner, with a stand-in docker on PATH.

FAKE = """#!/bin/sh
case "$1" in
  ok) echo "out $2"; echo "err $2" >&2 ;;
  fail) echo "partial"; echo "Error response from daemon: No such container: $2" >&2; exit 3 ;;
  env) echo "$NDR_VALUE" ;;
  sleep) sleep "$2" ;;
  lines) i=0; while [ $i -lt "$2" ]; do echo "line $i"; i=$((i+1)); done; echo "gone wrong" >&2; exit "$3" ;;
  forever) echo started; echo $$ > "$2"; exec sleep 60 ;;
  bytes) printf 'caf\\351\\n' ;;
esac
"""


@pytest.fixture
def fake_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "bin"
    folder.mkdir()
    script = folder / "docker"
    script.write_text(FAKE)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def test_run_gives_stdout_stderr_and_the_exit_code(fake_docker: Path) -> None:
    done = runner.run(["docker", "ok", "a"])
    assert (done.returncode, done.stdout, done.stderr) == (0, "out a\n", "err a\n")
    assert runner.output(["docker", "ok", "b"]) == "out b\n"
    merged = runner.run(["docker", "ok", "c"], merge_stderr=True)
    assert (merged.stdout, merged.stderr) == ("out c\nerr c\n", "")


def test_a_non_zero_exit_is_a_failure_carrying_dockers_words(fake_docker: Path) -> None:
    with pytest.raises(DockerFailure) as caught:
        runner.run(["docker", "fail", "web"])
    failure = caught.value
    assert (failure.argv, failure.returncode, failure.stdout) == (("docker", "fail", "web"), 3, "partial\n")
    assert failure.text == "Error response from daemon: No such container: web"
    assert meaning_of(failure) is Meaning.GONE
    unchecked = runner.run(["docker", "fail", "web"], check=False)
    assert unchecked.returncode == 3


RACED = """#!/bin/sh
# `network ls` lists three networks; the one another stack's `down` removed meanwhile is gone by the
# `network inspect`, which prints the other two and fails naming it, as Engine 20.10 does.
case "$1 $2" in
  "network ls") printf 'aaa\\nbbb\\nccc\\n' ;;
  "network inspect")
    echo '[{"Name": "a", "IPAM": {"Config": [{"Subnet": "10.1.0.0/24"}]}},'
    echo ' {"Name": "c", "IPAM": {"Config": [{"Subnet": "10.3.0.0/24"}]}}]'
    echo "Error response from daemon: network bbb not found" >&2
    [ -n "$NDR_ALSO" ] && echo "$NDR_ALSO" >&2
    exit 1 ;;
esac
"""


def test_a_network_removed_between_the_listing_and_the_inspect_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another stack's `down` removing networks while `up` reads the engine's subnets: a two-worker CI
    run failed `up` with exit 4 there ("Cannot list the engine's networks: ... not found", twice in a
    row, before this); a network gone holds no subnet, and the others are read. Any other error
    still fails."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "docker").write_text(RACED)
    (folder / "docker").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    assert [(n.name, n.subnets) for n in engine.engine_subnets()] == [
        ("a", ("10.1.0.0/24",)),
        ("c", ("10.3.0.0/24",)),
    ]
    monkeypatch.setenv("NDR_ALSO", "Error response from daemon: permission denied")
    with pytest.raises(EnvironmentProblem, match="Cannot list the engine's networks"):
        engine.engine_subnets()


def test_env_adds_to_the_processes_own(fake_docker: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert runner.output(["docker", "env"], env={"NDR_VALUE": "given"}) == "given\n"
    monkeypatch.setenv("NDR_VALUE", "inherited")
    assert runner.output(["docker", "env"]) == "inherited\n"
    assert "PATH" in os.environ  # the fake is found through the inherited PATH with env given too
    assert runner.output(["docker", "env"], env={}) == "inherited\n"


def test_output_that_is_not_utf8_is_replaced_not_fatal(fake_docker: Path) -> None:
    assert runner.output(["docker", "bytes"]) == "caf\ufffd\n"


def test_a_timeout_ends_the_command(fake_docker: Path) -> None:
    began = time.monotonic()
    with pytest.raises(DockerTimeout) as caught:
        runner.run(["docker", "sleep", "5"], timeout=0.3)
    assert time.monotonic() - began < 3
    assert caught.value.returncode == -1 and "did not answer within 0.3 s" in caught.value.text
    with pytest.raises(DockerTimeout):  # even unchecked: a killed command's output is no answer
        runner.run(["docker", "sleep", "5"], timeout=0.3, check=False)


def test_a_missing_docker_is_exit_4_naming_the_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no docker here
    for call in (lambda: runner.run(["docker", "version"]), lambda: list(runner.stream(["docker", "logs"]))):
        with pytest.raises(EnvironmentProblem) as caught:
            call()
        assert caught.value.exit_code == ExitCode.ENVIRONMENT
        assert "docker command is not installed" in caught.value.message
        assert "scripts/install-engine.sh" in caught.value.message


def test_stream_yields_lines_then_raises_on_failure(fake_docker: Path) -> None:
    lines = runner.stream(["docker", "lines", "3", "4"])
    assert [next(lines) for _ in range(4)] == ["line 0\n", "line 1\n", "line 2\n", "gone wrong\n"]
    with pytest.raises(DockerFailure) as caught:
        next(lines)
    assert caught.value.returncode == 4
    assert caught.value.text == "line 0 line 1 line 2 gone wrong"
    assert list(runner.stream(["docker", "lines", "2", "0"])) == ["line 0\n", "line 1\n", "gone wrong\n"]


def test_closing_a_stream_ends_the_command(fake_docker: Path) -> None:
    pid_file = fake_docker / "pid"
    lines: Iterator[str] = runner.stream(["docker", "forever", str(pid_file)])
    assert next(lines) == "started\n"
    for _ in range(50):
        if pid_file.exists() and pid_file.read_text().strip():
            break
        time.sleep(0.05)
    pid = int(pid_file.read_text())
    began = time.monotonic()
    lines.close()  # type: ignore[attr-defined]
    assert time.monotonic() - began < 5  # killed, not waited for (it would sleep a minute)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_the_docker_package_needs_no_python_on_whales() -> None:
    # Its import alone cost every command 0.2 s; every call is argv through the runner now.
    script = (
        "import sys; import nachos_deploy.docker.engine, nachos_deploy.docker.swarm; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'python_on_whales'))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_only_the_runner_starts_processes() -> None:
    # The one choke point: a module that imported subprocess would be a fifth way to run docker.
    package = Path(__file__).parent.parent / "nachos_deploy"
    starting = []
    for path in sorted(package.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            if any(name.split(".")[0] == "subprocess" for name in names):
                starting.append(str(path.relative_to(package)))
    assert starting == ["docker/runner.py"]
