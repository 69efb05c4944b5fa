"""The stack's healthchecks within a budget of execs a second (core/check_density.py), as planned and
rendered (no engine): the demo keeps today's intervals, a stack of 100 components gets the budget on
both targets, and an interval the deploy file sets is kept."""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Any

import pytest
import yaml

from nachos_deploy.core import check_density
from nachos_deploy.core.catalog import Role
from nachos_deploy.core.config import DeployConfig
from nachos_deploy.core.errors import ConfigError
from nachos_deploy.core.names import BUS, PORTS
from nachos_deploy.core.plan import make_plan
from nachos_deploy.core.plan_types import Plan
from nachos_deploy.core.render import render
from nachos_deploy.core.units import duration_seconds
from nachos_deploy.io.loader import load

ROOT = Path(__file__).resolve().parent.parent
PROBE = "nachos-deploy/probe:latest"


def tools(count: int, **more: Any) -> dict[str, Any]:
    """``count`` probe tools, each with its sidecar, as benchmarks/networks.py deploys them."""
    components: dict[str, Any] = {"gateway": {"enabled": False}, "llm-proxy": {"enabled": False}}
    components.update({f"t{index}": {"role": "tool", "image": PROBE} for index in range(count)})
    return {"project": "density", "components": components, **more}


def plan_of(document: dict[str, Any], sets: tuple[str, ...] = ()) -> Plan:
    """Through the loader, as `up` reads a deploy file: what counts as set is what it hands on."""
    loaded = load(document=document, cwd=Path("/d"), sets=sets)
    return make_plan(loaded.config, loaded.platform, base_dir=PurePath("/d"), output_dir=PurePath("/d/o"))


def timings(plan: Plan) -> dict[str, tuple[str, str]]:
    return {
        s.name: (s.healthcheck.interval, s.healthcheck.timeout)
        for s in plan.services
        if s.healthcheck is not None and s.healthcheck.interval
    }


def rate(plan: Plan) -> float:
    return sum(1 / duration_seconds(interval) for interval, _ in timings(plan).values())


def test_the_demo_keeps_todays_intervals_exactly() -> None:
    loaded = load(ROOT / "compose" / "demo" / "nachos-deploy.yaml")
    plan = make_plan(loaded.config, loaded.platform, base_dir=loaded.base_dir)
    every_second = ("1s", "2s")
    node_check = ("2s", "3s")
    assert timings(plan) == {
        BUS: every_second,
        PORTS: every_second,
        **{f"bus-{name}": every_second for name in ("gateway", "llm-proxy", "webchat", "filesystem")},
        "gateway": node_check,
        "llm-proxy": node_check,
        "webchat": node_check,
        "filesystem": node_check,
        "state": ("1s", "2s"),
        "ingress": ("2s", "2s"),
    }
    assert rate(plan) == 9.5 <= check_density.EXECS_PER_SECOND


@pytest.mark.parametrize("target", ["compose", "swarm"])
def test_a_stack_of_100_components_stays_within_the_budget(target: str) -> None:
    plan = plan_of(tools(100, target=target))
    found = timings(plan)
    least = 10 if target == "compose" else 8  # Swarm's tools run no check: less to stretch
    # near the budget (not stretched further than it needs), never above it
    assert 0.9 * check_density.EXECS_PER_SECOND <= rate(plan) <= check_density.EXECS_PER_SECOND
    for service in plan.services:
        check = service.healthcheck
        if check is None or not check.interval:
            continue
        usual = 2.0 if service.role is Role.TOOL else 1.0  # the component's node check; the bus set's
        assert duration_seconds(check.interval) >= least * usual, service.name
        # the timeout grew with it (the load that makes a stack large slows each exec), up to the interval
        assert 2.0 < duration_seconds(check.timeout) <= duration_seconds(check.interval), service.name
    if target == "compose":
        assert found[BUS] == found["bus-t0"] == found[PORTS] == ("12.7s", "12.7s")
        assert found["t0"] == ("25.4s", "25.4s")
        rendered = yaml.safe_load(render(plan)["docker-compose.yml"])["services"]
        assert rendered["bus-t99"]["healthcheck"]["interval"] == "12.7s"
        assert rendered["t99"]["healthcheck"]["timeout"] == "25.4s"
    else:  # Swarm keeps no check on the tools and the forwarder: the bus and the sidecars have more
        assert "t0" not in found and PORTS not in found
        stack = render(plan)
        sidecars = yaml.safe_load(stack["docker-stack.sidecars.yml"])["services"]
        assert sidecars["bus-t99"]["healthcheck"]["interval"] == "8.5s"


