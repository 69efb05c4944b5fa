"""The Docker engine's side of a Compose stack: versions, images, volumes, events, exec, stats.

The names callers use for the whole of Docker and Compose live here (the Compose calls in
:mod:`~nachos_deploy.docker.compose`, the JSON readers in :mod:`~nachos_deploy.docker.parse` are
re-exported), so ``engine.X`` stays the one spelling. Every call is argv through
:mod:`~nachos_deploy.docker.runner`; every failure a user sees comes out of
:func:`~nachos_deploy.docker.errors.classify`, never as Docker's raw exception.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import time
from collections.abc import Iterable, Mapping, Sequence

from nachos_deploy.core.errors import DeployError, EnvironmentProblem, ExitCode
from nachos_deploy.docker import compose_program, runner
from nachos_deploy.docker.compose import (
    Compose,
    check_compose_file,
    compose_client,
    create,
    down,
    inspect_containers,
    logs_tail,
    remove_created,
    remove_duplicate_networks,
    restart,
    start_created,
    states,
    stream_logs,
    up,
    up_command,
)
from nachos_deploy.docker.errors import COMPOSE_FIX, Meaning, classify, every_error_means
from nachos_deploy.docker.parse import (
    EngineNetwork,
    Probe,
    ServiceState,
    die_exit_codes,
    epoch_of,
    host_ports,
    items,
    mapping,
    memory_used,
    network_subnets,
    split_frames,
    state_of,
)
from nachos_deploy.docker.runner import INSTALL_HINT, DockerFailure

__all__ = [
    "INSTALL_HINT",
    "Compose",
    "EngineNetwork",
    "Probe",
    "ServiceState",
    "check_compose_file",
    "compose_client",
    "compose_runs_as",
    "compose_version",
    "container_memory",
    "create",
    "docker_root",
    "down",
    "engine_subnets",
    "engine_version",
    "epoch_of",
    "exec_output",
    "exit_codes_since",
    "image_ids",
    "inspect_containers",
    "logs_tail",
    "missing_images",
    "monitor_from_inside",
    "network_subnets",
    "passes_check",
    "project_host_ports",
    "project_networks",
    "project_volumes",
    "remove_created",
    "remove_duplicate_networks",
    "remove_networks",
    "remove_volumes",
    "require_engine",
    "restart",
    "send_signal",
    "start_created",
    "state_of",
    "states",
    "stream_logs",
    "up",
    "up_command",
]


def compose_version() -> str | None:
    """Compose v2's version, or None when the docker CLI or its compose plugin is missing."""
    try:
        text = runner.output(["docker", "compose", "version"], timeout=30)
    except (DockerFailure, DeployError):
        return None
    match = re.search(r"v?(\d+\.\d+\.\d+)", text)
    return match.group(1) if match else None


def compose_runs_as() -> str | None:
    """The Compose program `docker compose` calls start directly (docker/compose_program.py), or None
    when they go through the docker CLI: for `doctor` to say which."""
    return compose_program.plugin_path(os.environ)


def engine_version() -> str:
    """The engine's version; EnvironmentProblem when no engine answers."""
    try:
        version = runner.output(["docker", "version", "--format", "{{.Server.Version}}"]).strip()
    except DockerFailure as failure:
        raise classify(failure, "The Docker engine does not answer", exit_code=ExitCode.ENVIRONMENT) from None
    if not version or version == "<no value>":
        raise EnvironmentProblem(f"The Docker engine did not report a version. {INSTALL_HINT}")
    return version


def require_engine() -> tuple[str, str]:
    """Engine and Compose versions, or one clear error naming what is missing."""
    engine = engine_version()
    compose = compose_version()
    if compose is None:
        raise EnvironmentProblem(COMPOSE_FIX)
    return engine, compose


def image_ids(images: Iterable[str]) -> dict[str, str] | None:
    """Image reference → id, in one ``docker image inspect``; None when any is missing or the
    engine does not answer (the caller then asks the slower way, which names what is wrong)."""
    names = sorted(set(images))
    if not names:
        return {}
    try:
        done = runner.run(["docker", "image", "inspect", "--format", "{{.Id}}", *names], check=False)
    except DeployError:
        return None
    ids = done.stdout.split()
    if done.returncode != 0 or len(ids) != len(names):
        return None
    return dict(zip(names, ids, strict=True))


