"""`backup` and `restore` on Swarm (issue 21, part 1): the same commands, through the same Target seam,
on a one-node swarm (tests/test_swarm.py's fixture), with a clustered bus (3 nodes, each a service of its
own: the streams have 3 replicas). One short case: a stack with a stream, a gateway database and a
session in the state store is backed up, removed with its volumes, restored, and the session goes on
counting where it was. tests/test_backup.py has the one-node bus (Compose), test_backup_cluster.py a
follower stopped during the backup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nachos_deploy.bus import trust
from tests.gateway_stack import CHANNEL, PROBE
from tests.test_backup import inbound, publish, stored
from tests.test_swarm import SwarmStack, swarm  # noqa: F401  (the module's one-node swarm)


@pytest.mark.engine
def test_backup_and_restore_on_swarm(swarm: None, tmp_path: Path) -> None:  # noqa: F811
    stack = SwarmStack(
        tmp_path,
        {
            "gateway": {"image": PROBE, "egress": False},
            CHANNEL: {"role": "channel", "image": PROBE, "egress": False},
        },
        bus={"nodes": 3},
    )
    try:
        done = stack.run("up", "--json")
        assert done.returncode == 0, done.stderr[-3000:]
        url = json.loads(done.stdout)["nats_url"]
        trust.trust(url, json.loads(done.stdout)["ca_file"])  # tls://: this process trusts the stack's CA
        acked = publish(url, 200)
        assert [inbound(url, "bob")["messages"] for _ in range(2)] == [1, 2]
        archive = tmp_path / "swarm.tar"
        done = stack.run("backup", "--to", str(archive), "--json")
        assert done.returncode == 0, done.stderr[-3000:]
        result = json.loads(done.stdout)
        assert result["target"] == "swarm" and result["streams"]["AUDIT"]["last_seq"] == 200
        assert result["streams"]["AUDIT"]["config"]["num_replicas"] == 3, result["streams"]["AUDIT"]["config"]
        assert result["database"]["integrity_check"] == "ok" and result["state_store"]["keys"] >= 2

        assert stack.run("down", "--volumes", "--yes").returncode == 0
        done = stack.run("restore", str(archive), "--json")
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads(done.stdout)["streams"]["AUDIT"]["messages"] == 200
        found = json.loads(stack.run("env", "--format", "json").stdout)
        url = found["NATS_URL"]
        trust.trust(url, found.get("NATS_CA_FILE"))
        assert stored(url, sorted(acked)) == acked
        assert inbound(url, "bob")["messages"] == 3
    finally:
        stack.run("down", "--volumes", "--yes", timeout=300)