def test_twenty_components_are_stretched_less() -> None:
    plan = plan_of(tools(20))
    assert timings(plan)["bus-t0"] == ("2.7s", "2.7s")
    assert timings(plan)["t0"] == ("5.4s", "5.4s")
    assert rate(plan) <= check_density.EXECS_PER_SECOND


def test_an_interval_the_deploy_file_sets_is_kept_as_written() -> None:
    document = tools(100)
    document["components"]["t0"]["healthcheck"] = {"test": ["CMD", "true"], "interval": "4s"}
    document["components"]["t1"]["healthcheck"] = {"test": ["CMD", "true"]}  # interval left to default
    plan = plan_of(document, sets=("bus.healthcheck_interval=1s",))  # the default's value, but set
    found = timings(plan)
    assert found[BUS] == found[PORTS] == found["bus-t5"] == ("1s", "2s")
    assert found["t0"] == ("4s", "3s")
    # the deploy file's check with its default 5 s is stretched as nachos-deploy's 2 s are
    assert found["t5"] == ("25.3s", "25.3s")
    assert duration_seconds(found["t1"][0]) / 5 == pytest.approx(25.3 / 2, rel=0.01)
    # The same value from the deploy file itself counts as set too.
    in_file = timings(plan_of(tools(100, bus={"healthcheck_interval": "1s"})))
    assert in_file["bus-t5"] == ("1s", "2s")


def test_a_configuration_dumped_and_read_back_keeps_what_was_set() -> None:
    """The record of a deployment (io/deployed.py) dumps every key: the defaults must read back as
    nachos-deploy's to stretch, and a value set as set."""
    for sets, sidecar in (((), ("12.7s", "12.7s")), (("bus.healthcheck_interval=1s",), ("1s", "2s"))):
        loaded = load(document=tools(100), cwd=Path("/d"), sets=sets)
        again = DeployConfig.model_validate(loaded.config.model_dump(mode="json"))
        plan = make_plan(again, loaded.platform, base_dir=PurePath("/d"), output_dir=PurePath("/d/o"))
        assert timings(plan)["bus-t0"] == sidecar, sets


def test_a_lower_budget_for_stacks_sharing_an_engine_stretches_the_demo_too() -> None:
    """healthchecks.budget: five stacks of 20 at 12 each failed side by side, at 2.4 each they came
    up (docs/networks.md#figures)."""
    loaded = load(ROOT / "compose" / "demo" / "nachos-deploy.yaml", sets=["healthchecks.budget=2.4"])
    plan = make_plan(loaded.config, loaded.platform, base_dir=loaded.base_dir)
    found = timings(plan)
    assert found[BUS] == found["bus-webchat"] == found["state"] == ("4s", "4s")
    assert found["gateway"] == found["ingress"] == ("8s", "8s")
    assert rate(plan) <= 2.4


@pytest.mark.parametrize("budget", ["0", "-1", "true", "nan", "1001"])
def test_a_budget_that_is_not_a_positive_number_is_refused_by_its_key(budget: str) -> None:
    with pytest.raises(ConfigError, match=r"healthchecks\.budget"):
        load(document=tools(1), cwd=Path("/d"), sets=(f"healthchecks.budget={budget}",))


def test_stretched_rounds_up_to_tenths_and_keeps_the_timeout_within_the_interval() -> None:
    assert check_density.stretched("500ms", "2s", 1.0) == ("500ms", "2s")  # kept as spelled
    assert check_density.stretched("1s", "2s", 1.625) == ("1.7s", "2s")  # a timeout never shrinks
    assert check_density.stretched("2s", "3s", 1.625) == ("3.3s", "3.3s")
    assert check_density.stretched("1s", "2s", 13.0) == ("13s", "13s")
    assert check_density.stretch([1.0] * 12) == 1.0
    assert check_density.stretch([1.0] * 24) == 2.0


def test_every_example_stack_is_planned_within_the_budget_or_as_written() -> None:
    for example in sorted((ROOT / "compose").glob("*/nachos-deploy.yaml")):
        loaded = load(example)
        plan = make_plan(loaded.config, loaded.platform, base_dir=loaded.base_dir)
        if "healthcheck_interval" not in loaded.config.bus.model_fields_set:
            assert rate(plan) <= check_density.EXECS_PER_SECOND, example
