"""One Compose project and the calls on it: check, create, start, observe, restart, logs, down.

Every call is argv through :mod:`nachos_deploy.docker.runner`, and every failure becomes a project
error through :func:`nachos_deploy.docker.errors.classify`, so callers never see Docker's raw text
unless it is quoted in a message.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nachos_deploy.core.errors import DeployError, ExitCode, typed
from nachos_deploy.docker import runner
from nachos_deploy.docker.errors import Meaning, classify, meaning_of, reason_of
from nachos_deploy.docker.parse import ServiceState, duplicate_networks, items, most_named, state_of
from nachos_deploy.docker.runner import DockerFailure


class Compose:
    """One Compose project: its name, files, folder and env files, as the docker CLI is given them."""

    def __init__(
        self, project: str, files: Sequence[Path], directory: Path, env_files: Sequence[Path]
    ) -> None:
        self.project = project
        self.files = tuple(files)
        self.directory = directory
        self.env_files = tuple(env_files)

    @property
    def command(self) -> list[str]:
        """``docker compose`` with this project's options."""
        args = ["docker", "compose"]
        for path in self.files:
            args += ["--file", str(path)]
        for path in self.env_files:
            args += ["--env-file", str(path)]
        return [*args, "--project-name", self.project, "--project-directory", str(self.directory)]


def compose_client(
    project: str,
    compose_file: Path,
    directory: Path | None = None,
    env_files: Sequence[Path] = (),
    override: Path | None = None,
) -> Compose:
    """A client for one project. ``env_files`` replace Compose's own reading of ``.env`` in the
    project folder, so a caller passing them must list that file first when it exists; ``override``
    is applied as a second ``-f``."""
    return Compose(
        project,
        [compose_file, *([override] if override else [])],
        directory or compose_file.parent,
        env_files,
    )


def check_compose_file(client: Compose, shown_as: Path) -> dict[str, object]:
    """`docker compose config`: Compose's own validation of the rendered file (needs no engine).
    Returns the project as Compose resolved it (variables filled in), which is what `up` compares
    with the last run to know whether Compose would change anything."""
    doing = f"Docker Compose rejects the rendered {shown_as}"
    fix = (
        "Nothing was written. This usually means a value in the deploy file or an override is one "
        "Compose does not accept; check the key it names."
    )
    try:
        resolved = json.loads(runner.output([*client.command, "config", "--format", "json"]))
    except DockerFailure as failure:
        raise classify(failure, doing, fix=fix, config=True) from None
    except ValueError as exc:
        raise typed(f"{doing}: {exc}. {fix}", ExitCode.CONFIG) from None
    return dict(resolved) if isinstance(resolved, dict) else {}


def up(
    client: Compose,
    services: Sequence[str],
    *,
    dependencies: bool = True,
    build: bool = False,
    failure: ExitCode = ExitCode.COMPONENT,
) -> None:
    """Create and start services without waiting; the caller checks health itself, faster.

    Two Compose runs that created the same project's network at once (before the per-project lock,
    or from another tool) leave two networks of one name, and every later run fails with "network
    ... is ambiguous" (with swarm mode on, the engine creates the containers and then cannot attach
    them: "Could not attach to network ...: not found"): the empty duplicates are removed and the
    run is tried once more, recreating what the failed run had created on a removed copy."""
    command = up_command(client, services, dependencies=dependencies, build=build)
    try:
        runner.run(command)
        return
    except DockerFailure as first:
        if meaning_of(first) is not Meaning.NETWORK_DUPLICATED or not remove_duplicate_networks(
            client.project
        ):
            raise _up_failure(services, first, failure) from None
    try:
        runner.run(up_command(client, services, dependencies=dependencies, build=build, recreate=True))
    except DockerFailure as second:
        raise _up_failure(services, second, failure) from None


def up_command(
    client: Compose,
    services: Sequence[str],
    *,
    dependencies: bool = True,
    build: bool = False,
    recreate: bool = False,
) -> list[str]:
    """The ``docker compose up`` that :func:`up` runs (first without ``recreate``). A container of a
    service the files no longer have (a component removed from the configuration) is removed, as
    Swarm's ``--prune`` does: left running, it would hold its network and its bus login for nothing."""
    command = [
        *client.command,
        "up",
        "--detach",
        "--remove-orphans",
        *([] if dependencies else ["--no-deps"]),
    ]
    command += ["--build"] if build else ["--pull", "never"]
    return [*command, *(["--force-recreate"] if recreate else []), *services]


