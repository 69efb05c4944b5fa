"""The one bus-first algorithm (lifecycle.up / status / down) in-process, over a fake target.

No Docker: the containers are :class:`tests.fake_target.FakeTarget`'s scripted timeline. The bus is a
real nats-server, proven by the real gate (HTTP monitoring and a NATS round trip), and a component
"on the bus" holds a real connection under its name; so these tests exercise the algorithm's order,
healing, settling, judging and failure codes, and the engine tests keep what only an engine shows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from nachos_deploy.core.errors import (
    BusFailure,
    ComponentFailure,
    ConfigError,
    EnvironmentProblem,
    ExitCode,
    WebhookFailure,
)
from nachos_deploy.core.results import WebhookReport
from nachos_deploy.docker.parse import Probe
from nachos_deploy.io.host_ports import HostPort
from nachos_deploy.io.stack import Stack, prepare
from nachos_deploy.lifecycle import up as algorithm
from nachos_deploy.lifecycle.down import down_on
from nachos_deploy.lifecycle.status import status_on
from nachos_deploy.targets.swarm import removal_waves
from tests.fake_target import FakeTarget
from tests.natsserver import NatsServer, start_nats_server

MAX_PAYLOAD = 10485760  # the plan's default, which the gate checks on /varz
Make = Callable[..., FakeTarget]


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One real bus for the whole file (each test's audit stream is created or found in place)."""
    config = f"max_payload: {MAX_PAYLOAD}\nleafnodes {{ listen: 127.0.0.1:-1 }}\n"
    with start_nats_server(tmp_path_factory.mktemp("hub"), config_text=config) as server:
        yield server


def stack_of(folder: Path, document: dict[str, Any]) -> Stack:
    return prepare(None, cwd=folder, environ={}, document=document, output=folder / "out")


@pytest.fixture
def make(hub: NatsServer, tmp_path: Path) -> Iterator[Make]:
    made: list[FakeTarget] = []

    def factory(auth: bool = False, swarm: bool = False, **components: Any) -> FakeTarget:
        document: dict[str, Any] = {"bus": {"auth": auth}}
        if components:
            document["components"] = components
        target = FakeTarget(stack_of(tmp_path, document), hub, tmp_path / "servers", swarm=swarm)
        made.append(target)
        return target

    yield factory
    for target in made:
        target.close()


def names(target: FakeTarget, call: str) -> list[str]:
    return [name for called, *rest in target.calls if called == call for name in rest]


def called(target: FakeTarget) -> list[str]:
    return [call for call, *_ in target.calls]


def test_a_late_bus_is_waited_for_then_the_components_start(make: Make) -> None:
    target = make()
    target.late = 5  # no published port for the gate's first looks
    target.online |= {"gateway", "llm-proxy"}
    result = algorithm.up_on(target, timeout=10)
    assert target.late == 0 and result.bus is not None and result.bus.healthy
    assert {r.name: r.ok for r in result.services} == {
        "bus": True,
        "bus-ports": True,
        "state": True,
        "gateway": True,
        "llm-proxy": True,
    }
    order = called(target)
    assert order.index("start_bus") < order.index("volume_init") < order.index("start_components")
    assert result.audit is not None and result.audit.name == "AUDIT"  # provisioned on the real bus
    assert names(target, "remember")[:3] == ["bus", "bus-ports", "volume-init"]


def test_a_bus_that_never_answers_is_exit_5_and_nothing_else_starts(make: Make) -> None:
    target = make()
    target.late = 10**6  # the bus never publishes a port
    began = time.monotonic()
    with pytest.raises(BusFailure) as failure:
        algorithm.up_on(target, timeout=1.0)
    assert failure.value.exit_code == ExitCode.BUS == 5
    assert "did not become healthy: the bus has no published ports yet" in failure.value.message
    assert "No component was started" in failure.value.message
    assert time.monotonic() - began < 3
    assert "start_sidecars" not in called(target) and "start_components" not in called(target)
    assert "abandon" in called(target)  # what was prepared for the components is removed


