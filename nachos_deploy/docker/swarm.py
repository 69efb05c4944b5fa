"""A stack on Docker Swarm (``target: swarm``): the engine calls behind it, and nothing else.

Swarm runs services, not containers: a container of a service is one *task* of it, on whichever
node the scheduler chose, and a task that exits is replaced by a new one (a new container) instead
of being restarted. So a failure is read from the tasks (``docker stack ps``: state, error, when),
while the containers this node runs are read exactly as for Compose (:func:`states` returns the same
:class:`~nachos_deploy.docker.engine.ServiceState`), so that ``observe.judge`` stays the one rule.

Every call is a ``docker`` subprocess run through python-on-whales' ``run`` with its output captured
(``docker stack deploy`` would otherwise print its progress into ``up --json``).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from python_on_whales import DockerException
from python_on_whales.client_config import ClientNotFoundError
from python_on_whales.utils import run

from nachos_deploy.core.bus_placement import Machine
from nachos_deploy.core.errors import DeployError, EnvironmentProblem, ExitCode, typed
from nachos_deploy.core.plan import INTERNAL_NETWORK
from nachos_deploy.docker import engine
from nachos_deploy.io.files import read_env_file

STACK_LABEL = "com.docker.stack.namespace"  # on every service, container, network and volume
SERVICE_LABEL = "com.docker.swarm.service.name"  # on a task's container: <stack>_<service>
TASK_LABEL = "com.docker.swarm.task.id"
RELAY_LABEL = "org.nachos-deploy.relay"  # the value: the project; see with_relay
SWARM_INIT = "docker swarm init --advertise-addr 127.0.0.1"
FAILED_STATES = ("failed", "rejected")
ENDED_STATES = ("complete", "shutdown", "orphaned", "remove", *FAILED_STATES)


@dataclass(frozen=True)
class SwarmNode:
    """This engine's place in a swarm, from ``docker info``."""

    state: str  # inactive, pending, active, error, locked
    manager: bool
    nodes: int


@dataclass(frozen=True)
class Task:
    """One task of a service: what it is doing, what it should do, and the error it ended with."""

    service: str  # the deploy file's name, without the stack prefix
    state: str  # new ... running, complete, failed, rejected, shutdown
    desired: str  # running, shutdown, ...
    error: str
    exit_code: int | None
    at: float | None  # when it entered ``state``, seconds since the epoch
    node: str


def _docker(*args: str, env: Mapping[str, str] | None = None) -> str:
    try:
        return str(run(["docker", *args], env=dict(env or {})))
    except (ClientNotFoundError, FileNotFoundError):
        raise EnvironmentProblem(f"The docker command is not installed. {engine.INSTALL_HINT}") from None


def _daemon(exc: DockerException) -> str:
    text = engine.stderr_text(exc)
    if "Cannot connect to the Docker daemon" in text:
        raise EnvironmentProblem(f"{text}. {engine.INSTALL_HINT}") from None
    if "not a swarm manager" in text:
        raise EnvironmentProblem(
            f"{text}. The deploy file says target: swarm: run nachos-deploy on a manager of the swarm, "
            f"make this machine a one-node swarm with `{SWARM_INIT}`, or set target: compose."
        ) from None
    return text


def node_state() -> SwarmNode:
    try:
        info = json.loads(_docker("info", "--format", "{{json .Swarm}}") or "{}")
    except DockerException as exc:
        raise EnvironmentProblem(f"Cannot ask the Docker engine about its swarm: {_daemon(exc)}") from None
    except ValueError:
        info = {}
    return SwarmNode(
        state=str(info.get("LocalNodeState") or "inactive"),
        manager=bool(info.get("ControlAvailable")),
        nodes=int(info.get("Nodes") or 0),
    )


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