def missing_images(images: Iterable[str]) -> list[str]:
    """Those of ``images`` this engine does not have (one ``docker image inspect`` each, at once
    when all are there)."""
    names = sorted(set(images))
    found = image_ids(names)
    if found is not None:
        return [name for name in names if name not in found]
    missing = []
    for name in names:
        try:
            runner.run(["docker", "image", "inspect", "--format", "{{.Id}}", name])
        except (DockerFailure, DeployError):
            missing.append(name)
    return missing


def passes_check(client: Compose | None, container: str, test: Sequence[str] | str, timeout: float) -> bool:
    """Run a service's own healthcheck command in its container now, as the engine would at its
    next interval: engines before 25 run the first check only one interval after the start (and
    refuse `start_interval`), so waiting for them costs up to a whole interval per component."""
    if isinstance(test, str):
        command = ["sh", "-c", test]
    elif len(test) >= 2 and test[0] == "CMD-SHELL":
        command = ["sh", "-c", test[1]]
    elif len(test) >= 2 and test[0] == "CMD":
        command = list(test[1:])
    else:
        return False
    try:
        return (
            runner.run(["docker", "exec", container, *command], timeout=timeout, check=False).returncode == 0
        )
    except (DockerFailure, DeployError):
        return False


def read_file(container: str, path: str, timeout: float = 10.0) -> str | None:
    """A text file inside a running container (``docker exec cat``: the image has busybox), or None
    when it is not there yet or the container does not answer."""
    try:
        done = runner.run(["docker", "exec", container, "cat", path], timeout=timeout, check=False)
    except (DockerFailure, DeployError):
        return None
    return done.stdout if done.returncode == 0 else None


def exec_output(container: str, command: Sequence[str], timeout: float) -> str | None:
    """What ``command`` prints in a running container, or None when it failed or did not end in
    ``timeout`` seconds (the caller reads that as "no answer", never as an error of its own)."""
    try:
        done = runner.run(["docker", "exec", container, *command], timeout=timeout, check=False)
    except (DockerFailure, DeployError):
        return None
    return done.stdout if done.returncode == 0 else None


def send_signal(containers: Sequence[str], signal: str) -> None:
    """Send ``signal`` to each container's main process (``init: true`` passes it on to the server),
    e.g. HUP: a nats-server then reloads its config file and what it includes, without dropping the
    connections of its clients."""
    try:
        runner.run(["docker", "kill", "--signal", signal, *containers], timeout=30)
    except DockerFailure as failure:
        raise classify(
            failure, f"docker kill --signal {signal} failed", exit_code=ExitCode.COMPONENT
        ) from None


def exit_codes_since(container_id: str, since: float) -> list[int]:
    """Exit codes of the container's runs that ended after ``since`` (epoch seconds), oldest first.

    The container's own state cannot tell them once the restart policy has started it again (its
    exit code then reads 0), so they come from the engine's ``die`` events."""
    command = ["docker", "events", "--since", f"{since - 1:.3f}", "--until", f"{time.time():.3f}"]
    command += ["--filter", f"container={container_id}", "--filter", "event=die", "--format", "{{json .}}"]
    try:
        text = runner.output(command, timeout=30)
    except (DockerFailure, DeployError):
        return []
    events = []
    for line in text.splitlines():
        try:
            events.append(mapping(json.loads(line)))
        except ValueError:
            continue
    return die_exit_codes(events)


def monitor_from_inside(container: str, hosts: Mapping[str, str], path: str) -> dict[str, object | None]:
    """GET ``http://<address>:8222<path>`` for each ``name: address`` from inside ``container`` (one
    ``docker exec`` with busybox wget, as the nats image has): how the host reads servers that
    publish no port. Addresses, not names, and `timeout` rather than wget's -T: a statically linked
    busybox (the offline stand-in's) crashes on both.
    Each answer is framed by a line holding a token drawn for this call alone: the answers carry
    text the components choose (their connection names), so a fixed separator (``@@`` once) let a
    component cut its own sidecar's answer in two and make it unreadable.
    A host that does not answer, or a failed exec, gives None."""
    frame = f"nachos-frame-{secrets.token_hex(16)}"
    script = "; ".join(
        f"echo; echo '{frame} {name}'; timeout 2 wget -qO- 'http://{address}:8222{path}' || echo"
        for name, address in hosts.items()
    )
    try:
        output = runner.output(["docker", "exec", container, "sh", "-c", script])
    except (DockerFailure, DeployError):
        return dict.fromkeys(hosts)
    return split_frames(output, frame, hosts)


