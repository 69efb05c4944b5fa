from __future__ import annotations

from pathlib import Path, PurePath

import pytest

from nachos_deploy.core.catalog import Role
from nachos_deploy.core.config import DeployConfig
from nachos_deploy.core.errors import ConfigError
from nachos_deploy.core.plan import make_plan
from nachos_deploy.core.plan_types import HEALTH_DISABLED
from nachos_deploy.core.platform_config import Platform


def plan_of(data: dict[str, object], platform: Platform | None = None):  # type: ignore[no-untyped-def]
    return make_plan(
        DeployConfig.model_validate(data),
        platform,
        base_dir=PurePath("/srv/app"),
        output_dir=PurePath("/srv/app/.nachos"),
    )


def env_of(service) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {var.name: var.value for var in service.environment}


def test_default_stack_is_bus_gateway_llm_proxy() -> None:
    plan = plan_of({})
    assert [s.name for s in plan.services] == [
        "bus",
        "bus-ports",
        "bus-gateway",
        "bus-llm-proxy",
        "state",  # the gateway's Redis (docs/state-store.md), before it
        "gateway",
        "llm-proxy",
    ]
    assert plan.generate_platform_config
    assert plan.warnings == ()


def test_every_component_finds_the_bus_both_ways() -> None:
    plan = plan_of({"components": {"slack": {"enabled": True}, "extra-thing": {"image": "x:1"}}})
    for service in plan.components:
        if service.role is Role.STATE:  # not on the bus (docs/state-store.md)
            continue
        env = env_of(service)
        # behind its own sidecar, on a network only the two of them share
        assert env["NATS_URL"] == env["NATS_SERVERS"] == f"nats://bus-{service.name}:4222"
        assert env["NACHOS_COMPONENT"] == service.name
        assert "nachos-internal" not in service.networks and f"{service.name}-link" in service.networks
        sidecar = plan.component(f"bus-{service.name}")
        assert sidecar.networks == ("nachos-internal", f"{service.name}-link")
        assert service.depends_on[0] == (sidecar.name, "service_healthy")
    open_bus = plan_of({"bus": {"auth": False}, "components": {"slack": {"enabled": True}}})
    assert not open_bus.sidecars
    for service in open_bus.components:
        if service.role is Role.STATE:
            continue
        env = env_of(service)
        assert env["NATS_URL"] == env["NATS_SERVERS"] == "nats://bus:4222"
        assert "nachos-internal" in service.networks
    assert any("bus.auth is false" in w for w in open_bus.warnings)


def test_connection_names_follow_upstream() -> None:
    plan = plan_of({"components": {"slack": {"enabled": True}, "filesystem": {"enabled": True}}})
    names = {s.name: s.connection_name for s in plan.components if s.role is not Role.STATE}
    assert names == {
        "gateway": "gateway",
        "llm-proxy": "llm-proxy",
        "slack": "channel-slack",
        "filesystem": "tool-filesystem_read",  # upstream: tool-<TOOL_ID>, the id following the mode
    }


def test_tool_ids_follow_the_mode_and_name_the_subject() -> None:
    plan = plan_of(
        {
            "components": {
                "filesystem": {"enabled": True, "environment": {"TOOL_MODE": "patch"}},
                "code-runner": {"enabled": True, "environment": {"LANGUAGE": "javascript"}},
                "browser": {"enabled": True},
            }
        }
    )
    ids = {s.name: s.tool_id for s in plan.components if s.tool_id}
    assert ids == {
        "filesystem": "filesystem_patch",
        "code-runner": "code_runner_javascript",
        "browser": "browser",
    }
    env = {v.name: v.value for v in plan.component("filesystem").environment}
    assert env["TOOL_ID"] == "filesystem_patch"
    workspace = next(m for m in plan.component("filesystem").mounts if m.target == "/workspace")
    assert workspace.read_only is False  # only the read mode gets the workspace read-only
    assert (
        plan_of({"components": {"filesystem": {"enabled": True}}})
        .component("filesystem")
        .mounts[-1]
        .read_only
    )


def test_an_unknown_tool_mode_is_a_config_error_naming_the_key() -> None:
    with pytest.raises(ConfigError, match=r"components.filesystem.environment: TOOL_MODE='delete'"):
        plan_of({"components": {"filesystem": {"enabled": True, "environment": {"TOOL_MODE": "delete"}}}})


