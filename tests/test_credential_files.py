"""Where the servers find their passwords, which decides whether `credentials rotate` can reload them.

On Compose the hub and each sidecar include a file from their own read-only folder (a reload reads it
again; it never reads the environment again); on Swarm the same file is a Swarm secret, named by its
content's hash so that a rotated file is a new secret. Neither puts a password in an environment.
The engine test of the rotation itself is tests/test_rotation.py.
"""

from __future__ import annotations

from pathlib import Path, PurePath
from typing import Any

import yaml

from nachos_deploy.core.config import DeployConfig
from nachos_deploy.core.names import CREDENTIALS_MOUNT
from nachos_deploy.core.plan import make_plan, secret_version_variable
from nachos_deploy.core.render import render
from nachos_deploy.io import credentials
from nachos_deploy.io.files import read_env_file

COMPONENTS = {"webchat": {"enabled": True}}
INCLUDE = 'include "credentials/secrets.conf"\n'


def rendered(data: dict[str, Any]) -> dict[str, str]:
    plan = make_plan(DeployConfig.model_validate(data), base_dir=PurePath("/a"), output_dir=PurePath("/a/o"))
    return render(plan)


def test_on_compose_each_server_includes_its_own_folder_and_has_no_secret_variables() -> None:
    files = rendered({"components": COMPONENTS})
    services = yaml.safe_load(files["docker-compose.yml"])["services"]
    for name, config in (("bus", "nats.conf"), ("bus-gateway", "sidecar-gateway.conf")):
        assert INCLUDE in files[config]
        # before the first use of a variable it defines
        assert files[config].index(INCLUDE) < files[config].index("$NACHOS_")
        assert "env_file" not in services[name]
        folder = {"type": "bind", "source": f"./credentials/{name}", "target": "/etc/nats/credentials"}
        assert {**folder, "read_only": True} in services[name]["volumes"]
    # a component never sees one (the gateway's env file holds its state store URLs, not the bus's)
    assert "credentials/bus" not in str(services["gateway"]) and CREDENTIALS_MOUNT not in str(
        services["gateway"]
    )


def test_on_swarm_each_server_includes_its_own_secret_and_has_no_secret_variables(tmp_path: Path) -> None:
    files = rendered({"target": "swarm", "components": COMPONENTS})
    stack = yaml.safe_load(files["docker-stack.yml"])
    for name, config in (("bus", "nats.conf"), ("bus-gateway", "sidecar-gateway.conf")):
        assert INCLUDE in files[config]
        service = stack["services"][name]
        assert "env_file" not in service and "credentials" not in str(service.get("environment"))
        secret = {"source": f"{name}-credentials", "target": "/etc/nats/credentials/secrets.conf"}
        # The hub also has its TLS certificate and key (Swarm publishes on every interface: bus.tls on).
        tls = [
            {"source": f"bus-tls-{stem}", "target": f"/etc/nats/tls/{stem}.pem"}
            for stem in ("server", "server-key")
        ]
        assert service["secrets"] == ([*tls, secret] if name == "bus" else [secret])
        assert stack["secrets"][f"{name}-credentials"] == {
            "file": f"./credentials/{name}/secrets.conf",
            "name": f"nachos-{name}-credentials-${{{secret_version_variable(name)}}}",
        }
    assert "secrets" not in stack["services"]["gateway"]  # a component never sees one

    # The name's version is the file's hash, set at each deploy: a rotation changes it.
    plan = make_plan(
        DeployConfig.model_validate({"target": "swarm", "components": COMPONENTS}), base_dir=PurePath("/a")
    )
    credentials.ensure(tmp_path, plan)
    before = credentials.secret_versions(tmp_path)
    assert set(before) == {
        secret_version_variable(o) for o in ("bus", "bus-gateway", "bus-llm-proxy", "bus-webchat")
    }
    credentials.ensure(tmp_path, plan, rotate=True)
    after = credentials.secret_versions(tmp_path)
    assert all(after[variable] != before[variable] for variable in before)


