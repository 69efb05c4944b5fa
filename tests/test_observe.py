"""The one rule's first look, without an engine: what check_waiting proves without an exec."""

from __future__ import annotations

from pathlib import Path

import yaml

from nachos_deploy.docker.engine import ServiceState
from nachos_deploy.io.stack import prepare
from nachos_deploy.lifecycle.observe import BusView, Observation, check_waiting, judge


def test_a_sidecar_the_hub_lists_as_a_leaf_is_proven_without_running_its_check(tmp_path: Path) -> None:
    """Its own check asks its /leafz for the hub; the hub's /leafz listing it is the same fact. The
    containers do not exist: a check run by `docker exec` would fail, so only the hub's view passes."""
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"components": {"webchat": {"enabled": True}}}))
    plan = prepare(tmp_path / "d.yaml", cwd=tmp_path, environ={}).plan
    sidecars = [s for s in plan.services if s.leaf_name in ("bus-webchat", "bus-gateway")]
    assert {s.name for s in sidecars} == {"bus-webchat", "bus-gateway"}
    states = {
        s.name: ServiceState(s.name, f"no-such-container-{s.name}", "running", "starting", 0, 0, "img")
        for s in sidecars
    }
    bus = BusView({}, None, frozenset({"bus-webchat"}), {})
    seen = Observation(states, bus, [judge(s, states[s.name], bus, None) for s in sidecars])
    after = {r.name: r for r in check_waiting(None, sidecars, seen).reports}
    assert after["bus-webchat"].health == "healthy" and after["bus-webchat"].ok
    assert after["bus-gateway"].health == "starting" and not after["bus-gateway"].ok  # not a leaf yet


def test_a_check_passed_earlier_by_the_same_container_is_not_run_again(tmp_path: Path) -> None:
    """During one wait: the container that passed its check keeps it while it runs (a restart is
    a failure of its own); a new container is checked again. No container exists here, so a check
    that is run fails."""
    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"components": {"llm-proxy": {"enabled": False}}}))
    plan = prepare(tmp_path / "d.yaml", cwd=tmp_path, environ={}).plan
    gateway = next(s for s in plan.services if s.name == "gateway")
    assert gateway.healthcheck is not None and gateway.healthcheck.test
    state = ServiceState(
        "gateway", "no-such-container", "running", "starting", 0, 0, "img", container_id="c1"
    )
    bus = BusView({"gateway": 1}, None, frozenset(), {})
    seen = Observation({"gateway": state}, bus, [judge(gateway, state, bus, None)])
    kept = check_waiting(None, [gateway], seen, passed_before={"gateway": "c1"})
    assert kept.report("gateway").health == "healthy" and kept.early == frozenset({"gateway"})
    again = check_waiting(None, [gateway], seen, passed_before={"gateway": "c0"})  # another container
    assert again.report("gateway").health == "starting"


class _CountingChecks:
    """Just the one Target method check_waiting uses: records each `docker exec` it would run."""

    def __init__(self) -> None:
        self.ran: list[str] = []

    def run_check(self, container: str, test: object, timeout: float) -> bool:
        self.ran.append(container)
        return True


def test_a_sidecar_not_yet_on_the_hubs_leafz_is_asked_again_at_the_next_look_not_by_an_exec(
    tmp_path: Path,
) -> None:
    """Measured on a cold demo `up`: the exec of a sidecar's check took up to 1.6 s while the
    containers started, and the wait's next look waited for it; the hub's /leafz, read from the host
    every look, says the same thing. Only when the hub could not be read is the check run."""
    from typing import cast

    from nachos_deploy.targets import Target

    (tmp_path / "d.yaml").write_text(yaml.safe_dump({"components": {"webchat": {"enabled": True}}}))
    plan = prepare(tmp_path / "d.yaml", cwd=tmp_path, environ={}).plan
    sidecar = next(s for s in plan.services if s.leaf_name == "bus-webchat")
    state = ServiceState(sidecar.name, "the-sidecar", "running", "starting", 0, 0, "img")
    counting = _CountingChecks()
    target = cast(Target, counting)
    hub_read = BusView({}, None, frozenset(), {})
    seen = Observation({sidecar.name: state}, hub_read, [judge(sidecar, state, hub_read, None)])
    assert not check_waiting(target, [sidecar], seen).report(sidecar.name).ok
    assert counting.ran == []
    hub_unread = BusView({}, None, None, {})
    seen = Observation({sidecar.name: state}, hub_unread, [judge(sidecar, state, hub_unread, None)])
    assert check_waiting(target, [sidecar], seen).report(sidecar.name).health == "healthy"
    assert counting.ran == ["the-sidecar"]
