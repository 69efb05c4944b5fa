"""Which failed Swarm tasks fail an `up` (the rule of targets.swarm.failed_since), on task records as
`docker inspect` of tasks gives them (parsed in test_docker_parsers.py)."""

from __future__ import annotations

from nachos_deploy.docker.engine import ServiceState
from nachos_deploy.docker.swarm import Task
from nachos_deploy.targets.swarm import failed_since, routed


def task(service: str, state: str, at: float, exit_code: int | None = None, error: str = "") -> Task:
    return Task(service, state, "running", error, exit_code, at, "node-1")


def test_a_container_that_exited_non_zero_fails_at_once() -> None:
    tasks = [task("bus", "failed", 10.0, 1, "task: non-zero exit (1)")]
    assert failed_since(tasks, ["bus"], 5.0) == {"bus": "task: non-zero exit (1), exit code 1"}


def test_a_task_that_failed_before_its_container_ran_is_retried_twice() -> None:
    """Seen once in five runs: "error while removing network: unknown network" on a bus node's task,
    which Swarm replaced by a running one; the gate must not give up on the bus for it."""
    first = task("bus-3", "failed", 10.0, None, "error while removing network: unknown network")
    second = task("bus-3", "failed", 11.0, None, "error while removing network: unknown network")
    assert failed_since([first, second], ["bus-3"], 5.0) == {}
    third = task("bus-3", "rejected", 12.0, None, "No such image: nats:alpine")
    assert failed_since([first, second, third], ["bus-3"], 5.0) == {"bus-3": "No such image: nats:alpine"}


def test_a_container_the_engine_could_not_start_is_retried_too() -> None:
    """Engine 20.10 in a CI run: the bus task's container was created but not started (exit 128 is
    the engine's), and Swarm's next task ran; `up` had failed at once on the first."""
    busy = (
        "starting container failed: unable to remount dir as readonly: mount tmpfs "
        "/var/lib/docker/containers/x/mounts/secrets: device or resource busy"
    )
    tasks = [task("bus", "failed", 10.0, 128, busy), task("bus", "running", 11.0)]
    assert failed_since(tasks, ["bus"], 5.0) == {}
    again = [task("bus", "failed", 10.0 + i, 128, busy) for i in range(3)]
    assert failed_since(again, ["bus"], 5.0) == {"bus": f"{busy}, exit code 128"}


def test_only_the_named_services_and_failures_since_count() -> None:
    tasks = [
        task("bus", "failed", 1.0, 2, "old run"),  # before this deploy
        task("gateway", "failed", 10.0, 3, "not asked about"),
        task("bus", "running", 11.0),
        task("bus", "complete", 12.0, 0),
    ]
    assert failed_since(tasks, ["bus"], 5.0) == {}


def state(status: str, health: str | None) -> ServiceState:
    return ServiceState("bus", "c1", status, health, 0, 0, "nats:alpine")


def test_the_gate_asks_a_swarm_bus_only_once_swarm_routes_to_it() -> None:
    """Swarm puts a task in DNS only once its first healthcheck passed; a client the forwarder lets in
    before then hangs until the gate's timeout (a second of every Swarm `up`, measured)."""
    assert not routed(None)
    assert not routed(state("created", None))
    assert not routed(state("running", "starting"))
    assert not routed(state("running", "unhealthy"))
    assert routed(state("running", "healthy"))
    assert routed(state("running", None))  # no healthcheck (the forwarder), or a task on another node