def test_a_bus_set_container_that_exits_ends_the_gate_at_once(make: Make) -> None:
    target = make()
    target.late = 10**6
    target.hook("start_bus", lambda t: t.now.update(bus=replace(t.now["bus"], status="exited", exit_code=1)))
    began = time.monotonic()
    with pytest.raises(BusFailure) as failure:
        algorithm.up_on(target, timeout=10)
    assert time.monotonic() - began < 2 and "bus exited" in failure.value.message
    assert "start_components" not in called(target)


def test_the_bus_dying_while_the_components_start_is_exit_5(make: Make) -> None:
    target = make()
    target.online |= {"gateway"}  # llm-proxy never connects: the wait goes on until the bus dies

    def die_later(t: FakeTarget) -> None:
        if "start_components" in called(t) and t.looks > 6:
            t.now["bus"] = replace(t.now["bus"], status="exited", exit_code=137)

    target.hook("look", die_later)
    with pytest.raises(BusFailure) as failure:
        algorithm.up_on(target, timeout=10)
    assert failure.value.exit_code == 5
    assert "The bus exited with code 137 while the components were starting" in failure.value.message


def test_a_component_that_restarts_after_passing_its_check_is_exit_6(make: Make) -> None:
    """Proven by its own check ahead of the engine, it must stay up EARLY_SETTLE; it restarts."""
    target = make()
    target.online |= {"gateway", "llm-proxy"}

    def first_check_pending(t: FakeTarget) -> None:
        t.now["gateway"] = replace(t.now["gateway"], health="starting")

    def restart_after_the_check(t: FakeTarget) -> None:
        if ("check_run", "fake-gateway-1") in t.calls and t.now["gateway"].restart_count == 0:
            t.now["gateway"] = replace(t.now["gateway"], restart_count=1, health="starting")
            t.exit_codes["id-gateway-1"] = [3]

    target.hook("start_components", first_check_pending)
    target.hook("look", restart_after_the_check)
    with pytest.raises(ComponentFailure) as failure:
        algorithm.up_on(target, timeout=10)
    assert failure.value.exit_code == 6
    assert "gateway did not come up: gateway restarted 1 time(s) during this run (exit code 3)" in (
        failure.value.message
    )


def test_a_component_proven_by_its_check_is_held_for_the_settling_time(make: Make) -> None:
    target = make()
    target.online |= {"gateway", "llm-proxy"}
    target.hook(
        "start_components", lambda t: t.now.update(gateway=replace(t.now["gateway"], health="starting"))
    )
    began = time.monotonic()
    result = algorithm.up_on(target, timeout=10)
    assert all(r.ok for r in result.services)
    assert time.monotonic() - began >= algorithm.EARLY_SETTLE


def settling_gateway(target: FakeTarget) -> None:
    """The gateway's engine verdict still pending when it starts: `up` proves it by its own check,
    ahead of the engine, so the last wait holds it for EARLY_SETTLE."""
    target.online |= {"gateway", "llm-proxy"}
    target.hook(
        "start_components", lambda t: t.now.update(gateway=replace(t.now["gateway"], health="starting"))
    )


