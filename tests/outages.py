"""Outages of a running stack and the `up` that follows them, on the real engine: shared by
``tests/test_outage.py`` (a short set, in CI) and ``benchmarks/outage.py`` (the full sweep).

The stack is the demo's: four probe components under the defaults, each behind its bus sidecar.
An outage is what an operator or a crash does to it: ``docker stop`` of the hub for some seconds,
``docker kill`` of the hub, or ``docker stop`` of one sidecar. Then ``up`` runs as always, and the
outcome says whether it converged, how long after the bus was proven, what it had to restart, and
which leaf remotes the sidecars tried while the hub was away (only ``bus:7422`` may appear: any
other address is one the hub advertised and they cannot reach).
"""

from __future__ import annotations

import itertools
import re
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from nachos_deploy.core.errors import DeployError
from nachos_deploy.core.names import BUS, LEAF_PORT
from nachos_deploy.io.stack import Stack, prepare
from nachos_deploy.lifecycle import down as teardown
from nachos_deploy.lifecycle import up as lifecycle
from tests.documents import stack_document

PROBE = "nachos-deploy/probe:latest"
KINDS = ("stop-bus", "kill-bus", "stop-sidecar")
SIDECAR = "bus-gateway"  # the sidecar a stop-sidecar outage stops
_TRIED = re.compile(r'Error trying to connect as leafnode to remote server "([^"]+)"')
# A try that failed, or the login that ended the tries, with nats-server's own time stamp.
_EVENT = re.compile(
    r"(\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d+) \[\w+\] .*"
    r"(Error trying to connect as leafnode|Leafnode connection created)"
)


def write_deploy_file(folder: Path, project: str, *, small: bool = False) -> Path:
    """The demo's deploy file with its own project name and engine-picked host ports; ``small``:
    only the gateway and llm-proxy (five networks instead of seven, for CI's shared engine)."""
    probe = {"image": PROBE}
    components: dict[str, dict[str, object]] = {
        "gateway": {**probe, "egress": False},
        "llm-proxy": {**probe, "egress": False},
    }
    if not small:
        components |= {"webchat": {**probe, "enabled": True}, "filesystem": {**probe, "enabled": True}}
    document = stack_document(project, components, bus={}, output="out")
    path = folder / "nachos-deploy.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def make_stack(folder: Path, project: str, *, small: bool = False) -> Stack:
    return prepare(write_deploy_file(folder, project, small=small), cwd=folder, environ={})


def remove(stack: Stack) -> None:
    teardown.down(stack, volumes=True)


@dataclass
class Outcome:
    """One outage and the `up` after it. ``after_proven``: seconds from the bus proven (and the audit
    stream provisioned) to every service ok; ``restarted``: the services `up` restarted;
    ``strays``: leaf remotes other than bus:7422 that a sidecar tried during the outage;
    ``longest_try``: the longest time, in seconds, a sidecar went without a new try at the hub while
    it was away (a try that fails slowly, as a lookup of `bus` forwarded to resolvers that never
    answer, delays the next one and so the return)."""

    kind: str
    seconds: float
    ok: bool
    after_proven: float | None = None
    total: float | None = None
    restarted: list[str] = field(default_factory=list)
    strays: list[str] = field(default_factory=list)
    longest_try: float = 0.0
    error: str | None = None
    component_errors: list[str] = field(default_factory=list)
    """stop-sidecar: the errors of the component's tries at its stopped sidecar, from its log (a
    try stuck in a lookup that never fails ends as the client's TimeoutError, 2 s later)."""


def _docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout.strip()


def _logs(stack: Stack, since: float) -> list[str]:
    """Each sidecar's log since ``since``."""
    logs = []
    for sidecar in stack.plan.sidecars:
        container = f"{stack.project}-{sidecar.service.name}-1"
        done = subprocess.run(
            ["docker", "logs", "--since", f"{since:.3f}", container], capture_output=True, text=True
        )
        logs.append(done.stdout + done.stderr)
    return logs


def _strays(logs: list[str]) -> list[str]:
    return sorted({host for log in logs for host in _TRIED.findall(log) if host != f"{BUS}:{LEAF_PORT}"})


def _longest_try(logs: list[str]) -> float:
    """The longest gap between a sidecar's tries at the hub (and its login after the last one)."""
    gaps = [0.0]
    for log in logs:
        stamps = [
            datetime.strptime(stamp, "%Y/%m/%d %H:%M:%S.%f").timestamp() for stamp, _ in _EVENT.findall(log)
        ]
        gaps += [later - earlier for earlier, later in itertools.pairwise(stamps)]
    return max(gaps)


_TRY_ERROR = re.compile(r"bus error: (.+)$", re.MULTILINE)


def _component_errors(stack: Stack, kind: str, since: float) -> list[str]:
    if kind != "stop-sidecar":
        return []
    component = SIDECAR.removeprefix("bus-")
    done = subprocess.run(
        ["docker", "logs", "--since", f"{since:.3f}", f"{stack.project}-{component}-1"],
        capture_output=True,
        text=True,
    )
    return _TRY_ERROR.findall(done.stdout + done.stderr)


def outage(stack: Stack, kind: str, seconds: float, *, timeout: float = 90.0) -> Outcome:
    """Do the outage (``kind`` in KINDS) to the running stack, wait ``seconds``, then `up`."""
    service = SIDECAR if kind == "stop-sidecar" else "bus"
    container = f"{stack.project}-{service}-1"
    began = time.time()
    _docker("kill" if kind == "kill-bus" else "stop", container)
    time.sleep(seconds)
    try:
        result = lifecycle.up(stack, timeout=timeout)
    except DeployError as exc:
        logs = _logs(stack, began)
        return Outcome(
            kind, seconds, False, strays=_strays(logs), longest_try=_longest_try(logs), error=exc.message
        )
    logs = _logs(stack, began)
    return Outcome(
        kind,
        seconds,
        True,
        after_proven=result.phases["components"],
        total=result.phases["total"],
        restarted=sorted(r.name for r in result.services if r.healed),
        strays=_strays(logs),
        longest_try=_longest_try(logs),
        component_errors=_component_errors(stack, kind, began),
    )
