"""Which failed Swarm tasks fail an `up` (the rule of targets.swarm.failed_since), on task records as
`docker inspect` of tasks gives them (parsed in test_docker_parsers.py)."""

from __future__ import annotations

from nachos_deploy.docker.swarm import Task
from nachos_deploy.targets.swarm import failed_since


def task(service: str, state: str, at: float, exit_code: int | None = None, error: str = "") -> Task:
    return Task(service, state, "running", error, exit_code, at, "node-1")


def test_a_container_that_exited_non_zero_fails_at_once() -> None:
    tasks = [task("bus", "failed", 10.0, 1, "task: non-zero exit (1)")]
    assert failed_since(tasks, ["bus"], 5.0) == {"bus": "task: non-zero exit (1), exit code 1"}


def test_a_task_that_failed_before_its_container_ran_is_retried_once() -> None:
    """Seen once in five runs: "error while removing network: unknown network" on a bus node's task,
    which Swarm replaced by a running one; the gate must not give up on the bus for it."""
    first = task("bus-3", "failed", 10.0, None, "error while removing network: unknown network")
    assert failed_since([first], ["bus-3"], 5.0) == {}
    again = task("bus-3", "rejected", 12.0, None, "No such image: nats:alpine")
    assert failed_since([first, again], ["bus-3"], 5.0) == {"bus-3": "No such image: nats:alpine"}


def test_only_the_named_services_and_failures_since_count() -> None:
    tasks = [
        task("bus", "failed", 1.0, 2, "old run"),  # before this deploy
        task("gateway", "failed", 10.0, 3, "not asked about"),
        task("bus", "running", 11.0),
        task("bus", "complete", 12.0, 0),
    ]
    assert failed_since(tasks, ["bus"], 5.0) == {}