def test_catalog_components_own_their_healthchecks() -> None:
    plan = plan_of(
        {
            "components": {
                "filesystem": {"enabled": True},
                "x": {"image": "x"},
                "y": {"image": "y", "healthcheck": False},
            }
        }
    )
    gateway = plan.component("gateway").healthcheck
    assert gateway is not None and "http://127.0.0.1:3000/health" in " ".join(gateway.test)
    for name in ("llm-proxy", "filesystem"):  # the image's check replaced by one that asks the bus
        check = plan.component(name).healthcheck
        assert check is not None and check.asks_bus == "only" and check.test[:3] == ("CMD", "node", "-e")
    assert plan.component("x").healthcheck is None  # an extra keeps its image's own check
    assert plan.component("y").healthcheck is HEALTH_DISABLED


def test_written_volumes_are_prepared_for_their_user() -> None:
    plan = plan_of(
        {
            "components": {
                "x": {"image": "x", "user": "2000:3000", "volumes": ["x-data:/data", "ro-data:/ro:ro"]},
                "y": {"image": "y", "volumes": ["y-data:/data"]},  # the image's user: unknown
                "z": {"image": "z", "user": "app", "volumes": ["z-data:/data"]},
            }
        }
    )
    prepared = {(p.volume, p.owner) for p in plan.prepared_volumes}
    assert prepared == {
        ("gateway-data", "61000:61000"),
        ("gateway-state", "61000:61000"),
        ("state-data", "61005:61005"),
        ("x-data", "2000:3000"),
    }
    assert plan.component("gateway").waits_for_volumes and plan.component("x").waits_for_volumes
    assert not plan.component("y").waits_for_volumes
    assert any("z-data cannot be made writable" in w for w in plan.warnings)


def test_required_secrets_are_listed_per_component() -> None:
    plan = plan_of({"components": {"telegram": {"enabled": True}, "llm-proxy": {"secrets": {"K": "HOST_K"}}}})
    assert plan.required_secrets() == [("llm-proxy", "HOST_K"), ("telegram", "TELEGRAM_BOT_TOKEN")]
    assert plan.required_secrets(["telegram"]) == [("telegram", "TELEGRAM_BOT_TOKEN")]


def test_webchat_has_no_upstream_image() -> None:
    plan = plan_of({"components": {"webchat": {"enabled": True}}})
    assert any("publishes no webchat image" in w for w in plan.warnings)
    plan = plan_of({"components": {"webchat": {"enabled": True, "image": "acme/webchat:1"}}})
    assert not any("webchat" in w for w in plan.warnings)


def test_platform_toml_enables_and_deploy_file_wins() -> None:
    platform = Platform(path=Path("/srv/app/nachos.toml"), channels={"slack": True, "matrix": True})
    plan = plan_of({"components": {"slack": {"enabled": False}}}, platform)
    names = [s.name for s in plan.components]
    assert "slack" not in names
    assert "matrix" in names  # an unknown channel from nachos.toml is a generic channel
    assert plan.component("matrix").role is Role.CHANNEL
    assert plan.platform_config_source == "../nachos.toml"
    assert not plan.generate_platform_config


def test_secrets_are_references_never_values() -> None:
    plan = plan_of({"components": {"discord": {"enabled": True}}})
    token = next(v for v in plan.component("discord").environment if v.name == "DISCORD_BOT_TOKEN")
    assert token.reference and token.value == "DISCORD_BOT_TOKEN"


def test_egress_only_where_the_internet_is_needed() -> None:
    plan = plan_of({"components": {"webchat": {"enabled": True}, "telegram": {"enabled": True}}})
    assert "egress" in plan.component("llm-proxy").networks
    assert "egress" in plan.component("telegram").networks
    assert "egress" not in plan.component("gateway").networks
    assert "egress" not in plan.component("webchat").networks
    # The bus carries every message and gets no way off the machine: its ports are published by a
    # forwarder, the only service on the plain bridge host-access. The ingress (webchat receives
    # HTTP) has a bridge of its own, ingress-public, from which the forwarder is out of reach.
    assert plan.bus.service.networks == ("nachos-internal", "bus-link")
    assert plan.bus.service.ports == ()
    assert [s.name for s in plan.services if "host-access" in s.networks] == ["bus-ports"]
    assert [s.name for s in plan.services if "ingress-public" in s.networks] == ["ingress"]
    internal = dict(plan.networks)
    bridges = [name for name, inside in internal.items() if not inside]
    assert bridges == ["host-access", "ingress-public", "egress"]