def deploy(project: str, stack_file: Path, *, dotenv: Path | None, prune: bool, failure: ExitCode) -> None:
    """``docker stack deploy`` of one rendered file. Images are never resolved at a registry (none
    may be reachable; the engine runs with DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 for the same
    reason). ``dotenv``: host variables for ``${VAR}`` references, as Compose reads its ``.env``."""
    args = ["stack", "deploy", "--resolve-image", "never", "--compose-file", str(stack_file)]
    variables = read_env_file(dotenv) if dotenv is not None and dotenv.is_file() else {}
    command = [*args, *(["--prune"] if prune else []), project]
    for attempt in range(3):
        try:
            _docker(*command, env=variables)
            return
        except DockerException as exc:
            text = _daemon(exc)
        # A stack removed a moment ago still has its networks going away: Swarm then refuses a
        # service on one of them ("network ... not found") until the removal is through.
        if attempt == 2 or not re.search(r"network \S+ not found", text):
            break
        time.sleep(1.0)
    raise typed(
        f"`docker stack deploy -c {stack_file.name}` of project {project} failed: {text}. The "
        f"rendered file is {stack_file}; fix the deploy file and run `nachos-deploy up` again.",
        failure,
    )


def machines() -> list[Machine]:
    """The swarm's nodes, in the order of their host names (two engine calls)."""
    try:
        ids = _docker("node", "ls", "--quiet").split()
        found = json.loads(_docker("node", "inspect", *ids)) if ids else []
    except DockerException as exc:
        raise EnvironmentProblem(f"Cannot list the swarm's nodes: {_daemon(exc)}") from None
    result = []
    for item in found:
        spec = item.get("Spec") or {}
        result.append(
            Machine(
                id=str(item.get("ID")),
                hostname=str((item.get("Description") or {}).get("Hostname") or item.get("ID")),
                ready=(item.get("Status") or {}).get("State") == "ready"
                and spec.get("Availability") == "active",
                labels=frozenset((spec.get("Labels") or {}).keys()),
            )
        )
    return sorted(result, key=lambda m: (m.hostname, m.id))


def relabel(add: Mapping[str, Sequence[str]], remove: Mapping[str, Sequence[str]]) -> None:
    """Node labels added (as ``=true``) and removed: one ``docker node update`` per machine."""
    for machine in sorted({*add, *remove}):
        args = [f"--label-add={name}=true" for name in add.get(machine, ())]
        args += [f"--label-rm={name}" for name in remove.get(machine, ())]
        try:
            _docker("node", "update", *args, machine)
        except DockerException as exc:
            raise EnvironmentProblem(f"Cannot label the swarm node {machine}: {_daemon(exc)}") from None


def services(project: str) -> dict[str, tuple[int, int]]:
    """Service name → (running tasks, desired tasks) of the stack's services; empty when none."""
    try:
        text = _docker("stack", "services", "--format", "{{.Name}} {{.Replicas}}", project)
    except DockerException as exc:
        if _nothing(exc):
            return {}
        raise EnvironmentProblem(f"Cannot list the stack's services: {_daemon(exc)}") from None
    found = {}
    for line in text.splitlines():
        name, _, replicas = line.partition(" ")
        running, _, desired = replicas.split(" ")[0].partition("/")
        if running.isdigit() and desired.isdigit():
            found[name.removeprefix(f"{project}_")] = (int(running), int(desired))
    return found


def tasks(project: str) -> list[Task]:
    """Every task the stack has had (Swarm keeps the last few of each slot): three engine calls."""
    try:
        ids = _docker("stack", "ps", "--quiet", "--no-trunc", project).split()
        listed = _docker("service", "ls", "--quiet", "--filter", f"label={STACK_LABEL}={project}")
        names = json.loads(_docker("service", "inspect", *listed.split())) if listed.split() else []
        found = json.loads(_docker("inspect", *ids)) if ids else []
    except DockerException as exc:
        text = engine.stderr_text(exc)
        if _nothing(exc) or "No such" in text:
            return []
        raise EnvironmentProblem(f"Cannot list the stack's tasks: {_daemon(exc)}") from None
    except ValueError:
        return []
    by_id = {str(s.get("ID")): str(s.get("Spec", {}).get("Name", "")) for s in names}
    result = []
    for item in found:
        status = item.get("Status") or {}
        code = (status.get("ContainerStatus") or {}).get("ExitCode")
        result.append(
            Task(
                service=by_id.get(str(item.get("ServiceID")), "").removeprefix(f"{project}_"),
                state=str(status.get("State") or ""),
                desired=str(item.get("DesiredState") or ""),
                error=str(status.get("Err") or ""),
                exit_code=code if isinstance(code, int) else None,
                at=engine.epoch_of(status.get("Timestamp")),
                node=str(item.get("NodeID") or ""),
            )
        )
    return result


