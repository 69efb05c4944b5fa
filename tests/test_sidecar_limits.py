"""The sidecars' limits and every service's bounded log, as planned and rendered (no engine): the
figures tests/test_flood.py repeats the attacks against, and the errors for limits that contradict
each other."""

from __future__ import annotations

from pathlib import PurePath
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from nachos_deploy.core import sidecar_limits
from nachos_deploy.core.config import DeployConfig
from nachos_deploy.core.errors import ConfigError
from nachos_deploy.core.plan import make_plan
from nachos_deploy.core.render import render

MB = 1024 * 1024
COMPONENTS: dict[str, Any] = {
    "webchat": {"enabled": True},
    "filesystem": {"enabled": True},
    "archiver": {"image": "x"},
}


def plan_of(document: dict[str, Any]) -> Any:
    return make_plan(
        DeployConfig.model_validate(document), base_dir=PurePath("/d"), output_dir=PurePath("/d/o")
    )


def sidecar_conf(files: dict[str, str], name: str) -> dict[str, str]:
    lines = [
        line.split(":", 1) for line in files[f"sidecar-{name}.conf"].splitlines() if line.startswith("max_")
    ]
    return {key: value.strip() for key, value in lines}


def test_each_role_gets_limits_that_fit_its_sidecars_memory() -> None:
    plan = plan_of({"components": COMPONENTS})
    files = render(plan)
    compose = yaml.safe_load(files["docker-compose.yml"])["services"]
    expected = {  # max_payload, max_pending, connections, subscriptions, memory, (CFS period, quota) µs
        "gateway": ("10MB", "20MB", "8", "256", 80 * MB, None),
        "llm-proxy": ("10MB", "20MB", "8", "64", 80 * MB, (200_000, 50_000)),  # cpus 0.25
        "webchat": ("1MB", "4MB", "8", "64", 32 * MB, (1_000_000, 50_000)),  # cpus 0.05
        "filesystem": ("1MB", "4MB", "8", "64", 32 * MB, (1_000_000, 50_000)),  # cpus 0.05
        "archiver": ("10MB", "20MB", "8", "256", 80 * MB, (200_000, 50_000)),
    }
    assert {s.component for s in plan.sidecars} == set(expected)
    for name, (payload, pending, connections, subscriptions, memory, cpus) in expected.items():
        assert sidecar_conf(files, name) == {
            "max_payload": payload,
            "max_pending": pending,
            "max_connections": connections,
            "max_subscriptions": subscriptions,
        }, name
        service = compose[f"bus-{name}"]
        assert service["mem_limit"] == memory, name
        cfs = (service["cpu_period"], service["cpu_quota"]) if "cpu_period" in service else None
        assert cfs == cpus and "cpus" not in service, name  # Docker refuses cpus beside a period
        # the memory is a few times max_pending, and Go's collector works harder before the kernel kills
        assert service["environment"]["GOMEMLIMIT"] == f"{memory * 3 // 4 // MB}MiB"


def test_the_deploy_file_sets_a_sidecars_limits_and_a_smaller_bus_caps_them() -> None:
    components = {
        **COMPONENTS,
        "webchat": {
            "enabled": True,
            "sidecar": {"max_payload": "256KB", "max_connections": 2, "max_subscriptions": 5, "cpus": 0.1},
        },
    }
    plan = plan_of({"bus": {"max_payload": "512KB"}, "components": components})
    files = render(plan)
    assert sidecar_conf(files, "webchat") == {
        "max_payload": "256KB",
        "max_pending": "4MB",
        "max_connections": "2",
        "max_subscriptions": "5",
    }
    assert sidecar_conf(files, "gateway")["max_payload"] == "512KB"  # the bus's, when smaller


@pytest.mark.parametrize(
    ("cpus", "period"),
    [
        (0.05, 1_000_000),  # 50 ms a second: a check (15-30 ms of CPU) fits in one period with room
        (0.1, 500_000),
        (0.07, 715_000),  # whole milliseconds, rounded up: the quota never falls below a check
        (0.25, 200_000),
        (0.03, 1_000_000),  # the kernel's longest period, although a check no longer fits with room
        (0.5, None),  # Docker's 100 ms already holds a check
        (0.3, 167_000),
        (2.0, None),
        (None, None),
    ],
)
def test_a_capped_sidecars_period_holds_one_health_check(cpus: float | None, period: int | None) -> None:
    assert sidecar_limits.cpu_period_for(cpus) == period
    if period is not None and cpus is not None and period < sidecar_limits.MAX_CPU_PERIOD_US:
        assert cpus * period >= sidecar_limits.HEALTH_CHECK_CPU_US


def test_swarm_keeps_cpus_which_is_all_a_service_can_set() -> None:
    """`docker service create` has no CFS period (only --limit-cpu, Docker's 100 ms): Swarm renders
    `cpus` as before, and the stack file has no key Swarm would ignore."""
    files = render(plan_of({"target": "swarm", "components": COMPONENTS}))
    services = yaml.safe_load(files["docker-stack.yml"])["services"]
    assert services["bus-webchat"]["deploy"]["resources"]["limits"]["cpus"] == "0.05"
    assert "cpu_period" not in services["bus-webchat"] and "cpu_quota" not in services["bus-webchat"]