def engine_subnets() -> list[EngineNetwork]:
    """Every network of the engine with its subnets and project (two docker calls), for the check of
    a stack's planned subnets before ``up`` creates any network. A network removed between the two calls (by
    another stack's `down` meanwhile) holds no subnet any more: ``docker network inspect`` prints the
    others and fails naming it, and the others are what counts."""
    try:
        ids = runner.output(["docker", "network", "ls", "--quiet", "--no-trunc"]).split()
        text = runner.output(["docker", "network", "inspect", *ids]) if ids else "[]"
    except DockerFailure as failure:
        # Engine 20.10 says "network <id> not found" (a two-worker CI run met it, 2026-12-07)
        if not every_error_means(failure.stderr, Meaning.NETWORK_NOT_FOUND):
            raise classify(
                failure, "Cannot list the engine's networks", exit_code=ExitCode.ENVIRONMENT
            ) from None
        text = failure.stdout
    try:
        return network_subnets(items(json.loads(text)))
    except ValueError:
        return []


def remove_networks(names: Sequence[str]) -> list[str]:
    """Remove each of the networks ``names`` that no container is on; the names removed. One still in
    use, or gone meanwhile, is left as it is: this is tidying, never a reason to fail."""
    removed = []
    for name in names:
        try:
            runner.run(["docker", "network", "rm", name])
        except DockerFailure:
            continue
        removed.append(name)
    return removed


def networks_exist(names: Sequence[str]) -> bool:
    """Whether every one of the networks ``names`` exists (one docker call; an error reads as no)."""
    if not names:
        return True
    done = runner.run(["docker", "network", "inspect", "--format", "{{.Id}}", *names], check=False)
    return done.returncode == 0


def project_networks(project: str) -> list[str]:
    """Networks Compose created for ``project`` (by its label), also those its files no longer name;
    an engine that cannot list them lists none."""
    label = f"label=com.docker.compose.project={project}"
    try:
        return sorted(
            runner.output(["docker", "network", "ls", "--format", "{{.Name}}", "--filter", label]).split()
        )
    except DockerFailure:
        return []


def project_volumes(project: str) -> list[str]:
    """Volumes Compose created for ``project`` (by its label), also when the stack is down."""
    label = f"label=com.docker.compose.project={project}"
    try:
        return sorted(runner.output(["docker", "volume", "ls", "--quiet", "--filter", label]).split())
    except DockerFailure as failure:
        raise classify(failure, "Cannot list volumes", exit_code=ExitCode.ENVIRONMENT) from None


def remove_volumes(names: Sequence[str]) -> None:
    try:
        runner.run(["docker", "volume", "rm", *names])
    except DockerFailure as failure:
        raise classify(failure, f"Cannot remove volumes {', '.join(names)}") from None


def container_memory(container: str) -> int | None:
    """Memory use in bytes from `docker stats`, or None when unknown."""
    try:
        text = runner.output(
            ["docker", "stats", "--no-stream", "--format", "{{json .}}", container], timeout=60
        )
        return memory_used(mapping(json.loads(text.splitlines()[0])))
    except (DockerFailure, DeployError, ValueError, IndexError):
        return None


def docker_root() -> str | None:
    try:
        return runner.output(["docker", "info", "--format", "{{.DockerRootDir}}"], timeout=30).strip() or None
    except (DockerFailure, DeployError):
        return None


def on_this_machine() -> bool:
    """Whether the engine runs on this machine, by its host name (`docker info`): a port tested by
    a bind here says something of the engine's ports only then, not through a DOCKER_HOST or a
    context that names another machine (or the engine of a container, as scripts/swarm-nodes.sh
    makes). An engine that does not say is taken for another machine's."""
    try:
        name = runner.output(["docker", "info", "--format", "{{.Name}}"], timeout=30).strip()
    except (DockerFailure, DeployError):
        return False
    return bool(name) and name == socket.gethostname()


def project_host_ports(project: str) -> set[int]:
    """Host ports published by a project's containers, to tell 'in use by us' from 'in use by another'."""
    filters = ["--filter", f"label=com.docker.compose.project={project}"]
    try:
        ids = runner.output(["docker", "container", "ls", "--quiet", "--no-trunc", *filters]).split()
        found = json.loads(runner.output(["docker", "container", "inspect", *ids])) if ids else []
    except (DockerFailure, DeployError, ValueError):
        return set()
    return host_ports(items(found))