def states(project: str) -> dict[str, engine.ServiceState]:
    """Service name → the state of the container of its current task on this node, or, for a task
    on another node of the swarm, the state its task reports (:func:`_remote_state`).

    Three engine calls (four with tasks on other nodes): the tasks Swarm wants running, the stack's
    containers by their label, one inspect of them all. Containers of tasks Swarm replaced (or of a
    removed stack of the same name) linger for a while and are not the service's."""
    try:
        listed = _docker(
            "stack", "ps", "--no-trunc", "--filter", "desired-state=running", "--format", "{{.ID}} {{.Name}}",
            project,
        )  # fmt: skip
        names = {task: name for task, _, name in (line.partition(" ") for line in listed.splitlines())}
        current = set(names)
    except DockerException as exc:
        if _nothing(exc):
            return {}
        raise EnvironmentProblem(f"Cannot list the stack's tasks: {_daemon(exc)}") from None
    try:
        ids = _docker(
            "container", "ls", "--all", "--quiet", "--no-trunc", "--filter", f"label={STACK_LABEL}={project}"
        )
        found = json.loads(_docker("container", "inspect", *ids.split())) if ids.split() else []
    except DockerException as exc:
        if "No such container" in engine.stderr_text(exc):
            return states(project)  # removed between the two calls: look again
        raise EnvironmentProblem(f"Cannot list the stack's containers: {_daemon(exc)}") from None
    except ValueError:
        found = []
    result: dict[str, engine.ServiceState] = {}
    for item in found:
        labels = (item.get("Config") or {}).get("Labels") or {}
        service = str(labels.get(SERVICE_LABEL) or "").removeprefix(f"{project}_")
        if not service or labels.get(TASK_LABEL) not in current:
            continue
        state = replace(engine.state_of(item), service=service)
        best = result.get(service)
        if best is None or _rank(state) > _rank(best):
            result[service] = state
        current.discard(str(labels.get(TASK_LABEL)))
    elsewhere = {names[task].removeprefix(f"{project}_").split(".")[0]: task for task in current}
    return _with_remote(project, result, {s: t for s, t in elsewhere.items() if s not in result})


def _with_remote(
    project: str, local: dict[str, engine.ServiceState], remote: Mapping[str, str]
) -> dict[str, engine.ServiceState]:
    """``local`` plus a state for each service whose current task (``remote``: service → task id)
    has no container on this node: it runs on another node, or has no container yet."""
    try:
        found = json.loads(_docker("inspect", *remote.values())) if remote else []
    except (DockerException, ValueError):
        found = []  # a task gone between the calls: judged as missing until the next look
    by_task = {str(item.get("ID")): item for item in found}
    result = dict(local)
    for service, task in remote.items():
        if task in by_task:
            result[service] = _remote_state(service, by_task[task])
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
    except DockerException:
        return ""  # observe then reports the sidecars as not answering


def remove_relay(project: str) -> None:
    """The relay container, if any: it holds an endpoint on the internal network, which a stack
    removal could otherwise not remove."""
    try:
        found = _docker("container", "ls", "--all", "--quiet", "--filter", f"label={RELAY_LABEL}={project}")
        if found.split():
            _docker("container", "rm", "--force", *found.split())
    except DockerException as exc:
        if "No such container" not in engine.stderr_text(exc):
            raise DeployError(f"Cannot remove the relay container: {_daemon(exc)}") from None