@pytest.mark.parametrize(
    ("sidecar", "bus", "words"),
    [
        ({"max_payload": "2MB"}, {"max_payload": "1MB"}, "above bus.max_payload"),
        ({"max_payload": "1MB", "max_pending": "512KB"}, {}, "below its max_payload"),
        ({"max_pending": "8MB", "memory": "10MB"}, {}, "less than twice its max_pending"),
    ],
)
def test_limits_that_contradict_each_other_are_refused_with_the_key(
    sidecar: dict[str, Any], bus: dict[str, Any], words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        plan_of({"bus": bus, "components": {"webchat": {"enabled": True, "sidecar": sidecar}}})
    assert words in caught.value.message and "components.webchat.sidecar." in caught.value.message


@pytest.mark.parametrize("sidecar", [{"max_connections": 0}, {"max_subscriptions": True}, {"memory": "1MB"}])
def test_out_of_range_sidecar_limits_fail_validation(sidecar: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        DeployConfig.model_validate({"components": {"webchat": {"sidecar": sidecar}}})


def logging_of(service: dict[str, Any]) -> Any:
    return service.get("logging")


def test_every_service_gets_a_bounded_log_on_both_targets() -> None:
    files = render(plan_of({"components": {**COMPONENTS, "gateway": {}}}))
    services = yaml.safe_load(files["docker-compose.yml"])["services"]
    assert "volume-init" in services
    for name, service in services.items():
        assert logging_of(service) == {"driver": "local", "options": {"max-size": "10m", "max-file": "3"}}, (
            name
        )
    swarm = render(
        plan_of({"target": "swarm", "logging": {"driver": "json-file", "max_size": "5MB", "max_file": 2}})
    )
    stacks = [yaml.safe_load(text) for name, text in swarm.items() if name.startswith("docker-stack")]
    for stack in stacks:
        for name, service in stack["services"].items():
            assert logging_of(service) == {
                "driver": "json-file",
                "options": {"max-size": "5m", "max-file": "2"},
            }, name


@pytest.mark.parametrize(
    ("logging", "words"),
    [
        ({"driver": "syslog"}, "is not a log driver nachos-deploy bounds"),
        ({"driver": "none"}, "use local"),
        ({"max_size": "10KB"}, "greater than or equal"),
        ({"max_file": 0}, "greater than or equal"),
    ],
)
def test_an_unbounded_or_unknown_log_setting_is_refused(logging: dict[str, Any], words: str) -> None:
    with pytest.raises(ValidationError) as caught:
        DeployConfig.model_validate({"logging": logging})
    assert words in str(caught.value)


def test_a_sidecar_cpu_below_one_health_check_a_second_is_warned_by_name() -> None:
    """At 0.02 CPU a flooded sidecar's own check no longer fit and it turned unhealthy, and at 0.03
    an idle one was throttled in a quarter of its periods on a busy host (measured); the defaults
    (0.05 and up) are never warned."""
    starved = plan_of({"components": {**COMPONENTS, "webchat": {"enabled": True, "sidecar": {"cpus": 0.03}}}})
    assert [w for w in starved.warnings if "sidecar.cpus" in w] == [
        "components.webchat.sidecar.cpus is 0.03: 30 ms of CPU a second, less than its own health checks "
        "need with room (50 ms for 1 a second; each is an exec costing 15-30 ms), so the sidecar is "
        "throttled even idle, holding its messages up to a second, and may turn unhealthy whenever its "
        "component is busy. Set components.webchat.sidecar.cpus to at least 0.05."
    ]
    assert not [w for w in plan_of({"components": COMPONENTS}).warnings if "sidecar.cpus" in w]


def test_a_shorter_check_interval_gives_the_capped_sidecars_room_for_each_check() -> None:
    """Every ``bus.healthcheck_interval`` each sidecar runs its check: at 500 ms that is two a
    second, which left the channel's sidecar throttled in every period, idle (the engine tests'
    setting). The defaults grow by one check's room per further check; a value the file sets is
    kept, and warned when the checks do not fit."""
    fast = {"bus": {"healthcheck_interval": "500ms"}}
    files = render(plan_of({**fast, "components": COMPONENTS}))
    compose = yaml.safe_load(files["docker-compose.yml"])["services"]
    assert (compose["bus-webchat"]["cpu_period"], compose["bus-webchat"]["cpu_quota"]) == (500_000, 50_000)
    assert "cpu_period" not in compose["bus-gateway"]  # no cap: nothing to grow
    assert (compose["bus-llm-proxy"]["cpu_period"], compose["bus-llm-proxy"]["cpu_quota"]) == (
        167_000,
        50_100,
    )
    assert not [w for w in plan_of({**fast, "components": COMPONENTS}).warnings if "sidecar.cpus" in w]
    kept = {**COMPONENTS, "webchat": {"enabled": True, "sidecar": {"cpus": 0.05}}}
    warned = [w for w in plan_of({**fast, "components": kept}).warnings if "sidecar.cpus" in w]
    assert len(warned) == 1 and "(100 ms for 2 a second;" in warned[0] and "at least 0.1." in warned[0]
    slow = {"bus": {"healthcheck_interval": "2s"}, "components": COMPONENTS}
    assert (
        yaml.safe_load(render(plan_of(slow))["docker-compose.yml"])["services"]["bus-webchat"]["cpu_quota"]
        == 50_000
    )
