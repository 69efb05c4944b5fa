"""`backup` and `restore` of a clustered bus (bus.nodes: 3) on Compose (issue 21, part 1).

The audit stream is replicated over the three nodes as the stack renders it (R3). Acked messages
with a Nats-Msg-Id go in, one follower node is stopped, and a backup is taken: a snapshot is read
from the stream's leader, which a stream that keeps its quorum (two of three) still has, so the
backup works and holds every acked message. The stack is then removed with its volumes, and the
archive restored into the same project: every stream comes back with the manifest's sequences and
count, every message with its id in order, and replicated again over three nodes (a leader and two
current replicas). With two of three nodes down there is no leader and no snapshot: `backup` then
fails with exit 5 saying so (docs/backup.md, measured by hand: a 10 s API timeout is too long for CI).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nachos_deploy.bus import replicas
from nachos_deploy.bus.monitor import BusUnavailable
from nachos_deploy.core.plan_types import AuditPlan
from nachos_deploy.lifecycle.restore import fit_replicas
from tests.commands import compose_down, docker
from tests.gateway_stack import CHANNEL, connect, document
from tests.test_audit import stored_ids
from tests.test_backup import Project
from tests.test_node_loss import CLUSTER, eventually

MESSAGES = 300  # acked, each with its Nats-Msg-Id (the flow-control window: tests/test_backup.py)


@pytest.fixture
def cluster(engine: str, tmp_path: Path) -> Iterator[Project]:
    """The backup tests' stack on a 3-node bus, the probe as the gateway alone (no channel, no state
    store: the streams are this test's subject, and fewer containers keep it short)."""
    made = Project(tmp_path, "cluster")
    deploy = document(made.project)
    deploy["bus"].update(CLUSTER["bus"])
    del deploy["components"][CHANNEL]
    deploy["state"] = {"enabled": False}
    (made.folder / "nachos-deploy.yaml").write_text(yaml.safe_dump(deploy))
    try:
        yield made
    finally:
        compose_down(made.project)


def publish(nats_url: str, ids: list[str]) -> None:
    async def run() -> None:
        client = await connect(nats_url)
        js = client.jetstream(timeout=10)
        try:
            for msg_id in ids:
                await js.publish("nachos.audit.log", msg_id.encode(), headers={"Nats-Msg-Id": msg_id})
        finally:
            await client.close()

    asyncio.run(run())


def whole(nats_url: str) -> dict[str, replicas.StreamView]:
    """Every stream, once each replicated one has a leader and every other replica current."""
    found: dict[str, replicas.StreamView] = {}

    def check() -> bool:
        try:
            views = replicas.streams(nats_url, timeout=5)
        except BusUnavailable:
            return False
        found.clear()
        found.update({view.name: view for view in views})
        return not replicas.problems(views)

    eventually(check, 30, "every replicated stream has a leader and two current replicas")
    return found


def test_backup_with_a_follower_stopped_then_restore_the_cluster(cluster: Project) -> None:
    done = cluster.run("up", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    url = json.loads(done.stdout)["nats_url"]
    ids = [f"backup-cluster-{n}" for n in range(MESSAGES)]
    publish(url, ids)
    before = whole(url)
    audit = before["AUDIT"]
    assert audit.replicas == 3 and audit.leader is not None and len(audit.peers) == 2, audit

    follower = audit.peers[0].node  # a node that holds a replica and does not lead it
    docker("stop", "-t", "2", f"{cluster.project}-{follower}-1")
    started = time.monotonic()
    done = cluster.run("backup", "--to", str(cluster.folder / "cluster.tar"), "--json")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    backup = json.loads(done.stdout)
    print(f"backup with {follower} stopped: {took:.1f} s, {backup['size']} bytes")
    streams = backup["streams"]
    assert set(streams) == set(before)
    for name, view in before.items():
        assert streams[name]["last_seq"] == view.last_seq, name
        assert streams[name]["config"]["num_replicas"] == view.replicas, name
    assert streams["AUDIT"]["messages"] >= MESSAGES

    done = cluster.run("down", "--volumes", "--yes")
    assert done.returncode == 0, done.stderr[-3000:]
    assert cluster.volumes() == []
    started = time.monotonic()
    done = cluster.run("restore", str(cluster.folder / "cluster.tar"), "--yes", "--json")
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr[-3000:]
    restored = json.loads(done.stdout)
    print(f"restore: {took:.1f} s, timings {restored['timings']}")
    for name, doc in streams.items():
        state = restored["streams"][name]
        assert (state["last_seq"], state["messages"]) == (doc["last_seq"], doc["messages"]), name
        assert state["replicas"] == doc["config"]["num_replicas"], name  # restored R3, not healed by `up`

    url = cluster.nats_url()
    after = whole(url)
    assert set(after) == set(streams)
    for name, view in after.items():
        assert view.replicas == streams[name]["config"]["num_replicas"], name
        assert view.leader is not None and len(view.peers) == view.replicas - 1, view
        assert view.last_seq >= streams[name]["last_seq"], name
    assert asyncio.run(stored_ids(url))[:MESSAGES] == ids


def test_a_stream_is_restored_with_the_replicas_the_bus_can_hold() -> None:
    audit = AuditPlan("AUDIT", ("nachos.audit.>",), "file", 0, 0, 120, replicas=1)
    archived = {"name": "AUDIT", "num_replicas": 3, "max_bytes": -1}
    # A 3-node archive into a single node: the server refuses R3 there ("non-clustered mode").
    assert fit_replicas("AUDIT", archived, audit, 1) == {**archived, "num_replicas": 1}
    assert fit_replicas("OTHER", archived, audit, 1)["num_replicas"] == 1
    # A single-node archive into 3 nodes: the audit stream as the stack renders it, others as they were.
    single = {"name": "AUDIT", "num_replicas": 1}
    assert fit_replicas("AUDIT", single, AuditPlan("AUDIT", (), "file", 0, 0, 120, replicas=3), 3) == {
        **single,
        "num_replicas": 3,
    }
    assert fit_replicas("OTHER", single, audit, 3)["num_replicas"] == 1
    assert fit_replicas("OTHER", {"name": "OTHER"}, None, 3)["num_replicas"] == 1