def _remote_state(service: str, task: Mapping[str, object]) -> engine.ServiceState:
    """A task's state as a container's: running only when Swarm says so (a task with a healthcheck
    is running once it passed); earlier states are "created", ended ones "exited". No health and no
    probes (Swarm does not report them), addresses from its network attachments."""
    status = task.get("Status") if isinstance(task.get("Status"), dict) else {}
    assert isinstance(status, dict)
    state = str(status.get("State") or "")
    container = status.get("ContainerStatus") or {}
    code = container.get("ExitCode") if isinstance(container, dict) else None
    addresses = []
    for attachment in task.get("NetworksAttachments") or []:  # type: ignore[attr-defined]
        network = str(((attachment.get("Network") or {}).get("Spec") or {}).get("Name") or "")
        for address in attachment.get("Addresses") or []:
            addresses.append((network, str(address).split("/")[0]))
    spec = (task.get("Spec") or {}).get("ContainerSpec") or {}  # type: ignore[attr-defined]
    return engine.ServiceState(
        service=service,
        container="",  # not on this node: nothing to exec into
        status="running" if state == "running" else "exited" if state in ENDED_STATES else "created",
        health=None,
        exit_code=code if isinstance(code, int) else 0,
        restart_count=0,
        image=str(spec.get("Image") or "").split("@")[0],
        container_id=str(container.get("ContainerID") or "") if isinstance(container, dict) else "",
        started_at=engine.epoch_of(status.get("Timestamp")) if state == "running" else None,
        addresses=tuple(addresses),
    )


def _rank(state: engine.ServiceState) -> tuple[bool, float]:
    return state.status == "running", state.started_at or 0.0


def logs_tail(project: str, service: str, lines: int = 20) -> str:
    """The last lines of every task of the service, the failed ones too; a container's stderr comes
    out on the command's stderr, so the two are read as one stream."""
    command = ["docker", "service", "logs", "--tail", str(lines), "--raw", f"{project}_{service}"]
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"(no logs: {exc})"
    text = done.stdout.decode("utf-8", errors="replace").rstrip()
    if done.returncode != 0:
        return f"(no logs: {' '.join(text.split())[:300]})"
    return "\n".join(text.splitlines()[-lines:])


def restart(project: str, names: Sequence[str]) -> None:
    """A new task for each (the old one is stopped): what a restart is in Swarm."""
    for name in names:
        try:
            _docker("service", "update", "--force", "--detach", "--quiet", f"{project}_{name}")
        except DockerException as exc:
            raise DeployError(f"Cannot restart {name}: {_daemon(exc)}") from None


def remove_services(project: str, names: Sequence[str]) -> None:
    existing = services(project)
    present = [f"{project}_{name}" for name in names if name in existing]
    if present:
        try:
            _docker("service", "rm", *present)
        except DockerException as exc:
            if "not found" not in engine.stderr_text(exc):
                raise DeployError(f"Cannot remove services: {_daemon(exc)}") from None


def remote_tasks(project: str, names: Sequence[str]) -> list[str]:
    """The running tasks of ``names`` on other nodes than this one (whose containers ``down`` stops
    itself: see :func:`stop_containers`)."""
    wanted = {f"{project}_{name}" for name in names}
    if not wanted:
        return []
    try:
        text = _docker("stack", "ps", "--no-trunc", "--format", "{{.ID}} {{.Name}}", project)
        here = _docker("info", "--format", "{{.Swarm.NodeID}}").strip()
    except DockerException as exc:
        if _nothing(exc):
            return []
        raise EnvironmentProblem(f"Cannot list the stack's tasks: {_daemon(exc)}") from None
    ids = [
        task
        for task, _, name in (line.partition(" ") for line in text.splitlines())
        if name.split(".")[0] in wanted
    ]
    return [task for task, node in _task_nodes(ids) if node != here]


