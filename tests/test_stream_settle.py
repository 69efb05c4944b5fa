"""A clustered bus's audit stream is current on every node before anything else starts (lifecycle/up.py,
``settle_streams``). A node's /healthz answers 503 "JetStream stream '$G > AUDIT' is not current" for
a moment after the stream is created, and its engine healthcheck failing three times while the
components started once made a CI run's cold `up` of a 3-node bus take the bus for lost (exit 5,
2026-12-06). Here the nodes' views are scripted; the engine tests of a 3-node bus run the real thing."""

from __future__ import annotations

from pathlib import Path

import pytest

from nachos_deploy.bus import monitor, natsclient
from nachos_deploy.core.errors import BusFailure, ExitCode
from nachos_deploy.core.results import Endpoints
from nachos_deploy.io.stack import Stack, prepare
from nachos_deploy.lifecycle import up

NODES = (
    ("bus", "nats://a", "nats://a"),
    ("bus-2", "nats://b", "nats://b"),
    ("bus-3", "nats://c", "nats://c"),
)
NOT_CURRENT = ["node bus is not healthy (answered 503: JetStream stream '$G > AUDIT' is not current)"]


def clustered(tmp_path: Path) -> Stack:
    return prepare(None, cwd=tmp_path, environ={}, document={"bus": {"nodes": 3}}, output=tmp_path / "out")


def scripted(monkeypatch: pytest.MonkeyPatch, views: list[list[str]]) -> list[int]:
    """check_cluster answers ``views`` in turn (then the last one); returns the calls' count."""
    calls = [0]

    def check_cluster(nodes: object) -> list[str]:
        calls[0] += 1
        return views[min(calls[0], len(views)) - 1]

    monkeypatch.setattr(monitor, "check_cluster", check_cluster)
    monkeypatch.setattr(natsclient, "cross_round_trip", lambda *args, **kwargs: None)
    return calls


def test_a_replica_not_current_yet_is_waited_for(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = scripted(monkeypatch, [NOT_CURRENT, NOT_CURRENT, NOT_CURRENT, []])
    said: list[str] = []
    endpoints = Endpoints("nats://bus", "nats://bus", NODES)
    up.settle_streams(lambda name, lines: "", clustered(tmp_path), endpoints, 10**9, said.append)
    assert calls[0] == 4  # the first look, then the gate's looks until every node is healthy
    assert said == ["Waiting for the audit stream: every node's replica current"]


def test_a_cluster_already_current_is_one_look(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls = scripted(monkeypatch, [[]])
    said: list[str] = []
    endpoints = Endpoints("nats://bus", "nats://bus", NODES)
    up.settle_streams(lambda name, lines: "", clustered(tmp_path), endpoints, 10**9, said.append)
    assert calls[0] == 1 and said == []


def test_a_replica_that_stays_behind_is_a_bus_failure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    scripted(monkeypatch, [NOT_CURRENT])
    endpoints = Endpoints("nats://bus", "nats://bus", NODES)
    with pytest.raises(BusFailure) as failure:
        up.settle_streams(lambda name, lines: "(log)", clustered(tmp_path), endpoints, 0.0, lambda _: None)
    assert failure.value.exit_code == ExitCode.BUS
    assert failure.value.message.startswith("The audit stream was not current on every node: node bus")
    assert "No component was started" in failure.value.message
