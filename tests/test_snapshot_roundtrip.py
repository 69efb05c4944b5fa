"""A stream's snapshot taken and restored through JetStream's API (bus/snapshots.py), against real
nats-servers: what `backup` and `restore` do to the streams, without an engine. Both an empty stream
(a backup of a fresh stack: its audit stream never held a message) and one with messages must be
judged restored whole; the empty one's first sequence reads 0 at the backup and 1 after the restore,
which once failed every restore of such a backup ("restored with sequences 1..0 ... says 0..0")."""

from __future__ import annotations

import asyncio

import nats
import pytest

from nachos_deploy.bus import snapshots
from tests.natsserver import ServerFactory, nats_server_factory

__all__ = ["nats_server_factory"]  # the fixture, imported for pytest


def fill(nats_url: str, streams: dict[str, int]) -> None:
    """Make each stream (subject ``<name>.x``) with that many messages."""

    async def run() -> None:
        client = await nats.connect(nats_url)
        try:
            js = client.jetstream()
            for name, count in streams.items():
                await js.add_stream(name=name, subjects=[f"{name}.x"])
                for index in range(count):
                    await js.publish(f"{name}.x", f"message {index}".encode())
        finally:
            await client.close()

    asyncio.run(run())


@pytest.mark.parametrize("messages", [0, 3], ids=["empty", "three-messages"])
def test_a_snapshot_restored_on_another_server_is_judged_whole(
    nats_server_factory: ServerFactory, messages: int
) -> None:
    source, fresh = nats_server_factory(), nats_server_factory()
    fill(source.nats_url, {"AUDIT": messages})
    [snap] = snapshots.snapshot_all(source.nats_url, progress=lambda _: None)
    assert (snap.last_seq, snap.messages) == (messages, messages)
    [state] = snapshots.restore_all(fresh.nats_url, [snap], progress=lambda _: None)
    assert snap.restored_as(state), (snap.state, state)
    assert snapshots.states(fresh.nats_url)["AUDIT"].last_seq == messages


def test_a_restore_missing_messages_is_not_judged_whole(nats_server_factory: ServerFactory) -> None:
    source = nats_server_factory()
    fill(source.nats_url, {"AUDIT": 3, "EMPTY": 0})
    snaps = {s.name: s for s in snapshots.snapshot_all(source.nats_url, progress=lambda _: None)}
    live = snapshots.states(source.nats_url)
    assert snaps["AUDIT"].restored_as(live["AUDIT"]) and snaps["EMPTY"].restored_as(live["EMPTY"])
    # the other stream's state, and an empty one's, do not pass for AUDIT's
    assert not snaps["AUDIT"].restored_as(live["EMPTY"])
    assert not snaps["EMPTY"].restored_as(live["AUDIT"])
    short = snapshots.StreamState("AUDIT", first_seq=1, last_seq=3, messages=2)
    assert not snaps["AUDIT"].restored_as(short)