def test_a_cluster_node_finds_its_name_in_the_config_for_a_reload() -> None:
    files = rendered({"bus": {"nodes": 3}})
    assert "server_name: $NACHOS_SERVER_NAME" in files["nats.conf"]
    services = yaml.safe_load(files["docker-compose.yml"])["services"]
    assert [services[n]["environment"]["NACHOS_SERVER_NAME"] for n in ("bus", "bus-2", "bus-3")] == [
        "bus",
        "bus-2",
        "bus-3",
    ]


def test_included_files_hold_what_the_env_files_hold_and_rotation_keeps_the_route(tmp_path: Path) -> None:
    plan = make_plan(
        DeployConfig.model_validate({"bus": {"nodes": 3}, "components": COMPONENTS}), base_dir=PurePath("/a")
    )
    credentials.ensure(tmp_path, plan)
    folder = tmp_path / "credentials"
    for owner in ("bus", "bus-gateway", "bus-webchat"):
        text = (folder / owner / "secrets.conf").read_text()
        for key, value in read_env_file(folder / f"{owner}.env").items():
            assert f'{key}: "{value}"\n' in text
    before = read_env_file(folder / "bus.env")
    old_leafs = credentials.leaf_logins(tmp_path, plan)
    assert set(old_leafs) == {"bus-gateway", "bus-llm-proxy", "bus-webchat"}

    credentials.ensure(tmp_path, plan, rotate=True)
    after = read_env_file(folder / "bus.env")
    assert after["NACHOS_ROUTE_PASSWORD"] == before["NACHOS_ROUTE_PASSWORD"]  # nodes stay joined
    assert after["NACHOS_OPERATOR_PASSWORD"] != before["NACHOS_OPERATOR_PASSWORD"]
    new_leafs = credentials.leaf_logins(tmp_path, plan)
    assert all(new_leafs[name][1] != old_leafs[name][1] for name in old_leafs)
    assert old_leafs["bus-gateway"][1] not in (folder / "bus" / "secrets.conf").read_text()


def test_a_sidecar_of_a_cluster_names_each_node_with_one_login(tmp_path: Path) -> None:
    """Each node by its own name in the sidecar's remote (`bus-1` answers where the sidecars are, as
    `bus-2` and `bus-3` do by their service names): after losing a node, nats-server tries the next
    name, never the address of the node it lost (docs/bus-upgrade.md). One bus keeps `bus`."""
    for target in ("compose", "swarm"):
        data = {"bus": {"nodes": 3}, "components": COMPONENTS, "target": target}
        plan = make_plan(
            DeployConfig.model_validate(data), base_dir=PurePath("/a"), output_dir=PurePath("/a/o")
        )
        files = render(plan)
        urls = "{ urls: [$NACHOS_LEAF_URL, $NACHOS_LEAF_URL_2, $NACHOS_LEAF_URL_3] }"
        assert urls in files["sidecar-webchat.conf"], target
        stack = files["docker-compose.yml" if target == "compose" else "docker-stack.yml"]
        first = yaml.safe_load(stack)["services"]["bus"]["networks"]
        assert first["nachos-internal"]["aliases"] == ["bus-1"], target
    credentials.ensure(tmp_path, plan)
    values = read_env_file(tmp_path / "credentials" / "bus-webchat.env")
    hosts = {key: value.rsplit("@", 1)[1] for key, value in values.items()}
    assert hosts == {
        "NACHOS_LEAF_URL": "bus-1:7422",
        "NACHOS_LEAF_URL_2": "bus-2:7422",
        "NACHOS_LEAF_URL_3": "bus-3:7422",
    }
    assert len({value.rsplit("@", 1)[0] for value in values.values()}) == 1  # the same login to each
    single = rendered({"components": COMPONENTS})["sidecar-webchat.conf"]
    assert "{ url: $NACHOS_LEAF_URL }" in single and "urls" not in single