def _up_failure(services: Sequence[str], failure: DockerFailure, code: ExitCode) -> DeployError:
    return classify(failure, f"docker compose up {' '.join(services)} failed", exit_code=code)


def create(client: Compose, services: Sequence[str]) -> None:
    """Create the containers of ``services`` without starting them (nor their dependencies)."""
    command = [*client.command, "up", "--no-start", "--no-deps", "--pull", "never", *services]
    try:
        runner.run(command)
    except DockerFailure as failure:
        raise _up_failure(services, failure, ExitCode.COMPONENT) from None


def start_created(
    client: Compose,
    services: Sequence[str],
    known: Mapping[str, ServiceState] | None = None,
    failure: ExitCode = ExitCode.COMPONENT,
) -> None:
    """Start the containers :func:`create` made for ``services``, each by its own ``docker start``
    at once. Measured here: four sidecars took 0.9 s through ``compose up`` (one after the other,
    network setup mostly) and 0.64 s this way. Only for containers just created: Compose's ``up``
    is still what recreates a container whose configuration changed."""
    found = known if known is not None and all(name in known for name in services) else states(client)
    ids = {name: found[name].container_id for name in services if name in found}
    missing = sorted(set(services) - set(ids))
    if missing:
        raise typed(
            f"The containers of {', '.join(missing)} were not created; run `nachos-deploy up` again.", failure
        )

    def start(name: str) -> DockerFailure | None:
        try:
            runner.run(["docker", "start", ids[name]])
            return None
        except DockerFailure as problem:
            return problem

    with ThreadPoolExecutor(max_workers=max(1, len(ids))) as pool:
        problems = [
            (name, problem)
            for name, problem in zip(sorted(ids), pool.map(start, sorted(ids)), strict=True)
            if problem
        ]
    if problems:
        # One failure carrying every container's reason, classified once (a taken port, no engine...).
        text = "; ".join(f"{name}: {reason_of(problem)}" for name, problem in problems)
        combined = DockerFailure(problems[0][1].argv, problems[0][1].returncode, "", text)
        raise _up_failure(services, combined, failure)


def remove_created(client: Compose, services: Sequence[str]) -> None:
    """Remove the containers of ``services`` that were created and never started; best effort."""
    with contextlib.suppress(DockerFailure):
        runner.run([*client.command, "rm", "--force", *services])


def remove_duplicate_networks(project: str) -> list[str]:
    """Remove the empty extra copies of a project's networks that share a name; returns them."""
    if not project:
        return []
    label = f"label=com.docker.compose.project={project}"
    try:
        ids = runner.output(["docker", "network", "ls", "--quiet", "--no-trunc", "--filter", label]).split()
        networks = items(json.loads(runner.output(["docker", "network", "inspect", *ids]))) if ids else []
    except (DockerFailure, ValueError):
        return []
    removed = []
    for name, network_id in duplicate_networks(networks):
        try:
            runner.run(["docker", "network", "rm", network_id])
        except DockerFailure:
            continue
        removed.append(f"{name} ({network_id[:12]})")
    return removed


def inspect_containers(container_ids: Sequence[str]) -> dict[str, ServiceState] | None:
    """Service name → state of exactly these containers, in one ``docker container inspect``
    (``states`` needs two: it lists the project first); None when any of them is gone."""
    if not container_ids:
        return {}
    try:
        found = json.loads(runner.output(["docker", "container", "inspect", *container_ids]))
    except (DockerFailure, ValueError, DeployError):
        return None
    if not isinstance(found, list) or len(found) != len(container_ids):
        return None
    result = {}
    for item in items(found):
        state = state_of(item)
        result[state.service] = state
    return result


WORKING_DIR_LABEL = "com.docker.compose.project.working_dir"  # Compose's --project-directory