def test_relative_paths_from_the_output_folder() -> None:
    plan = plan_of({"components": {"filesystem": {"enabled": True}}})
    workspace = next(m for m in plan.component("filesystem").mounts if m.target == "/workspace")
    assert workspace.source == "../workspace"
    assert workspace.read_only


def test_start_order_is_roles_then_file_order() -> None:
    plan = plan_of(
        {
            "components": {
                "zeta": {"image": "z"},
                "filesystem": {"enabled": True},
                "alpha": {"image": "a"},
                "slack": {"enabled": True},
            }
        }
    )
    assert [s.name for s in plan.components] == [
        "state",
        "gateway",
        "llm-proxy",
        "slack",
        "filesystem",
        "zeta",
        "alpha",
    ]


def test_warnings_for_large_payload_and_open_bind() -> None:
    plan = plan_of({"bus": {"max_payload": "16MB", "bind_address": "0.0.0.0"}})
    assert any("advises 8MB" in w for w in plan.warnings)
    assert any("reachable from other hosts" in w for w in plan.warnings)


def test_image_scheme_is_retargeted_by_one_setting() -> None:
    plan = plan_of({"images": {"prefix": "reg.local:5000/n/", "tag": "2.1"}})
    assert plan.component("gateway").image == "reg.local:5000/n/gateway:2.1"
    assert plan.component("llm-proxy").image == "reg.local:5000/n/llm-proxy:2.1"


def test_a_three_node_bus_is_three_peers_answering_to_bus() -> None:
    plan = make_plan(DeployConfig.model_validate({"bus": {"nodes": 3}}), base_dir=PurePath("/a"))
    nodes = plan.bus.nodes
    assert [n.name for n in nodes] == ["bus", "bus-2", "bus-3"] and plan.bus.clustered
    for index, node in enumerate(nodes, start=1):
        assert node.command is not None and ("--server_name", node.name) == tuple(node.command[-2:])
        assert node.mounts[1].source == ("bus-data" if index == 1 else f"bus-data-{index}")
        assert ("bus-link", f"bus-{index}") in node.aliases  # the routes' and the forwarder's name
        assert node.depends_on == ()  # peers, never chained: a lone clustered node waits for quorum
    for node in nodes[1:]:  # `bus` is any node on both networks (the first answers by its name)
        assert {("nachos-internal", "bus"), ("bus-link", "bus")} <= set(node.aliases)
    assert {"bus-data", "bus-data-2", "bus-data-3"} <= set(plan.volumes)
    targets = sorted(port.target for port in plan.bus.ports.ports)
    assert targets == [4222, 4223, 4224, 4225]  # the monitoring ports only with bus.publish_monitor
    assert plan.bus.audit is not None and plan.bus.audit.replicas == 3
    script = plan.bus.ports.entrypoint[2] if plan.bus.ports.entrypoint else ""
    # The host's URLs relay to the first node that accepts (`bus`, then each by name), each node's
    # own ports to that node.
    for port in (4222, 8222):
        assert f"TCP4-LISTEN:{port},fork" in script
        idle = 300 if port == 4222 else 10  # seconds without traffic before a relay ends
        assert f"'EXEC:sh /tmp/nachos-relay {port} {idle} bus bus-1 bus-2 bus-3,nofork'" in script
    assert "TCP4-LISTEN:4223" in script and "TCP4:bus-1:4222" in script and "TCP4:bus-3:8222" in script
    single = make_plan(DeployConfig(), base_dir=PurePath("/a"))
    assert single.bus.peers == () and single.bus.service.aliases == () and single.bus.audit.replicas == 1  # type: ignore[union-attr]
    assert sorted(port.target for port in single.bus.ports.ports) == [4222]
    published = make_plan(
        DeployConfig.model_validate({"bus": {"publish_monitor": True}}), base_dir=PurePath("/a")
    )
    assert sorted(port.target for port in published.bus.ports.ports) == [4222, 8222]
    open_bus = make_plan(DeployConfig.model_validate({"bus": {"auth": False}}), base_dir=PurePath("/a"))
    assert sorted(port.target for port in open_bus.bus.ports.ports) == [4222, 8222]  # no system user


@pytest.mark.parametrize("nodes", [0, 2, 4, 7, True])
def test_bus_nodes_other_than_1_3_5_are_refused(nodes: object) -> None:
    with pytest.raises(ValueError, match="nodes"):
        DeployConfig.model_validate({"bus": {"nodes": nodes}})
