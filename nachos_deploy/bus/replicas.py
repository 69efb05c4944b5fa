"""Whether every replicated JetStream stream of a clustered bus is whole: a leader, and each other
replica current (``$JS.API.STREAM.LIST``/``INFO``: ``cluster.replicas[].current``, ``lag`` 0).

A node of a cluster that was replaced comes back with its volume and catches up from the stream's
leader; only once it has, may the next node go, or the stream would be left with one current
replica and no quorum (a publish then gets no ack). The stream leader's view of a peer lags: it
keeps calling a peer that has just gone away current for a few seconds, until it has not heard of it
for a while. So the replaced node's replica must also have been heard from since it came back
(``active``, the time since the leader last heard from it, shorter than the node's new run).

Speaks nats-py, through :func:`nachos_deploy.bus.natsclient.connected` (the connection options
and failure handling live there).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from nats import errors as nats_errors
from nats.js.api import StreamInfo

from nachos_deploy.bus import natsclient
from nachos_deploy.bus.monitor import BusUnavailable, describe

CONNECTION_NAME = "nachos-deploy-replicas"
NANOSECONDS = 1e9


@dataclass(frozen=True)
class Replica:
    """One stream's replica, as its leader sees it."""

    node: str
    current: bool
    offline: bool
    lag: int
    heard: float | None  # seconds since the leader last heard from it


@dataclass(frozen=True)
class StreamView:
    """One stream's placement: its replicas wanted, its leader and the other replicas."""

    name: str
    replicas: int
    leader: str | None
    peers: tuple[Replica, ...]
    last_seq: int


def streams(nats_url: str, *, timeout: float = 2.0) -> list[StreamView]:
    """Every stream of the account ``nats_url`` logs in to, with its cluster placement as its
    leader answers it. Raises ``BusUnavailable`` (no answer: e.g. a stream without a leader)."""

    async def run() -> list[StreamView]:
        async with natsclient.connected(nats_url, CONNECTION_NAME, timeout, BusUnavailable) as client:
            try:
                infos = await client.jetstream(timeout=timeout).streams_info()
            except (OSError, TimeoutError, nats_errors.Error) as exc:
                raise BusUnavailable(f"JetStream did not list the streams: {describe(exc)}") from None
            return [_view(info) for info in infos]

    return asyncio.run(run())


def _view(info: StreamInfo) -> StreamView:
    cluster = info.cluster
    peers = tuple(
        Replica(
            node=peer.name or "?",
            current=bool(peer.current),
            offline=bool(peer.offline),
            lag=peer.lag or 0,
            heard=peer.active / NANOSECONDS if peer.active is not None else None,
        )
        for peer in ((cluster.replicas if cluster else None) or [])
    )
    return StreamView(
        name=info.config.name or "?",
        replicas=info.config.num_replicas or 1,
        leader=cluster.leader if cluster else None,
        peers=peers,
        last_seq=info.state.last_seq,
    )


def problems(views: list[StreamView], *, fresh: dict[str, float] | None = None) -> list[str]:
    """What keeps the replicated streams from being whole, one line each; empty when every one has
    a leader and every other replica is current with lag 0. ``fresh``: node → seconds it has run
    since it came back; its replicas must have been heard from within them."""
    fresh = fresh or {}
    found = []
    for view in views:
        if view.replicas < 2:
            continue
        if view.leader is None:
            found.append(f"stream {view.name} has no leader")
            continue
        if len(view.peers) < view.replicas - 1:
            found.append(f"stream {view.name} lists {len(view.peers) + 1} of its {view.replicas} replicas")
        for peer in view.peers:
            if peer.offline or not peer.current or peer.lag:
                state = "offline" if peer.offline else f"not current (lag {peer.lag})"
                found.append(f"stream {view.name}'s replica on {peer.node} is {state}")
            elif peer.node in fresh and (peer.heard is None or peer.heard >= fresh[peer.node]):
                found.append(f"stream {view.name}'s leader has not heard from {peer.node} since it came back")
    return found


def step_down(nats_url: str, stream: str, *, timeout: float = 2.0) -> None:
    """Ask a stream's leader to hand its leadership to a current replica
    (``$JS.API.STREAM.LEADER.STEPDOWN.<stream>``). Raises ``BusUnavailable``."""

    async def run() -> None:
        async with natsclient.connected(nats_url, CONNECTION_NAME, timeout, BusUnavailable) as client:
            try:
                await client.request(f"$JS.API.STREAM.LEADER.STEPDOWN.{stream}", b"", timeout=timeout)
            except (OSError, TimeoutError, nats_errors.Error) as exc:
                raise BusUnavailable(f"stream {stream}'s leader did not step down: {describe(exc)}") from None

    asyncio.run(run())
