"""The containers a first `up` creates while the bus's own `compose up` runs (targets/compose.py):
only once every network of the bus set exists (Compose makes a dependency's networks too, and two
Compose runs making one network race: "Pool overlaps"), and not at all when the bus failed first.
The engine is replaced by a script of which networks exist at each look; the real race is the
engine tests' (tests/test_cli_json.py met it when the wait covered only the networks shared with
the bus set: the component's dependency, the bus, brought `bus-link` into the create)."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from nachos_deploy.io.stack import prepare
from nachos_deploy.targets import compose as target_module
from nachos_deploy.targets.compose import ComposeTarget


@pytest.fixture
def target(tmp_path: Path) -> ComposeTarget:
    stack = prepare(None, cwd=tmp_path, environ={}, document={}, output=tmp_path / "out")
    made = ComposeTarget(stack)
    made._fresh = ["bus-gateway", "gateway"]
    return made


def script(monkeypatch: pytest.MonkeyPatch, exists_from: int) -> list[str]:
    """The bus set's networks exist from the ``exists_from``-th look on; returns the calls made."""
    calls: list[str] = []

    def networks_exist(names: object) -> bool:
        calls.append("look")
        return calls.count("look") >= exists_from

    monkeypatch.setattr(target_module.engine, "networks_exist", networks_exist)
    monkeypatch.setattr(target_module.engine, "create", lambda client, names: calls.append("create"))
    monkeypatch.setattr(target_module, "BUS_NETWORKS_POLL", 0.001)
    monkeypatch.setattr(ComposeTarget, "client", property(lambda self: None))
    return calls


def test_creation_waits_for_the_bus_sets_networks(
    target: ComposeTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = script(monkeypatch, exists_from=4)
    target._create_fresh(["p_nachos-internal"], threading.Event(), threading.Event())
    assert calls == ["look", "look", "look", "look", "create"]


def test_nothing_is_created_when_the_bus_failed_first(
    target: ComposeTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = script(monkeypatch, exists_from=10**6)
    bus_up, failed = threading.Event(), threading.Event()
    failed.set()
    bus_up.set()
    target._create_fresh(["p_nachos-internal"], bus_up, failed)
    assert "create" not in calls


def test_unknown_networks_wait_for_the_bus_s_own_run(
    target: ComposeTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = script(monkeypatch, exists_from=1)
    bus_up = threading.Event()
    timer = threading.Timer(0.05, bus_up.set)
    timer.start()
    target._create_fresh(None, bus_up, threading.Event())
    assert calls == ["create"] and bus_up.is_set()