def output_folders(project: str) -> list[Path]:
    """The folders the project's containers were created from (Compose's own label: nachos-deploy
    gives Compose the output folder as the project directory), most containers' first; empty when
    the project has none. One engine call; an engine that does not answer finds none (the command
    that follows says why)."""
    label = f"label=com.docker.compose.project={project}"
    template = f'{{{{.Label "{WORKING_DIR_LABEL}"}}}}'
    try:
        text = runner.output(["docker", "container", "ls", "--all", "--filter", label, "--format", template])
    except DockerFailure:
        return []
    return most_named(text.splitlines())


def states(client: Compose) -> dict[str, ServiceState]:
    """Service name → state of its container (all containers, stopped ones included).

    Two engine calls, whatever the number of containers: the project's containers by their Compose
    label, then one ``docker container inspect`` of them all. (``compose ps`` loads and checks the
    whole project first, about 0.4 s, and inspecting each container on its own made a round of the
    gate's polling take 0.5 s for nine containers.)"""
    label = f"label=com.docker.compose.project={client.project}"
    for attempt in range(5):
        try:
            ids = runner.output(
                ["docker", "container", "ls", "--all", "--quiet", "--no-trunc", "--filter", label]
            ).split()
            found = items(json.loads(runner.output(["docker", "container", "inspect", *ids]))) if ids else []
            break
        except DockerFailure as failure:
            if meaning_of(failure) is Meaning.GONE and attempt < 4:  # removed between the two calls
                continue
            raise classify(
                failure, "Cannot list the project's containers", exit_code=ExitCode.ENVIRONMENT
            ) from None
        except ValueError:
            found = []
            break
    result: dict[str, ServiceState] = {}
    for item in found:
        state = state_of(item)
        if state.service:
            result[state.service] = state
    return result


def restart(client: Compose, services: Sequence[str]) -> None:
    """Restart containers now: also ends a restart policy's back-off wait, which after a long bus
    outage can keep a component down for a minute after the bus is back."""
    try:
        runner.run([*client.command, "restart", "--timeout", "5", *services])
    except DockerFailure as failure:
        raise classify(
            failure, f"docker compose restart {' '.join(services)} failed", exit_code=ExitCode.COMPONENT
        ) from None


def _logs_command(client: Compose, services: Sequence[str], *, follow: bool, tail: int | None) -> list[str]:
    command = [*client.command, "logs", "--no-color", *(["--tail", str(tail)] if tail is not None else [])]
    return [*command, *(["--follow"] if follow else []), *services]


def logs_tail(client: Compose, service: str, lines: int = 20) -> str:
    """The last lines of a service's logs, for a failure message; a note when there are none."""
    command = [*_logs_command(client, [service], follow=False, tail=lines), "--no-log-prefix"]
    try:
        text = "".join(runner.stream(command))
    except (DockerFailure, DeployError) as exc:
        first = str(exc).strip().splitlines()
        return f"(no logs: {first[-1] if first else type(exc).__name__})"
    return text.rstrip()


def stream_logs(client: Compose, services: Sequence[str], *, follow: bool, tail: int | None) -> Iterator[str]:
    try:
        yield from runner.stream(_logs_command(client, services, follow=follow, tail=tail))
    except DockerFailure as failure:
        raise classify(failure, "Cannot read logs") from None


# Engine 20.10 releases a removed container's network endpoints after it answers, so removing the
# network at once can fail with "has active endpoints" though no container is left: measured after
# stacks of 12 and 24 components. The same `down` again a moment later usually removes it.
ACTIVE_ENDPOINTS = "has active endpoints"
DOWN_RETRIES = (1.0, 2.0, 4.0)  # seconds before each further try


def down(client: Compose, *, volumes: bool) -> None:
    """``docker compose down``: Compose's own removal of the project's containers and networks."""
    command = [*client.command, "down", "--remove-orphans", "--timeout", "10"]
    for wait in (*DOWN_RETRIES, None):
        try:
            runner.run([*command, *(["--volumes"] if volumes else [])])
            return
        except DockerFailure as failure:
            if wait is None or ACTIVE_ENDPOINTS not in failure.stderr:
                message = "docker compose down failed"
                if ACTIVE_ENDPOINTS in failure.stderr:
                    message += (
                        " (the engine still counts endpoints of removed containers on a network: a known"
                        " bug of Docker Engine 20.10; restarting the engine clears it, and the next `up`"
                        " of this project reuses the network meanwhile)"
                    )
                raise classify(failure, message) from None
            time.sleep(wait)