def test_the_last_links_are_proven_while_the_components_settle(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ingress's root and the webhook proofs use the settling second, once, and the settling
    still ends with a look of its own after them."""
    target = make()
    settling_gateway(target)
    proofs: list[int] = []  # the looks taken when the webhook routes were proven

    def proved(*_: object) -> list[WebhookReport]:
        proofs.append(target.looks)
        return []

    monkeypatch.setattr(algorithm, "prove_webhooks", proved)
    result = algorithm.up_on(target, timeout=10)
    assert all(r.ok for r in result.services)
    assert len(proofs) == 1 and proofs[0] < target.looks  # a look came after: the settle's last


def test_a_crash_while_settling_outranks_a_failed_webhook_proof(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = make()
    settling_gateway(target)

    def refused(*_: object) -> list[WebhookReport]:
        target.now["gateway"] = replace(target.now["gateway"], restart_count=1, health="starting")
        target.exit_codes["id-gateway-1"] = [3]
        raise WebhookFailure("whatsapp's webhook failed its proof")

    monkeypatch.setattr(algorithm, "prove_webhooks", refused)
    with pytest.raises(ComponentFailure) as failure:
        algorithm.up_on(target, timeout=10)
    assert "gateway restarted 1 time(s) during this run (exit code 3)" in failure.value.message


def test_a_failed_webhook_proof_is_raised_once_the_stack_settled_and_was_recorded(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = make()
    settling_gateway(target)

    def refused(*_: object) -> list[WebhookReport]:
        raise WebhookFailure("whatsapp's webhook failed its proof")

    monkeypatch.setattr(algorithm, "prove_webhooks", refused)
    began = time.monotonic()
    with pytest.raises(WebhookFailure) as failure:
        algorithm.up_on(target, timeout=10)
    assert failure.value.exit_code == ExitCode.WEBHOOK
    assert time.monotonic() - began >= algorithm.EARLY_SETTLE
    assert "remember" in called(target)  # the next unchanged `up` proves the routes again


def test_a_sidecar_reconnecting_is_waited_for_then_ok(make: Make) -> None:
    """With auth, each component sits behind a leaf-node sidecar: its login at the hub (/leafz) comes
    a moment after its container runs (a real leaf server, started late)."""
    target = make(auth=True, **{"llm-proxy": {"enabled": False}})
    target.online |= {"gateway"}

    def log_in_late(t: FakeTarget) -> None:
        if "start_sidecars" in called(t) and t.looks == 8 and "bus-gateway" not in t.leaf_servers:
            t.start_leaf("bus-gateway")

    target.hook("look", log_in_late)
    progress: list[str] = []
    result = algorithm.up_on(target, timeout=15, progress=progress.append)
    assert any("Waiting for bus-gateway" in line for line in progress)  # not on the hub at first
    by_name = {r.name: r for r in result.services}
    assert by_name["bus-gateway"].ok and by_name["bus-gateway"].connected
    assert by_name["gateway"].ok and by_name["gateway"].connected  # seen on its sidecar's /connz
    assert called(target).index("start_sidecars") < called(target).index("start_components")


@pytest.mark.parametrize("swarm", [False, True], ids=["compose", "swarm"])
def test_the_state_store_starts_before_the_gateway_and_is_proven_first(make: Make, swarm: bool) -> None:
    """The gateway's store starts with the sidecars (here none: the bus is open) and answers its
    PING before the gateway starts, so the gateway finds it at its first try."""
    target = make(swarm=swarm, **{"llm-proxy": {"enabled": False}})
    target.online |= {"gateway"}
    target.checks["fake-state-1"] = False  # its PING not answered yet
    target.hook("start_sidecars", lambda t: t.now.update(state=replace(t.now["state"], health="starting")))

    def answer_later(t: FakeTarget) -> None:
        if "start_sidecars" in called(t) and t.looks >= 6:
            t.checks["fake-state-1"] = True
            t.now["state"] = replace(t.now["state"], health="healthy")

    target.hook("look", answer_later)
    answered: list[bool] = []
    target.hook("start_components", lambda t: answered.append(t.checks["fake-state-1"]))
    result = algorithm.up_on(target, timeout=10)
    assert names(target, "start_sidecars") == ["state"]
    assert names(target, "start_components") == ["gateway"]
    assert answered == [True]
    assert all(r.ok for r in result.services)


@pytest.mark.parametrize("swarm", [False, True], ids=["compose", "swarm"])
def test_an_outage_is_healed_on_both_targets(make: Make, swarm: bool) -> None:
    """Left by an outage: gateway runs off the bus for ever, llm-proxy waits out a restart back-off.
    Both are restarted once the bus is proven, and reported healed."""
    target = make(swarm=swarm)
    target.now["gateway"] = target._run(target.stack.plan.components[0])
    target.now["llm-proxy"] = replace(target._run(target.stack.plan.components[1]), status="restarting")
    target.hook("restart", lambda t: t.online.update({"gateway", "llm-proxy"}))
    result = algorithm.up_on(target, timeout=10)
    assert sorted(target.restarted) == ["gateway", "llm-proxy"]
    assert called(target).index("restart") < called(target).index("start_components")
    assert {r.name for r in result.services if r.healed} == {"gateway", "llm-proxy"}
    assert all(r.ok for r in result.services)


@pytest.fixture
def short_graces(monkeypatch: pytest.MonkeyPatch) -> None:
    """The restart rule's waits, shortened: the tests check who is restarted, not the real seconds."""
    monkeypatch.setattr(algorithm, "LEAF_GRACE", 0.6)
    monkeypatch.setattr(algorithm, "REJOIN_GRACE", 0.8)


def _after_an_outage(target: FakeTarget) -> None:
    """The gateway and its sidecar ran before this up, and the hub was away: the sidecar's own check
    failed three times since (runs dated after the bus is proven, so they count during this up), its
    way to the hub is cut and it tries again every 0.1 s; the gateway is on its sidecar all along."""
    plan = target.stack.plan
    failing = tuple(Probe(time.time() + 60, 1, "") for _ in range(3))
    sidecar = next(s.service for s in plan.sidecars if s.component == "gateway")
    target.now[sidecar.name] = replace(target._run(sidecar), health="unhealthy", probes=failing)
    target.now["gateway"] = target._run(plan.component("gateway"))
    target.start_leaf(sidecar.name, cut=True)
    target.online.add("gateway")
    target.sync()


@pytest.mark.parametrize("swarm", [False, True], ids=["compose", "swarm"])
def test_a_sidecar_reconnecting_after_an_outage_is_settling_not_failed(make: Make, swarm: bool) -> None:
    """Its check failed while the hub was away (before this up's rule, that verdict ended `up` with
    exit 6): it is back at the hub a moment after the hub is proven, nothing is restarted."""
    target = make(auth=True, swarm=swarm, **{"llm-proxy": {"enabled": False}})
    _after_an_outage(target)

    looks: list[int] = []  # looks since the sidecars' start: the first three find it away

    def back_a_moment_later(t: FakeTarget) -> None:
        if "start_sidecars" in called(t):
            looks.append(t.looks)
            t.roads["bus-gateway"].cut = len(looks) < 4

    target.hook("look", back_a_moment_later)
    progress: list[str] = []
    result = algorithm.up_on(target, timeout=15, progress=progress.append)
    assert "restart" not in called(target)
    assert any("bus-gateway is not logged in at the hub yet" in line for line in progress) or any(
        "Waiting for bus-gateway" in line for line in progress
    )
    by_name = {r.name: r for r in result.services}
    assert (
        by_name["bus-gateway"].ok and by_name["bus-gateway"].connected and not by_name["bus-gateway"].healed
    )
    assert by_name["gateway"].ok and by_name["gateway"].connected


@pytest.mark.parametrize("swarm", [False, True], ids=["compose", "swarm"])
def test_a_sidecar_not_back_at_the_hub_is_restarted_once(make: Make, swarm: bool, short_graces: None) -> None:
    """Its way to the hub stays cut until it is restarted (a fresh server dials anew): restarted
    LEAF_GRACE after the hub was proven, through the target, and reported as restarted by up."""
    target = make(auth=True, swarm=swarm, **{"llm-proxy": {"enabled": False}})
    _after_an_outage(target)
    target.hook("restart", lambda t: setattr(t.roads["bus-gateway"], "cut", "bus-gateway" not in t.restarted))
    began = time.monotonic()
    result = algorithm.up_on(target, timeout=15)
    assert target.restarted == ["bus-gateway"]
    assert time.monotonic() - began >= algorithm.LEAF_GRACE
    by_name = {r.name: r for r in result.services}
    assert by_name["bus-gateway"].ok and by_name["bus-gateway"].healed
    assert by_name["gateway"].ok and not by_name["gateway"].healed


def test_a_sidecar_still_away_after_its_restart_fails_by_the_usual_rule(
    make: Make, short_graces: None
) -> None:
    """The restart rule has one turn: a sidecar that does not log in after it is a failed start."""
    target = make(auth=True, **{"llm-proxy": {"enabled": False}})
    _after_an_outage(target)
    with pytest.raises(ComponentFailure) as failure:
        algorithm.up_on(target, timeout=algorithm.LEAF_GRACE + 1.5)
    assert target.restarted == ["bus-gateway"]
    assert (
        "bus-gateway did not come up within `up`'s --timeout: bus-gateway is not connected to the hub"
        in failure.value.message
    )


def test_a_component_whose_sidecar_was_stopped_is_given_time_to_rejoin(make: Make) -> None:
    """Its sidecar was stopped: the gateway runs, off the bus, trying again every 2 s. It is not
    restarted when the sidecar is back; it rejoins by itself."""
    target = make(auth=True, **{"llm-proxy": {"enabled": False}})
    plan = target.stack.plan
    target.now["bus-gateway"] = replace(target._run(plan.sidecars[0].service), status="exited")
    target.now["gateway"] = target._run(plan.component("gateway"))
    target.hook("start_sidecars", lambda t: t.start_leaf("bus-gateway"))
    target.hook("look", lambda t: t.online.add("gateway") if t.looks >= 8 else None)
    result = algorithm.up_on(target, timeout=15)
    assert target.restarted == []
    assert all(r.ok for r in result.services)


def test_a_component_back_on_its_sidecar_in_the_same_run_is_not_held_to_settle(
    make: Make, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its container ran before this up and was not restarted: back on its restarted sidecar and
    passing its check, it is ok at once (no settling: nothing of it was started now)."""
    monkeypatch.setattr(algorithm, "EARLY_SETTLE", 60.0)
    target = make(auth=True, **{"llm-proxy": {"enabled": False}})
    plan = target.stack.plan
    target.now["bus-gateway"] = replace(target._run(plan.sidecars[0].service), status="exited")
    # Off the bus its check failed: the engine says unhealthy until its next check passes.
    target.now["gateway"] = replace(target._run(plan.component("gateway")), health="unhealthy")
    target.hook("start_sidecars", lambda t: t.start_leaf("bus-gateway"))
    target.hook("look", lambda t: t.online.add("gateway") if t.looks >= 8 else None)
    began = time.monotonic()
    result = algorithm.up_on(target, timeout=30)
    assert all(r.ok for r in result.services) and target.restarted == []
    assert ("check_run", "fake-gateway-1") in target.calls  # proven by its own check
    assert time.monotonic() - began < 20  # not the 60 s of settling


def test_a_component_that_does_not_rejoin_its_sidecar_is_restarted(make: Make, short_graces: None) -> None:
    """Its sidecar was stopped long enough that the gateway gave up: restarted REJOIN_GRACE later."""
    target = make(auth=True, **{"llm-proxy": {"enabled": False}})
    plan = target.stack.plan
    target.now["bus-gateway"] = replace(target._run(plan.sidecars[0].service), status="exited")
    target.now["gateway"] = target._run(plan.component("gateway"))
    target.hook("start_sidecars", lambda t: t.start_leaf("bus-gateway"))
    target.hook("restart", lambda t: t.online.add("gateway"))
    began = time.monotonic()
    result = algorithm.up_on(target, timeout=15)
    assert target.restarted == ["gateway"]
    assert time.monotonic() - began >= algorithm.REJOIN_GRACE
    assert {r.name for r in result.services if r.healed} == {"gateway"}


def test_a_component_that_gave_up_on_its_sidecar_and_restarts_is_restarted_not_failed(make: Make) -> None:
    """llm-proxy's way: its tries ran out while its sidecar was stopped, so it exits and the restart
    policy runs it again (and again) meanwhile. Not a failed start: restarted by up, then ok."""
    target = make(auth=True, **{"gateway": {"enabled": False}})
    plan = target.stack.plan
    target.now["bus-llm-proxy"] = replace(target._run(plan.sidecars[0].service), status="exited")
    target.now["llm-proxy"] = target._run(plan.component("llm-proxy"))
    target.hook("start_sidecars", lambda t: t.start_leaf("bus-llm-proxy"))

    def exits_once_more(t: FakeTarget) -> None:
        if "start_components" in called(t) and not t.restarted and t.now["llm-proxy"].restart_count == 0:
            t.now["llm-proxy"] = replace(t.now["llm-proxy"], restart_count=1)
            t.exit_codes["id-llm-proxy-1"] = [0]

    target.hook("look", exits_once_more)
    target.hook("restart", lambda t: t.online.add("llm-proxy"))
    result = algorithm.up_on(target, timeout=15)
    assert target.restarted == ["llm-proxy"]
    assert all(r.ok for r in result.services)


def test_a_first_up_restarts_no_component_slow_to_join(make: Make, short_graces: None) -> None:
    """Nothing ran before this up: a component that takes longer than REJOIN_GRACE to connect (the
    platform's gateway starts slowly) is waited for, not restarted."""
    target = make(auth=True, **{"llm-proxy": {"enabled": False}})
    target.hook("start_sidecars", lambda t: t.start_leaf("bus-gateway"))
    began: list[float] = []

    def join_late(t: FakeTarget) -> None:
        if "start_components" in called(t):
            began.append(began[0] if began else time.monotonic())
            if time.monotonic() - began[0] > 2 * algorithm.REJOIN_GRACE:
                t.online.add("gateway")

    target.hook("look", join_late)
    result = algorithm.up_on(target, timeout=15)
    assert target.restarted == []
    assert all(r.ok for r in result.services)


def test_volume_init_failing_is_exit_6_before_any_component_starts(make: Make) -> None:
    target = make()
    target.init = target.init._replace(failure="exited with code 2")
    with pytest.raises(ComponentFailure) as failure:
        algorithm.up_on(target, timeout=10)
    assert failure.value.exit_code == 6
    assert "volume-init (which makes the components' volumes writable by their users) exited with code 2" in (
        failure.value.message
    )
    assert "start_components" not in called(target)


def test_a_host_port_another_program_holds_stops_up_before_anything_is_written(make: Make) -> None:
    target = make()
    target.taken_ports = [HostPort("bus.client_port", "127.0.0.1", 4222, "bus")]
    with pytest.raises(EnvironmentProblem) as failure:
        algorithm.up_on(target, timeout=10)
    assert failure.value.exit_code == 4
    assert "127.0.0.1:4222 (bus.client_port, for the bus). Nothing was written or started." in (
        failure.value.message
    )
    assert called(target) == ["check", "ports_taken"]
    assert not target.stack.output_dir.exists()


def test_the_preflight_refuses_what_up_would_before_anything_is_touched(make: Make) -> None:
    """`restore` runs it before it fills a volume: the checks `up` makes before writing, the same."""
    target = make(telegram={"enabled": True})  # its token, required, is not set
    with pytest.raises(ConfigError, match="telegram needs TELEGRAM_BOT_TOKEN"):
        algorithm.preflight(target, "Nothing was restored.")
    assert called(target) == []  # the secret before the engine
    target = make()
    target.taken_ports = [HostPort("ingress.https_port", "127.0.0.1", 443, "ingress")]
    with pytest.raises(
        EnvironmentProblem, match=r"\(ingress.https_port, for the ingress\). Nothing was restored"
    ):
        algorithm.preflight(target, "Nothing was restored.")
    assert called(target) == ["check", "ports_taken"]
    target.taken_ports = []
    algorithm.preflight(target, "Nothing was restored.")
    assert not target.stack.output_dir.exists()


def test_a_timeout_names_the_service_still_pending(make: Make) -> None:
    target = make()
    target.online |= {"gateway"}  # llm-proxy runs but never connects
    with pytest.raises(ComponentFailure) as failure:
        algorithm.up_on(target, timeout=1.5)
    message = failure.value.message
    assert message.startswith(
        "llm-proxy did not come up within `up`'s --timeout: llm-proxy is not connected to the bus as "
        "'llm-proxy'. If they are only slow to start (a busy machine, a large stack), `--timeout "
        "SECONDS` waits longer."
    )
    assert "gateway" not in message.split("did not come up")[0]


def test_a_failed_task_and_short_replicas_count_on_swarm(make: Make) -> None:
    target = make(swarm=True)
    target.online |= {"gateway", "llm-proxy"}
    target.hook(
        "start_components", lambda t: t.task_failures.update({"llm-proxy": "task: non-zero exit (1)"})
    )
    with pytest.raises(ComponentFailure) as failure:
        algorithm.up_on(target, timeout=10)
    assert "llm-proxy did not come up: llm-proxy has a failed task (task: non-zero exit (1))" in (
        failure.value.message
    )


def test_status_judges_by_the_same_rule(make: Make) -> None:
    target = make(swarm=True)
    target.online |= {"gateway"}
    algorithm.provision_audit(target.stack, target.endpoints(_running(target)) or _no(), lambda _: None)
    target.short = {"gateway": "runs 1 of 2 replicas"}
    result = status_on(target, only=None)
    assert "llm-proxy is not connected to the bus as 'llm-proxy'" in result.problems
    assert "gateway runs 1 of 2 replicas" in result.problems
    assert {r.name: r.ok for r in result.services}["gateway"]
    assert result.bus is not None and result.bus["jetstream"] and result.audit is not None


def test_status_names_running_services_the_configuration_does_not_describe(make: Make) -> None:
    """Issue 18: judged by another configuration than the one deployed (a bus of three nodes, a
    channel more), status must not call the part it knows healthy."""
    target = make()
    target.online |= {"gateway", "llm-proxy"}
    algorithm.provision_audit(target.stack, target.endpoints(_running(target)) or _no(), lambda _: None)
    assert status_on(target, only=None).ok
    bus = target.stack.plan.bus.service
    target.now["bus-2"] = replace(target._run(bus), service="bus-2")
    target.now["whatsapp"] = replace(target._run(bus), service="whatsapp", status="exited")  # not running
    result = status_on(target, only=None)
    assert not result.ok
    assert [p for p in result.problems if "also runs" in p] == [
        f"project {target.stack.project} also runs bus-2, which the configuration judged here does not "
        "describe: run `nachos-deploy status` with the deploy file that started them (-c FILE), or "
        f"`nachos-deploy down -p {target.stack.project}` and `up` to run only this one"
    ]


def test_down_lists_the_volumes_then_removes_the_stack(make: Make) -> None:
    target = make()
    _running(target)
    result = down_on(target, volumes=True)
    assert [c for c in target.calls] == [("volumes",), ("remove", "volumes")]
    assert result.volumes_removed == ["v-js"] and result.volumes_kept == []
    kept = down_on(make(), volumes=False)
    assert kept.volumes_kept == ["v-js"] and kept.volumes_removed == []


def test_swarm_removes_components_then_sidecars_then_the_bus(tmp_path: Path) -> None:
    plan = stack_of(tmp_path, {}).plan
    present = [s.name for s in plan.services] + ["volume-init"]
    assert removal_waves(plan, present) == [
        ["state", "gateway", "llm-proxy"],
        ["bus-gateway", "bus-llm-proxy"],
        ["bus-ports", "volume-init"],
        ["bus"],
    ]


def _running(target: FakeTarget) -> dict[str, Any]:
    for service in target.stack.plan.services:
        target.now[service.name] = target._run(service)
    target.sync()
    return dict(target.now)


def _no() -> Any:
    raise AssertionError("the fake's bus has no endpoints")
