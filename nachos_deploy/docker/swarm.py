"""A stack on Docker Swarm (``target: swarm``): the engine calls behind it, and nothing else.

Swarm runs services, not containers: a container of a service is one *task* of it, on whichever
node the scheduler chose, and a task that exits is replaced by a new one (a new container) instead
of being restarted. So a failure is read from the tasks (``docker stack ps``: state, error, when),
while the containers this node runs are read exactly as for Compose (:func:`states` returns the same
:class:`~nachos_deploy.docker.engine.ServiceState`), so that ``observe.judge`` stays the one rule.

Every call is argv through :mod:`~nachos_deploy.docker.runner` with its output captured (``docker
stack deploy`` would otherwise print its progress into ``up --json``), every failure a project error
through :func:`~nachos_deploy.docker.errors.classify`; the JSON is read by
:mod:`~nachos_deploy.docker.parse`.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from nachos_deploy.core.bus_placement import Machine
from nachos_deploy.core.errors import DeployError, EnvironmentProblem, ExitCode
from nachos_deploy.core.names import INTERNAL_NETWORK
from nachos_deploy.docker import engine, runner
from nachos_deploy.docker.errors import SWARM_INIT, Meaning, classify, meaning_of
from nachos_deploy.docker.parse import (
    ENDED_STATES,
    FAILED_STATES,
    SwarmNode,
    Task,
    items,
    machine_of,
    mapping,
    most_named,
    remote_state,
    replicas,
    state_of,
    swarm_node,
    task_of,
    task_services,
)
from nachos_deploy.docker.runner import DockerFailure, DockerTimeout
from nachos_deploy.io.files import read_env_file

__all__ = [
    "ENDED_STATES",
    "FAILED_STATES",
    "RELAY_LABEL",
    "SERVICE_LABEL",
    "STACK_LABEL",
    "SWARM_INIT",
    "TASK_LABEL",
    "SwarmNode",
    "Task",
    "containers",
    "deploy",
    "has_ipvs",
    "machines",
    "networks",
    "node_state",
    "relabel",
    "remote_tasks",
    "remove_relay",
    "remove_services",
    "remove_stack",
    "require_manager",
    "restart",
    "services",
    "states",
    "stop_containers",
    "stream_logs",
    "tasks",
    "updating",
    "volumes",
    "wait_tasks_ended",
    "with_relay",
]

STACK_LABEL = "com.docker.stack.namespace"  # on every service, container, network and volume
SERVICE_LABEL = "com.docker.swarm.service.name"  # on a task's container: <stack>_<service>
TASK_LABEL = "com.docker.swarm.task.id"
RELAY_LABEL = "org.nachos-deploy.relay"  # the value: the project; see with_relay
# On every service: the output folder it was deployed from, which the stack files take from this
# variable (the files themselves stay the same on every machine); see output_folders.
OUTPUT_LABEL = "org.nachos-deploy.output"
OUTPUT_VARIABLE = "NACHOS_OUTPUT_DIR"
_remote_state = remote_state  # the former private name, which tests/test_swarm_nodes.py reads


def _docker(*args: str, env: Mapping[str, str] | None = None) -> str:
    """The stdout of ``docker ARGS`` (``env``: variables added to this process's own)."""
    return runner.output(["docker", *args], env=env)


def _environment(failure: DockerFailure, doing: str) -> DeployError:
    """A failure to read the swarm's state: the machine's problem (exit 4) whatever Docker said."""
    return classify(failure, doing, exit_code=ExitCode.ENVIRONMENT)


def node_state() -> SwarmNode:
    try:
        info = json.loads(_docker("info", "--format", "{{json .Swarm}}") or "{}")
    except DockerFailure as failure:
        raise _environment(failure, "Cannot ask the Docker engine about its swarm") from None
    except ValueError:
        info = {}
    return swarm_node(mapping(info))


def require_manager() -> SwarmNode:
    """The swarm must be active and this node one of its managers: only managers deploy stacks."""
    node = node_state()
    if node.state != "active":
        raise EnvironmentProblem(
            f"The deploy file says target: swarm, but this Docker engine is not in an active swarm (its "
            f"state: {node.state}). Make this machine a one-node swarm with `{SWARM_INIT}`, join an "
            "existing one (`docker swarm join`), or set target: compose."
        )
    if not node.manager:
        raise EnvironmentProblem(
            "This Docker engine is a swarm worker; stacks are deployed from a manager. Run nachos-deploy "
            "on a manager node (`docker node ls` there lists them), or promote this one with "
            "`docker node promote`."
        )
    return node


def deploy(
    project: str,
    stack_file: Path,
    *,
    dotenv: Path | None,
    prune: bool,
    failure: ExitCode,
    variables: Mapping[str, str] | None = None,
) -> None:
    """``docker stack deploy`` of one rendered file. Images are never resolved at a registry (none
    may be reachable; the engine runs with DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 for the same
    reason). ``dotenv``: host variables for ``${VAR}`` references, as Compose reads its ``.env``;
    ``variables``: more of them, which the stack file needs (the credential secrets' versions).

    A stack removed a moment ago still has its networks going away: Swarm then refuses a service on
    one of them ("network ... not found") until the removal is through, so that is tried again."""
    args = ["stack", "deploy", "--resolve-image", "never", "--compose-file", str(stack_file)]
    environment = read_env_file(dotenv) if dotenv is not None and dotenv.is_file() else {}
    environment.update(variables or {})
    environment[OUTPUT_VARIABLE] = str(stack_file.parent)  # the output folder, as a label of each service
    command = [*args, *(["--prune"] if prune else []), project]
    for attempt in range(3):
        try:
            _docker(*command, env=environment)
            return
        except DockerFailure as problem:
            if attempt == 2 or meaning_of(problem) is not Meaning.NETWORK_NOT_FOUND:
                raise classify(
                    problem,
                    f"`docker stack deploy -c {stack_file.name}` of project {project} failed",
                    exit_code=failure,
                    fix=f"The rendered file is {stack_file}; fix the deploy file and run `nachos-deploy up` "
                    "again.",
                ) from None
        time.sleep(1.0)


def machines() -> list[Machine]:
    """The swarm's nodes, in the order of their host names (two engine calls)."""
    try:
        ids = _docker("node", "ls", "--quiet").split()
        found = json.loads(_docker("node", "inspect", *ids)) if ids else []
    except DockerFailure as failure:
        raise _environment(failure, "Cannot list the swarm's nodes") from None
    return sorted((machine_of(item) for item in items(found)), key=lambda m: (m.hostname, m.id))


def relabel(add: Mapping[str, Sequence[str]], remove: Mapping[str, Sequence[str]]) -> None:
    """Node labels added (as ``=true``) and removed: one ``docker node update`` per machine."""
    for machine in sorted({*add, *remove}):
        args = [f"--label-add={name}=true" for name in add.get(machine, ())]
        args += [f"--label-rm={name}" for name in remove.get(machine, ())]
        try:
            _docker("node", "update", *args, machine)
        except DockerFailure as failure:
            raise _environment(failure, f"Cannot label the swarm node {machine}") from None


def output_folders(project: str) -> list[Path]:
    """The output folders the stack's services were deployed from (their OUTPUT_LABEL), most
    services' first; empty when the stack does not exist or this engine is no swarm manager."""
    try:
        listed = _docker("service", "ls", "--quiet", "--filter", f"label={STACK_LABEL}={project}").split()
        template = f'{{{{index .Spec.Labels "{OUTPUT_LABEL}"}}}}'
        text = _docker("service", "inspect", "--format", template, *listed) if listed else ""
    except DockerFailure:
        return []  # not a swarm (manager), or the services went between the two calls: none found
    return most_named(text.splitlines())


def services(project: str) -> dict[str, tuple[int, int]]:
    """Service name → (running tasks, desired tasks) of the stack's services; empty when none."""
    try:
        text = _docker("stack", "services", "--format", "{{.Name}} {{.Replicas}}", project)
    except DockerFailure as failure:
        if meaning_of(failure) is Meaning.STACK_EMPTY:
            return {}
        raise _environment(failure, "Cannot list the stack's services") from None
    return replicas(text, project)


def tasks(project: str) -> list[Task]:
    """Every task the stack has had (Swarm keeps the last few of each slot): two engine calls."""
    try:
        listed = task_services(_docker("stack", "ps", "--no-trunc", "--format", "{{.ID}} {{.Name}}", project))
        found = items(json.loads(_docker("inspect", *listed))) if listed else []
    except DockerFailure as failure:
        if meaning_of(failure) in (Meaning.STACK_EMPTY, Meaning.GONE):
            return []
        raise _environment(failure, "Cannot list the stack's tasks") from None
    except ValueError:
        return []
    by_service = {str(item.get("ServiceID")): listed.get(str(item.get("ID")), "") for item in found}
    return [task_of(item, by_service, project) for item in found]


def states(project: str) -> dict[str, engine.ServiceState]:
    """Service name → the state of the container of its current task on this node, or, for a task
    on another node of the swarm, the state its task reports (:func:`remote_state`).

    Three engine calls (four with tasks on other nodes): the tasks Swarm wants running, the stack's
    containers by their label, one inspect of them all. Containers of tasks Swarm replaced (or of a
    removed stack of the same name) linger for a while and are not the service's."""
    try:
        listed = _docker(
            "stack", "ps", "--no-trunc", "--filter", "desired-state=running", "--format", "{{.ID}} {{.Name}}",
            project,
        )  # fmt: skip
    except DockerFailure as failure:
        if meaning_of(failure) is Meaning.STACK_EMPTY:
            return {}
        raise _environment(failure, "Cannot list the stack's tasks") from None
    names = task_services(listed)
    current = set(names)
    found: list[Mapping[str, object]] = []
    for attempt in range(5):
        try:
            ids = _docker(
                "container",
                "ls",
                "--all",
                "--quiet",
                "--no-trunc",
                "--filter",
                f"label={STACK_LABEL}={project}",
            )
            found = items(json.loads(_docker("container", "inspect", *ids.split()))) if ids.split() else []
            break
        except DockerFailure as failure:
            if meaning_of(failure) is Meaning.GONE and attempt < 4:  # removed between the two calls
                continue
            raise _environment(failure, "Cannot list the stack's containers") from None
        except ValueError:
            break
    result: dict[str, engine.ServiceState] = {}
    for item in found:
        labels = mapping(mapping(item.get("Config")).get("Labels"))
        service = str(labels.get(SERVICE_LABEL) or "").removeprefix(f"{project}_")
        if not service or labels.get(TASK_LABEL) not in current:
            continue
        state = replace(state_of(item), service=service)
        best = result.get(service)
        if best is None or _rank(state) > _rank(best):
            result[service] = state
        current.discard(str(labels.get(TASK_LABEL)))
    elsewhere = {names[task].removeprefix(f"{project}_"): task for task in current}
    return _with_remote(project, result, {s: t for s, t in elsewhere.items() if s not in result})


def _with_remote(
    project: str, local: dict[str, engine.ServiceState], remote: Mapping[str, str]
) -> dict[str, engine.ServiceState]:
    """``local`` plus a state for each service whose current task (``remote``: service → task id)
    has no container on this node: it runs on another node, or has no container yet."""
    try:
        found = items(json.loads(_docker("inspect", *remote.values()))) if remote else []
    except (DockerFailure, ValueError):
        found = []  # a task gone between the calls: judged as missing until the next look
    by_task = {str(item.get("ID")): item for item in found}
    result = dict(local)
    for service, task in remote.items():
        if task in by_task:
            result[service] = remote_state(service, by_task[task])
    return result


def with_relay(project: str, states: Mapping[str, engine.ServiceState]) -> dict[str, engine.ServiceState]:
    """``states`` with the hub's container replaced by one on this node that observe can exec into
    to read the sidecars' /connz (they publish no port), when the hub runs on another node: a
    container of the stack here on the internal network, else nachos-deploy's relay container."""
    result = dict(states)
    hub = result.get("bus")
    if hub is None or hub.container:
        return result
    internal = f"{project}_{INTERNAL_NETWORK}"
    here = next(
        (s for s in states.values() if s.container and s.status == "running" and s.address_on(internal)), None
    )
    result["bus"] = replace(hub, container=here.container if here else _relay(project, internal, hub.image))
    return result


def _relay(project: str, network: str, image: str) -> str:
    """A sleeping container on the stack's internal network (attachable), started once and kept
    until ``down`` (:func:`remove_relay`): no privileges, no writable filesystem, no stack label."""
    try:
        found = _docker("container", "ls", "--quiet", "--filter", f"label={RELAY_LABEL}={project}")
        if found.split():
            return found.split()[0]
        _docker("container", "rm", "--force", f"{project}-relay")
        return _docker(
            "run", "--detach", "--name", f"{project}-relay", "--label", f"{RELAY_LABEL}={project}",
            "--network", network, "--user", "65534:65534", "--cap-drop", "ALL", "--read-only",
            "--entrypoint", "sleep", image, "2147483647",
        ).strip()  # fmt: skip
    except DockerFailure:
        return ""  # observe then reports the sidecars as not answering


def remove_relay(project: str) -> None:
    """The relay container, if any: it holds an endpoint on the internal network, which a stack
    removal could otherwise not remove."""
    try:
        found = _docker("container", "ls", "--all", "--quiet", "--filter", f"label={RELAY_LABEL}={project}")
        if found.split():
            _docker("container", "rm", "--force", *found.split())
    except DockerFailure as failure:
        if meaning_of(failure) is not Meaning.GONE:
            raise classify(failure, "Cannot remove the relay container") from None


def _rank(state: engine.ServiceState) -> tuple[bool, float]:
    return state.status == "running", state.started_at or 0.0


def logs_tail(project: str, service: str, lines: int = 20) -> str:
    """The last lines of every task of the service, the failed ones too; a container's stderr comes
    out on the command's stderr, so the two are read as one stream."""
    command = ["docker", "service", "logs", "--tail", str(lines), "--raw", f"{project}_{service}"]
    try:
        done = runner.run(command, timeout=30, check=False, merge_stderr=True)
    except (DockerFailure, DeployError) as exc:
        return f"(no logs: {exc})"
    text = done.stdout.rstrip()
    if done.returncode != 0:
        return f"(no logs: {' '.join(text.split())[:300]})"
    return "\n".join(text.splitlines()[-lines:])


def restart(project: str, names: Sequence[str]) -> None:
    """A new task for each (the old one is stopped): what a restart is in Swarm."""
    for name in names:
        try:
            _docker("service", "update", "--force", "--detach", "--quiet", f"{project}_{name}")
        except DockerFailure as failure:
            raise classify(failure, f"Cannot restart {name}") from None


def remove_services(project: str, names: Sequence[str]) -> None:
    existing = services(project)
    present = [f"{project}_{name}" for name in names if name in existing]
    if present:
        try:
            _docker("service", "rm", *present)
        except DockerFailure as failure:
            if meaning_of(failure) is not Meaning.GONE:
                raise classify(failure, "Cannot remove services") from None


def remote_tasks(project: str, names: Sequence[str]) -> list[str]:
    """The running tasks of ``names`` on other nodes than this one (whose containers ``down`` stops
    itself: see :func:`stop_containers`)."""
    wanted = {f"{project}_{name}" for name in names}
    if not wanted:
        return []
    try:
        text = _docker("stack", "ps", "--no-trunc", "--format", "{{.ID}} {{.Name}}", project)
        here = _docker("info", "--format", "{{.Swarm.NodeID}}").strip()
    except DockerFailure as failure:
        if meaning_of(failure) is Meaning.STACK_EMPTY:
            return []
        raise _environment(failure, "Cannot list the stack's tasks") from None
    ids = [
        task
        for task, _, name in (line.partition(" ") for line in text.splitlines())
        if name.split(".")[0] in wanted
    ]
    return [task for task, node in _task_nodes(ids) if node != here]


def _task_nodes(ids: Sequence[str]) -> list[tuple[str, str]]:
    """(task, node ID) of those of ``ids`` Swarm still has and that have not ended (a task Swarm
    deleted is left out of the output: the exit code is not read)."""
    if not ids:
        return []
    command = [
        "docker",
        "inspect",
        "--type",
        "task",
        "--format",
        "{{.ID}} {{.Status.State}} {{.NodeID}}",
        *ids,
    ]
    try:
        done = runner.run(command, timeout=30, check=False)
    except DockerTimeout as failure:
        raise _environment(failure, "Cannot inspect the stack's tasks") from None
    found = (line.split(" ", 2) for line in done.stdout.splitlines())
    return [(item[0], item[2]) for item in found if len(item) == 3 and item[1] not in ENDED_STATES]


def wait_tasks_ended(ids: Sequence[str], timeout: float) -> None:
    """Until these tasks of removed services have ended (or Swarm deleted them), which their node
    reports once it stopped their containers: on other nodes later than here. Best effort."""
    end = time.monotonic() + timeout
    while ids and time.monotonic() < end:
        ids = [task for task, _ in _task_nodes(ids)]
        if ids:
            time.sleep(0.2)


def remove_stack(project: str) -> None:
    """The services left, the stack's networks and configs; volumes stay (Swarm never removes them).
    Tasks of removed services on other nodes keep their networks until their node stopped them:
    "in use by task" is tried again for up to a minute; so is a network listed and gone when removed
    (the next try lists what is left)."""
    end = time.monotonic() + 60.0
    while True:
        try:
            _docker("stack", "rm", project)
            return
        except DockerFailure as failure:
            meaning = meaning_of(failure)
            if meaning is Meaning.STACK_EMPTY:
                return
            retried = (Meaning.NETWORK_IN_USE_BY_TASK, Meaning.NETWORK_NOT_FOUND)
            if meaning not in retried or time.monotonic() >= end:
                raise classify(failure, f"docker stack rm {project} failed") from None
        time.sleep(0.5)


def networks(project: str) -> list[str]:
    try:
        return _docker("network", "ls", "--quiet", "--filter", f"label={STACK_LABEL}={project}").split()
    except DockerFailure as failure:
        raise _environment(failure, "Cannot list networks") from None


def volumes(project: str) -> list[str]:
    """Volumes Swarm created for the stack on this node (by its label), also when it is down."""
    try:
        text = _docker("volume", "ls", "--quiet", "--filter", f"label={STACK_LABEL}={project}")
    except DockerFailure as failure:
        raise _environment(failure, "Cannot list volumes") from None
    return sorted(text.split())


def updating(project: str, names: Sequence[str]) -> list[str]:
    """Those of ``names`` whose last update (a changed spec: a new task replaces the old) is still
    rolling out; a service never updated has no update status."""
    full = [f"{project}_{name}" for name in names]
    try:
        found = json.loads(_docker("service", "inspect", *full))
    except DockerFailure as failure:
        if meaning_of(failure) is Meaning.GONE:
            return []
        raise _environment(failure, "Cannot inspect the stack's services") from None
    except ValueError:
        return []
    return sorted(
        str(mapping(item.get("Spec")).get("Name", "")).removeprefix(f"{project}_")
        for item in items(found)
        if mapping(item.get("UpdateStatus")).get("State") in ("updating", "rollback_started")
    )


def stream_logs(project: str, names: Sequence[str], follow: bool, tail: int | None) -> Iterator[str]:
    """``docker service logs`` of each service in turn (Swarm has no logs of a whole stack), each
    line prefixed with its task as Swarm words it; following works for one service only."""
    if follow and len(names) != 1:
        raise DeployError(
            "With target: swarm, --follow takes one service (`nachos-deploy logs bus -f`): Swarm "
            "streams the logs of one service at a time.",
            exit_code=ExitCode.USAGE,
        )
    for name in names:
        command = ["docker", "service", "logs", *(["--follow"] if follow else [])]
        command += [*(["--tail", str(tail)] if tail is not None else []), f"{project}_{name}"]
        try:
            yield from runner.stream(command)
        except DockerFailure as failure:
            raise classify(failure, f"Cannot read the logs of {name}") from None


def containers(project: str) -> list[tuple[str, str]]:
    """(service, status) of every container of the stack on this node, current task or not."""
    fields = f'{{{{.Label "{SERVICE_LABEL}"}}}} {{{{.State}}}}'
    try:
        text = _docker(
            "container", "ls", "--all", "--filter", f"label={STACK_LABEL}={project}", "--format", fields
        )
    except DockerFailure as failure:
        raise _environment(failure, "Cannot list the stack's containers") from None
    found = []
    for line in text.splitlines():
        service, _, status = line.partition(" ")
        found.append((service.removeprefix(f"{project}_"), status))
    return found


def remove_stopped_containers(project: str) -> None:
    """``docker rm`` the stack's containers on this node that no longer run, once its services are
    gone: Swarm's agent removes a removed task's container only about 4 s after it stopped, and
    `down` waits for that (volumes in use cannot be removed). Best effort: the agent may be
    removing one at the same moment, and what is left is waited for as before."""
    try:
        text = _docker(
            "container", "ls", "--all", "--quiet", "--filter", f"label={STACK_LABEL}={project}",
            "--filter", "status=exited", "--filter", "status=created", "--filter", "status=dead",
        )  # fmt: skip
    except DockerFailure:
        return
    if text.split():
        runner.run(["docker", "container", "rm", *text.split()], check=False)


def stop_containers(project: str, names: Sequence[str], grace: int = 10) -> None:
    """``docker stop`` the containers this node runs for ``names``, all at once, now: Swarm stops a
    removed service's tasks only some seconds later, and in no order of ours."""
    running = [f"{project}_{name}" for name in names]
    try:
        text = _docker(
            "container",
            "ls",
            "--filter",
            f"label={STACK_LABEL}={project}",
            "--format",
            f'{{{{.ID}}}} {{{{.Label "{SERVICE_LABEL}"}}}}',
        )
        ids = [
            cid
            for cid, _, service in (line.partition(" ") for line in text.splitlines())
            if service in running
        ]
        if ids:
            _docker("container", "stop", "--time", str(grace), *ids)
    except DockerFailure as failure:
        if meaning_of(failure) is not Meaning.GONE:
            raise classify(failure, "Cannot stop the stack's containers") from None


def has_ipvs() -> bool:
    """The kernel's IP virtual server, which Swarm's VIP endpoints and ingress need: loaded, or
    a module this kernel could load."""
    import platform

    if Path("/proc/net/ip_vs").exists():
        return True
    modules = Path("/lib/modules") / platform.release()
    return any(modules.rglob("ip_vs.ko*")) if modules.is_dir() else False
