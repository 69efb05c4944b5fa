"""JetStream's own online backup: a stream's snapshot read and a stream restored, through nats-py.

nats-py has no helper for these, so this module speaks the server's documented API requests itself
(nats-server's ``jetstream_api.go``, as ``nats stream backup``/``restore`` do):

- ``$JS.API.STREAM.SNAPSHOT.<stream>`` with ``deliver_subject`` and ``chunk_size``: the server
  answers with the stream's configuration and the state the snapshot holds, then sends the snapshot
  (an s2-compressed tar of the stream's store) in chunks to the deliver subject. Each chunk carries a
  reply subject, and answering it is the flow control: the server stops sending once a window of
  bytes is unacknowledged, and gives up when no acknowledgement comes. An empty message without a
  reply subject ends it (nats-server 2.15 sends it with the status 204). The stream keeps taking
  publishes meanwhile: the snapshot is of the state the answer names.
- ``$JS.API.STREAM.RESTORE.<stream>`` with the configuration and state: the server answers with a
  subject to send the chunks to, each as a request that it acknowledges; an empty request ends it,
  and its reply is the restored stream's information (or the error).

On a clustered bus any node takes these requests: JetStream answers a snapshot from the stream's
leader (so it works while a minority of the stream's nodes is down, and not without a leader), and
places a restored stream on as many nodes as its configuration's ``num_replicas`` says.

A second module beside :mod:`~nachos_deploy.bus.natsclient` imports nats-py here: the snapshot flow
is its own protocol, and keeping it apart keeps natsclient about the gate and the audit stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from nats import errors as nats_errors
from nats.aio.client import Client
from nats.aio.msg import Msg

from nachos_deploy.bus.monitor import BusUnavailable, describe
from nachos_deploy.bus.natsclient import REQUEST_CONNECTION_NAME, _connected

CHUNK_SIZE = 128 * 1024
"""Bytes per chunk, both ways: the server's own default, well under any bus's max_payload."""

WINDOW_SIZE = 8 * CHUNK_SIZE
"""Bytes the server may send before it waits for acknowledgements (1 MiB, the server's default is 8):
a client that stops reading stops the server after one window, not after eight megabytes."""

API_TIMEOUT = 10.0
"""Seconds for one JetStream API answer (a snapshot's first answer waits for the store to be read)."""

INTEREST_WAIT = 5.0
"""Seconds a restore's deliver subject may take to be heard across a cluster (see _send_chunk)."""

CHUNK_TIMEOUT = 30.0
"""Seconds without a chunk before a snapshot is given up: the server itself gives up after 5 s
without an acknowledgement, so a longer silence means it has."""

NO_QUORUM = (
    " (a clustered bus answers JetStream's API only while a majority of its nodes runs, and a stream"
    " only while a majority of its replicas' nodes does: `nachos-deploy status` names the nodes that"
    " are down, `nachos-deploy up` starts them)"
)
"""What no answer most often means on a clustered bus (measured: two of three nodes stopped, the
listing or the snapshot goes unanswered, depending on whether the meta leader was among them)."""

Progress = Callable[[str], None]


class SnapshotFailed(BusUnavailable):
    """The bus refused or broke off a snapshot or a restore: the message says which stream and why."""


@dataclass(frozen=True)
class StreamSnapshot:
    """One stream as the snapshot holds it: its configuration, its state at the snapshot (first and
    last sequence, message count) and the snapshot's bytes, as the restore request wants them."""

    name: str
    config: dict[str, Any]
    state: dict[str, Any]
    data: bytes

    @property
    def first_seq(self) -> int:
        return int(self.state.get("first_seq", 0))

    @property
    def last_seq(self) -> int:
        return int(self.state.get("last_seq", 0))

    @property
    def messages(self) -> int:
        return int(self.state.get("messages", 0))

    def restored_as(self, state: StreamState) -> bool:
        """Whether ``state`` (the stream as restored) holds what this snapshot held. With no message
        only the last sequence says anything: the first is 0 in a stream that never held one and
        last + 1 in one restored (or purged) empty, so a backup of a fresh stack reads 0..0 and its
        restore 1..0."""
        if self.messages == 0 and state.messages == 0:
            return state.last_seq == self.last_seq
        return (state.first_seq, state.last_seq, state.messages) == (
            self.first_seq,
            self.last_seq,
            self.messages,
        )


@dataclass(frozen=True)
class StreamState:
    """What the bus says of a stream now (after a restore, for the verification): its state, and on
    how many nodes it is replicated."""

    name: str
    first_seq: int
    last_seq: int
    messages: int
    replicas: int = 1


def _api_answer(msg: Msg, what: str) -> dict[str, Any]:
    """A JetStream API answer as a dict; its ``error`` as a SnapshotFailed naming ``what``."""
    try:
        doc = json.loads(msg.data)
    except ValueError:
        raise SnapshotFailed(f"{what}: the bus answered something that is not JSON") from None
    if not isinstance(doc, dict):
        raise SnapshotFailed(f"{what}: the bus answered {doc!r}")
    error = doc.get("error")
    if isinstance(error, dict):
        raise SnapshotFailed(f"{what}: {error.get('description') or error} (code {error.get('err_code')})")
    return doc


async def _request(client: Client, subject: str, body: dict[str, Any], what: str) -> dict[str, Any]:
    try:
        msg = await client.request(subject, json.dumps(body).encode(), timeout=API_TIMEOUT)
    except nats_errors.NoRespondersError:
        raise SnapshotFailed(f"{what}: JetStream does not answer (is it enabled on the bus?)") from None
    except TimeoutError:
        silent = f"no answer from JetStream within {API_TIMEOUT:g} s"
        raise SnapshotFailed(f"{what}: {silent}{NO_QUORUM}") from None
    except (OSError, nats_errors.Error) as exc:
        raise SnapshotFailed(f"{what}: {describe(exc)}") from None
    return _api_answer(msg, what)


async def _stream_names(client: Client) -> list[str]:
    names: list[str] = []
    offset = 0
    while True:
        doc = await _request(client, "$JS.API.STREAM.NAMES", {"offset": offset}, "listing the streams")
        page = [str(name) for name in doc.get("streams") or []]
        names.extend(page)
        offset += len(page)
        if not page or offset >= int(doc.get("total", 0)):
            return sorted(names)


async def _snapshot(client: Client, name: str, progress: Progress) -> StreamSnapshot:
    """One stream's snapshot, every chunk acknowledged as it comes (the flow control)."""
    what = f"snapshot of stream {name}"
    inbox = client.new_inbox()
    chunks: asyncio.Queue[Msg] = asyncio.Queue()

    async def take(msg: Msg) -> None:
        await chunks.put(msg)

    sub = await client.subscribe(inbox, cb=take)
    try:
        request = {"deliver_subject": inbox, "chunk_size": CHUNK_SIZE, "window_size": WINDOW_SIZE}
        answer = await _request(client, f"$JS.API.STREAM.SNAPSHOT.{name}", request, what)
        config, state = answer.get("config") or {}, answer.get("state") or {}
        parts: list[bytes] = []
        size, said = 0, time.monotonic()
        while True:
            try:
                msg = await asyncio.wait_for(chunks.get(), CHUNK_TIMEOUT)
            except TimeoutError:
                raise SnapshotFailed(f"{what}: no chunk for {CHUNK_TIMEOUT:g} s after {size} bytes") from None
            status = (msg.headers or {}).get("Status")
            if status == "204" and not msg.data:  # nats-server 2.12+: the end, as a status message
                break
            if status is not None:  # the server broke it off (e.g. 408: no acknowledgement in time)
                reason = (msg.headers or {}).get("Description", "")
                raise SnapshotFailed(f"{what}: the bus broke it off after {size} bytes: {status} {reason}")
            if not msg.data and not msg.reply:  # the end
                break
            parts.append(bytes(msg.data))
            size += len(msg.data)
            if msg.reply:
                await client.publish(msg.reply, b"")  # the acknowledgement: the server may send more
            if time.monotonic() - said > 2.0:
                progress(f"Snapshot of stream {name}: {size / 1e6:.1f} MB so far")
                said = time.monotonic()
        return StreamSnapshot(name, config, state, b"".join(parts))
    finally:
        await sub.unsubscribe()


def snapshot_all(nats_url: str, *, progress: Progress, timeout: float = 10.0) -> list[StreamSnapshot]:
    """A snapshot of every stream on the bus, taken online (publishes go on; each snapshot holds the
    state its answer names)."""

    async def run() -> list[StreamSnapshot]:
        async with _connected(nats_url, REQUEST_CONNECTION_NAME, timeout, BusUnavailable) as client:
            names = await _stream_names(client)
            taken = []
            for name in names:
                progress(f"Taking a snapshot of stream {name}")
                taken.append(await _snapshot(client, name, progress))
            return taken

    return asyncio.run(run())


def _chunks(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), CHUNK_SIZE):
        yield data[start : start + CHUNK_SIZE]


async def _send_chunk(client: Client, deliver: str, chunk: bytes) -> Msg:
    """One chunk, sent again while no one listens on ``deliver`` yet: on a cluster the node that
    restores the stream subscribes to it, and the interest reaches the client's node over a route a
    moment after the answer (CI saw "no responders" for the first chunk of a 3-node restore). No
    responder means no one got the chunk, so sending it again cannot deliver it twice."""
    deadline = time.monotonic() + INTEREST_WAIT
    while True:
        try:
            return await client.request(deliver, chunk, timeout=API_TIMEOUT)
        except nats_errors.NoRespondersError:
            if time.monotonic() >= deadline:
                raise
            await asyncio.sleep(0.05)


async def _restore(client: Client, snap: StreamSnapshot, progress: Progress) -> dict[str, Any]:
    what = f"restore of stream {snap.name}"
    body = {"config": snap.config, "state": snap.state}
    answer = await _request(client, f"$JS.API.STREAM.RESTORE.{snap.name}", body, what)
    deliver = answer.get("deliver_subject")
    if not isinstance(deliver, str) or not deliver:
        raise SnapshotFailed(f"{what}: the bus named no subject to send the snapshot to")
    sent, said = 0, time.monotonic()
    for chunk in _chunks(snap.data):
        try:
            reply = await _send_chunk(client, deliver, chunk)
        except (TimeoutError, OSError, nats_errors.Error) as exc:
            raise SnapshotFailed(f"{what}: chunk at byte {sent} not taken: {describe(exc)}") from None
        if reply.data:  # an acknowledgement is empty; anything else is the server's refusal
            raise SnapshotFailed(f"{what}: {reply.data.decode(errors='replace')}")
        sent += len(chunk)
        if time.monotonic() - said > 2.0:
            progress(f"Restoring stream {snap.name}: {sent / 1e6:.1f} of {len(snap.data) / 1e6:.1f} MB")
            said = time.monotonic()
    try:  # the end: the server now builds the stream, which takes a moment for a large one
        final = await client.request(deliver, b"", timeout=max(API_TIMEOUT, len(snap.data) / 5e6))
    except (TimeoutError, OSError, nats_errors.Error) as exc:
        raise SnapshotFailed(f"{what}: no answer after the last chunk: {describe(exc)}") from None
    return _api_answer(final, what)


async def _delete_if_empty(client: Client, name: str) -> None:
    """A fresh bus's `up` provisions the audit stream empty before a restore can: an empty stream of
    that name is removed so the restore can create it; one holding messages is never touched."""
    try:
        info = await _request(client, f"$JS.API.STREAM.INFO.{name}", {}, f"stream {name}")
    except SnapshotFailed as exc:
        if "not found" in str(exc).lower():
            return
        raise
    messages = int((info.get("state") or {}).get("messages", 0))
    if messages:
        raise SnapshotFailed(
            f"stream {name} already holds {messages} messages on this bus; a restore never replaces them"
        )
    await _request(client, f"$JS.API.STREAM.DELETE.{name}", {}, f"removing the empty stream {name}")


def restore_all(
    nats_url: str, snaps: Iterable[StreamSnapshot], *, progress: Progress, timeout: float = 10.0
) -> list[StreamState]:
    """Restore each stream from its snapshot; what the bus then says of each."""

    async def run() -> list[StreamState]:
        async with _connected(nats_url, REQUEST_CONNECTION_NAME, timeout, BusUnavailable) as client:
            done = []
            for snap in snaps:
                await _delete_if_empty(client, snap.name)
                progress(f"Restoring stream {snap.name} ({snap.messages} messages)")
                info = await _restore(client, snap, progress)
                done.append(_state(snap.name, info))
            return done

    return asyncio.run(run())


def _state(name: str, info: dict[str, Any]) -> StreamState:
    state = info.get("state") or {}
    return StreamState(
        name,
        int(state.get("first_seq", 0)),
        int(state.get("last_seq", 0)),
        int(state.get("messages", 0)),
        int((info.get("config") or {}).get("num_replicas") or 1),
    )


def states(nats_url: str, *, timeout: float = 10.0) -> dict[str, StreamState]:
    """Every stream on the bus and its state now."""

    async def run() -> dict[str, StreamState]:
        async with _connected(nats_url, REQUEST_CONNECTION_NAME, timeout, BusUnavailable) as client:
            found = {}
            for name in await _stream_names(client):
                found[name] = _state(name, await _request(client, f"$JS.API.STREAM.INFO.{name}", {}, name))
            return found

    return asyncio.run(run())
