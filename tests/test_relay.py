"""The clustered forwarder's relay (core/forwarder.relay_script) in the bus image, on a real engine.

A clustered bus's host ports relay each connection to the first node that accepts one, trying `bus`
first: a name every live node answers to, for which the engine's DNS gives one address per node in
a random order, a node killed a moment ago still among them. Here `bus` is two containers, one
answering on 4222 and one (the "dead" node) not: every connection must reach the live one. The
relay used to look `bus` up twice (once for its test connection, once for the relay), so it handed
about one connection in four to the dead address its test had just passed over.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from nachos_deploy.core.config import Bus
from nachos_deploy.core.forwarder import RELAY_SCRIPT, RELAYS, failover_socat, relay_script
from tests.commands import docker

pytestmark = pytest.mark.engine

IMAGE = Bus().image  # the bus image, whose socat the forwarder runs
TRIES = 40


def test_every_connection_goes_to_the_node_the_relay_tried(engine: str, tmp_path: Path) -> None:
    script = tmp_path / "relay.sh"
    script.write_text(relay_script() + "\n")
    script.chmod(0o644)
    name = f"ndt-relay-{uuid.uuid4().hex[:8]}"
    docker("network", "create", "--internal", name)
    try:
        run = ("run", "-d", "--network", name, "--entrypoint", "sh")
        # The live node answers each connection with one line; the dead one has nothing on 4222.
        docker(*run, "--name", f"{name}-live", "--network-alias", "bus", IMAGE, "-c",
               "socat TCP4-LISTEN:4222,fork,reuseaddr SYSTEM:'echo live'")  # fmt: skip
        docker(*run, "--name", f"{name}-dead", "--network-alias", "bus", IMAGE, "-c", "sleep 300")
        # The forwarder's own listener, as forwarder_script starts it; then TRIES connections to it.
        listener = failover_socat(5000, RELAYS, ["bus", f"{name}-live"], 4222)
        clients = (
            f"{listener} & sleep 0.5; ok=0; "
            f"for i in $(seq 1 {TRIES}); do "
            '[ "$(socat -T 2 - TCP4:127.0.0.1:5000 </dev/null 2>/dev/null)" = live ] && ok=$((ok+1)); '
            "done; echo ok=$ok"
        )
        done = subprocess.run(
            ["docker", "run", "--rm", "--network", name, "-v", f"{script}:{RELAY_SCRIPT}:ro",
             "--entrypoint", "sh", IMAGE, "-c", clients],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == f"ok={TRIES}", done.stdout + done.stderr
        # The test did meet the dead address (else it proved nothing): the relay said it moved on.
        assert "bus does not accept a connection on port 4222, trying the next node" in done.stderr
    finally:
        subprocess.run(
            ["docker", "rm", "-f", f"{name}-live", f"{name}-dead"], capture_output=True, timeout=60
        )
        subprocess.run(["docker", "network", "rm", name], capture_output=True, timeout=60)
