"""A restore's chunks, against a real nats-server: a chunk sent before anyone listens on the restore's
deliver subject (on a cluster the restoring node's interest reaches the client's node over a route
a moment after the answer; CI saw "no responders" for the first chunk of a 3-node restore) is sent
again until someone does, and given up with the server's own error when no one ever does."""

from __future__ import annotations

import asyncio

import nats
import pytest
from nats import errors as nats_errors
from nats.aio.msg import Msg

from nachos_deploy.bus import snapshots
from tests.natsserver import NatsServer, nats_server, nats_server_factory

__all__ = ["nats_server", "nats_server_factory"]  # fixtures, imported for pytest

SUBJECT = "$JS.SNAPSHOT.RESTORE.AUDIT.test"


def test_a_chunk_sent_before_the_deliver_subject_is_heard_is_sent_again(nats_server: NatsServer) -> None:
    async def run() -> tuple[bytes, list[bytes]]:
        sender = await nats.connect(nats_server.nats_url)
        restorer = await nats.connect(nats_server.nats_url)
        taken: list[bytes] = []

        async def take(msg: Msg) -> None:
            taken.append(msg.data)
            await msg.respond(b"")  # the acknowledgement

        async def listen_late() -> None:
            await asyncio.sleep(0.4)
            await restorer.subscribe(SUBJECT, cb=take)
            await restorer.flush()

        late = asyncio.create_task(listen_late())
        try:
            reply = await snapshots._send_chunk(sender, SUBJECT, b"chunk-0")
            await late
            return reply.data, taken
        finally:
            await sender.close()
            await restorer.close()

    data, taken = asyncio.run(run())
    assert data == b"" and taken == [b"chunk-0"]  # taken once, although sent several times


def test_a_deliver_subject_no_one_ever_hears_gives_up_with_no_responders(
    nats_server: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(snapshots, "INTEREST_WAIT", 0.3)

    async def run() -> None:
        sender = await nats.connect(nats_server.nats_url)
        try:
            await snapshots._send_chunk(sender, SUBJECT, b"chunk-0")
        finally:
            await sender.close()

    with pytest.raises(nats_errors.NoRespondersError):
        asyncio.run(run())