def _task_nodes(ids: Sequence[str]) -> list[tuple[str, str]]:
    """(task, node ID) of those of ``ids`` Swarm still has and that have not ended."""
    if not ids:
        return []
    done = subprocess.run(
        ["docker", "inspect", "--type", "task", "--format", "{{.ID}} {{.Status.State}} {{.NodeID}}", *ids],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, timeout=30,
    )  # fmt: skip
    found = (line.split(" ", 2) for line in done.stdout.decode().splitlines())
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
    """The services left, the stack's networks and configs; volumes stay (Swarm never removes them)."""
    end = time.monotonic() + 60.0
    while True:
        try:
            _docker("stack", "rm", project)
            return
        except DockerException as exc:
            if _nothing(exc):
                return
            text = _daemon(exc)
        # Tasks of removed services on other nodes keep their networks until their node stopped them.
        if "in use by task" not in text or time.monotonic() >= end:
            raise DeployError(f"docker stack rm {project} failed: {text}")
        time.sleep(0.5)


def networks(project: str) -> list[str]:
    try:
        return _docker("network", "ls", "--quiet", "--filter", f"label={STACK_LABEL}={project}").split()
    except DockerException as exc:
        raise EnvironmentProblem(f"Cannot list networks: {_daemon(exc)}") from None


def volumes(project: str) -> list[str]:
    """Volumes Swarm created for the stack on this node (by its label), also when it is down."""
    try:
        text = _docker("volume", "ls", "--quiet", "--filter", f"label={STACK_LABEL}={project}")
    except DockerException as exc:
        raise EnvironmentProblem(f"Cannot list volumes: {_daemon(exc)}") from None
    return sorted(text.split())


def updating(project: str, names: Sequence[str]) -> list[str]:
    """Those of ``names`` whose last update (a changed spec: a new task replaces the old) is still
    rolling out; a service never updated has no update status."""
    full = [f"{project}_{name}" for name in names]
    try:
        found = json.loads(_docker("service", "inspect", *full))
    except DockerException as exc:
        if "no such service" in engine.stderr_text(exc).lower():
            return []
        raise EnvironmentProblem(f"Cannot inspect the stack's services: {_daemon(exc)}") from None
    except ValueError:
        return []
    return sorted(
        str(item.get("Spec", {}).get("Name", "")).removeprefix(f"{project}_")
        for item in found
        if (item.get("UpdateStatus") or {}).get("State") in ("updating", "rollback_started")
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
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                yield line.decode("utf-8", errors="replace")


def _nothing(exc: DockerException) -> bool:
    """The stack has no services (yet, or any more): "nothing found in stack: NAME"."""
    return "nothing found in stack" in engine.stderr_text(exc).lower()


def containers(project: str) -> list[tuple[str, str]]:
    """(service, status) of every container of the stack on this node, current task or not."""
    fields = f'{{{{.Label "{SERVICE_LABEL}"}}}} {{{{.State}}}}'
    try:
        text = _docker(
            "container", "ls", "--all", "--filter", f"label={STACK_LABEL}={project}", "--format", fields
        )
    except DockerException as exc:
        raise EnvironmentProblem(f"Cannot list the stack's containers: {_daemon(exc)}") from None
    found = []
    for line in text.splitlines():
        service, _, status = line.partition(" ")
        found.append((service.removeprefix(f"{project}_"), status))
    return found


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
    except DockerException as exc:
        if "No such container" not in engine.stderr_text(exc):
            raise DeployError(f"Cannot stop the stack's containers: {_daemon(exc)}") from None


def has_ipvs() -> bool:
    """The kernel's IP virtual server, which Swarm's VIP endpoints and ingress need: loaded, or
    a module this kernel could load."""
    import platform

    if Path("/proc/net/ip_vs").exists():
        return True
    modules = Path("/lib/modules") / platform.release()
    return any(modules.rglob("ip_vs.ko*")) if modules.is_dir() else False
