"""Ctrl-C (SIGINT) or SIGTERM during `up`, on the real engine: exit 130 with one line that says what
may be left and how to finish or remove it; a second `up` converges."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from tests.conftest import without_networks_wait
from tests.documents import stack_document
from tests.test_lifecycle import PROBE, containers


def wait_for_event(project: str, event: str, service: str, timeout: float = 60.0) -> subprocess.Popen[str]:
    """A live `docker events` stream of the project, subscribed before the command it watches
    starts; :func:`seen` then blocks until ``event`` (create, start) of ``service`` arrives."""
    return subprocess.Popen(
        [
            "docker", "events", "--filter", "type=container", "--filter", f"event={event}",
            "--filter", f"label=com.docker.compose.project={project}",
            "--filter", f"label=com.docker.compose.service={service}",
            "--format", "{{.Action}}",
        ],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip


def seen(events: subprocess.Popen[str]) -> None:
    assert events.stdout is not None
    line = events.stdout.readline()  # blocks until the event; the test's timeout bounds it
    events.terminate()
    events.communicate(timeout=10)  # and closes its pipe
    assert line.strip(), "the event never came"


# Each moment is an engine event, not a delay (the 2-core machine varies, and `up` got faster):
# the bus being created (its Compose run), a component's container being created (which `up` does
# while it gates the bus), a sidecar starting (the components' phase).
@pytest.mark.parametrize(
    ("event", "service", "signum"),
    [
        ("create", "bus", signal.SIGINT),
        ("create", "webchat", signal.SIGTERM),
        ("start", "bus-webchat", signal.SIGINT),
    ],
    ids=["starting-the-bus", "gating-sigterm", "components"],
)
def test_an_interrupted_up_exits_130_and_a_second_up_converges(
    engine: str, tmp_path: Path, event: str, service: str, signum: signal.Signals
) -> None:
    project = f"ndt-int-{uuid.uuid4().hex[:8]}"
    file = tmp_path / "nachos-deploy.yaml"
    webchat = {"image": PROBE, "enabled": True, "egress": False}
    file.write_text(yaml.safe_dump(stack_document(project, {"webchat": webchat})))
    command = [sys.executable, "-m", "nachos_deploy", "up", "-c", str(file), "--timeout", "90"]
    try:
        events = wait_for_event(project, event, service)
        time.sleep(0.5)  # subscribed
        # As at a terminal: Ctrl-C reaches a command whose SIGINT is the default, whatever this test
        # process inherited (a job a non-interactive shell started with `&` ignores SIGINT, and so
        # would every command it runs).
        run = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        seen(events)
        run.send_signal(signum)
        out, err = run.communicate(timeout=60)
        assert run.returncode == 130, out + err
        lines = without_networks_wait(err)
        assert lines == [
            f"Interrupted: project {project} may be left partly started; run `nachos-deploy up -c {file} "
            f"-p {project}` to finish it or `nachos-deploy down -p {project}` to remove it."
        ], err
        again = subprocess.run(command, capture_output=True, text=True, timeout=180)
        assert again.returncode == 0, again.stdout + again.stderr
    finally:
        subprocess.run(
            [sys.executable, "-m", "nachos_deploy", "down", "-c", str(file), "--volumes", "--yes"],
            capture_output=True,
            timeout=180,
        )


def test_a_config_change_recreates_only_the_service_it_affects(engine: str, tmp_path: Path) -> None:
    project = f"ndt-chg-{uuid.uuid4().hex[:8]}"
    file = tmp_path / "nachos-deploy.yaml"

    def write(value: str) -> None:
        webchat = {"image": PROBE, "enabled": True, "egress": False, "environment": {"EXAMPLE": value}}
        components = {"llm-proxy": {"image": PROBE, "egress": False}, "webchat": webchat}
        file.write_text(yaml.safe_dump(stack_document(project, components)))

    def ids() -> dict[str, str]:
        return containers(project)

    command = [sys.executable, "-m", "nachos_deploy", "up", "-c", str(file), "--timeout", "90"]
    try:
        write("one")
        first = subprocess.run(command, capture_output=True, text=True, timeout=180)
        assert first.returncode == 0, first.stdout + first.stderr
        before = ids()
        write("two")
        second = subprocess.run(command, capture_output=True, text=True, timeout=180)
        assert second.returncode == 0, second.stdout + second.stderr
        after = ids()
        assert set(before) == set(after)
        changed = sorted(name for name in before if before[name] != after[name])
        assert changed == ["webchat"], changed
    finally:
        subprocess.run(
            [sys.executable, "-m", "nachos_deploy", "down", "-c", str(file), "--volumes", "--yes"],
            capture_output=True,
            timeout=180,
        )
