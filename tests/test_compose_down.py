"""`down` when Engine 20.10 has not yet released a removed container's endpoints: the same `down` a
moment later removes the network (seen after stacks of 12 and 24 components), and when it never does,
the error says what it is. Docker's failure is stood in for at the runner, the one place that starts
processes: what is tested is the retry, not Docker."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from nachos_deploy.core.errors import DeployError
from nachos_deploy.docker import compose
from nachos_deploy.docker.runner import DockerFailure

STALE = (
    "failed to remove network p_nachos-internal: Error response from daemon: error while removing "
    "network: network p_nachos-internal id 1 has active endpoints"
)


def downs(monkeypatch: pytest.MonkeyPatch, failures: int) -> list[Sequence[str]]:
    calls: list[Sequence[str]] = []

    def run(argv: Sequence[str], **_: object) -> str:
        calls.append(argv)
        if len(calls) <= failures:
            raise DockerFailure(argv, 1, "", STALE)
        return ""

    monkeypatch.setattr(compose.runner, "run", run)
    monkeypatch.setattr(compose.time, "sleep", lambda seconds: None)
    return calls


def test_a_network_with_endpoints_not_yet_released_is_removed_by_the_next_try(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = downs(monkeypatch, failures=2)
    compose.down(compose.Compose("p", [Path("/x/docker-compose.yml")], Path("/x"), []), volumes=True)
    assert len(calls) == 3 and all("--volumes" in call for call in calls)


def test_an_endpoint_never_released_is_named_as_the_engines_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = downs(monkeypatch, failures=10)
    with pytest.raises(DeployError) as raised:
        compose.down(compose.Compose("p", [Path("/x/docker-compose.yml")], Path("/x"), []), volumes=False)
    assert len(calls) == len(compose.DOWN_RETRIES) + 1
    assert "bug of Docker Engine 20.10" in str(raised.value) and "restarting the engine" in str(raised.value)
