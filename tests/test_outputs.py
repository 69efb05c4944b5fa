"""The connection details for the next step, for a clustered bus: every URL, so a client fails over
(no engine: the values themselves, then a real nats-py client against real nats-servers)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import nats

from nachos_deploy.core.results import Endpoints
from nachos_deploy.interfaces import outputs
from tests.natsserver import start_nats_server

ONE = "nats://op:pw@127.0.0.1:4222"
NODES = (
    ("bus", "nats://op:pw@127.0.0.1:5001", "nats://sys:x@127.0.0.1:5001"),
    ("bus-2", "nats://op:pw@127.0.0.1:5002", "nats://sys:x@127.0.0.1:5002"),
    ("bus-3", "nats://op:pw@127.0.0.1:5003", "nats://sys:x@127.0.0.1:5003"),
)


def test_a_clustered_bus_gives_every_url_and_one_node_gives_none(tmp_path: Path) -> None:
    clustered = outputs.values(Endpoints(ONE, "nats://sys:x@127.0.0.1:4222", nodes=NODES), "p")
    assert clustered["NATS_SERVERS"] == ",".join([ONE, *(url for _, url, _ in NODES)])
    assert list(clustered)[:2] == ["NATS_URL", "NATS_SERVERS"]
    single = outputs.values(Endpoints(ONE, "nats://sys:x@127.0.0.1:4222"), "p")
    assert "NATS_SERVERS" not in single
    step = tmp_path / "output"
    outputs.append_github(single, {"GITHUB_OUTPUT": str(step)})
    assert "nats_servers=\n" in step.read_text()  # declared by action.yml, so written, empty
    outputs.append_github(clustered, {"GITHUB_OUTPUT": str(step)})
    assert f"nats_servers={clustered['NATS_SERVERS']}\n" in step.read_text()


def test_a_client_given_every_url_moves_on_at_once_when_its_server_goes(tmp_path: Path) -> None:
    """What NATS_SERVERS is for: a client of one URL can only redial it (nats-py not within 2 s of
    its last dial); given the list it takes the next URL, here the only server left."""
    with (
        start_nats_server(tmp_path / "a", jetstream=False) as first,
        start_nats_server(tmp_path / "b", jetstream=False) as second,
    ):
        endpoints = Endpoints(
            first.nats_url, first.nats_url, nodes=(("b", second.nats_url, second.nats_url),)
        )
        servers = outputs.values(endpoints, "p")["NATS_SERVERS"].split(",")

        async def move() -> None:
            back = asyncio.Event()

            async def reconnected() -> None:
                back.set()

            client = await nats.connect(
                servers, dont_randomize=True, reconnected_cb=reconnected, max_reconnect_attempts=-1
            )
            assert client.connected_url is not None and client.connected_url.port == first.client_port
            first.stop()
            await asyncio.wait_for(back.wait(), 10)
            assert client.connected_url is not None and client.connected_url.port == second.client_port
            await client.close()

        asyncio.run(move())
