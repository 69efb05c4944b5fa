"""A component may not take a service name of the bus set, and no rendered file ever holds a service
twice: Compose keeps the last of two equal keys without a word, so a component named `ports` (whose
sidecar is `bus-ports`) once replaced the bus's port forwarder and `render` exited 0."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nachos_deploy.core import bus_nodes, ingress, plan_types
from nachos_deploy.core.config import BUS_SERVICES, SIDECAR_PREFIX, Component, DeployConfig, name_taken
from nachos_deploy.core.errors import ConfigError
from nachos_deploy.core.names import BUS, PORTS, STATE, VOLUME_INIT
from nachos_deploy.core.plan import make_plan
from nachos_deploy.interfaces.cli import app
from nachos_deploy.io.stack import prepare
from tests.yaml_strict import DuplicateKey, load_unique

runner = CliRunner()
ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p.parent for p in (ROOT / "compose").glob("*/nachos-deploy.yaml"))
# Every service name the plan makes besides components', and `ports` (its sidecar is bus-ports).
TAKEN = ["bus", "bus-2", "bus-3", "bus-5", "bus-ports", "bus-gateway", "bus-x", "volume-init", "ports"]
# Close to those, and free: refusing them would be a rule wider than the reason for it.
FREE = ["busy", "bus2", "port", "ports-2", "my-ports", "volume", "init", "volume-init-2", "x-bus-ports"]


@pytest.mark.parametrize("name", TAKEN)
def test_a_taken_name_is_refused_naming_the_file_the_key_and_the_fix(workdir: Path, name: str) -> None:
    deploy = workdir / "nachos-deploy.yaml"
    deploy.write_text(f"components:\n  {name}:\n    image: i\n")
    result = runner.invoke(app, ["render"])
    message = " ".join(result.stderr.split())
    assert result.exit_code == 3, message
    assert str(deploy) in message and f"components.{name}: cannot name a component" in message
    assert "bus-ports (its port forwarder)" in message and f"Rename the component, e.g. my-{name}" in message
    assert message.count("error:") == 1 and "Traceback" not in message and len(message) < 1000
    assert not (workdir / ".nachos").exists()


@pytest.mark.parametrize("name", TAKEN)
def test_a_taken_name_is_refused_in_nachos_toml_too(workdir: Path, name: str) -> None:
    (workdir / "nachos-deploy.yaml").write_text("project: names\n")
    toml = workdir / "nachos.toml"
    toml.write_text(f"[channels.{name}]\nenabled = true\n")
    result = runner.invoke(app, ["render"])
    message = " ".join(result.stderr.split())
    assert result.exit_code == 3, message
    assert f"{toml}: [channels.{name}] cannot name a component" in message
    assert f"Rename the table, e.g. [channels.my-{name}]" in message
    assert not (workdir / ".nachos").exists()


@pytest.mark.parametrize("name", FREE)
def test_names_close_to_the_taken_ones_are_free(workdir: Path, name: str) -> None:
    (workdir / "nachos-deploy.yaml").write_text(f"components:\n  {name}:\n    image: i\n")
    result = runner.invoke(app, ["render"])
    assert result.exit_code == 0, result.stderr
    services = load_unique((workdir / ".nachos" / "docker-compose.yml").read_text())["services"]
    assert services[name]["image"] == "i" and services[f"bus-{name}"]["image"] == "nats:alpine"


def test_the_reserved_names_are_the_ones_the_plan_makes() -> None:
    """config cannot import plan (plan imports config): the names are written in both, and kept equal here."""
    own = {BUS, PORTS, VOLUME_INIT, STATE, ingress.NAME}
    assert own == set(BUS_SERVICES)
    plan = make_plan(
        DeployConfig.model_validate({"bus": {"nodes": 5}, "components": {"x": {"image": "i"}}}),
        output_dir=Path("out"),
    )
    made = [s.name for s in plan.services if s not in plan.components] + [VOLUME_INIT]
    assert {"bus", "bus-2", "bus-5", "bus-ports", "bus-gateway", "bus-x", "volume-init"} <= set(made)
    assert all(name_taken(name) for name in made)
    assert all(s.service.name == SIDECAR_PREFIX + s.component for s in plan.sidecars)
    assert not any(name_taken(name) for name in FREE)


def _unvalidated(components: dict[str, Any]) -> DeployConfig:
    """A configuration that skipped validation, as a caller of the library could build one."""
    return DeployConfig.model_construct(
        components={name: Component.model_validate(c) for name, c in components.items()}
    )


@pytest.mark.parametrize(
    ("name", "clash"),
    [
        ("ports", "bus-ports"),
        ("bus-ports", "bus-ports"),
        ("bus-gateway", "bus-gateway"),
        ("bus", "bus"),
        ("volume-init", "volume-init"),
    ],
)
def test_the_plan_refuses_two_services_of_one_name_even_unvalidated(name: str, clash: str) -> None:
    with pytest.raises(ConfigError, match=f"two services named {clash};") as error:
        make_plan(_unvalidated({name: {"image": "i"}}), output_dir=Path("out"))
    assert "Rename the component" in error.value.message


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_no_example_renders_a_key_twice(example: Path) -> None:
    stack = prepare(example / "nachos-deploy.yaml", cwd=example, environ={})
    _assert_unique_services(stack.files, stack.plan)


def test_many_generated_configurations_render_each_service_once(tmp_path: Path) -> None:
    names = ["x", "port", "busy", "volume", "a-b", "gateway", "slack", "filesystem"]
    cases = 0
    for nodes, auth, target, count in itertools.product(
        (1, 3, 5), (True, False), ("compose", "swarm"), (0, 3, 8)
    ):
        components = {
            name: {"image": "i", "volumes": [f"data-{name}:/d"], "user": "1000:1000"}
            for name in names[:count]
        }
        document = {"bus": {"nodes": nodes, "auth": auth}, "target": target, "components": components}
        stack = prepare(cwd=tmp_path, environ={}, document=document)
        _assert_unique_services(stack.files, stack.plan)
        cases += 1
    assert cases == 36


def _assert_unique_services(files: dict[str, str], plan: plan_types.Plan) -> None:
    rendered = [name for name in files if name.endswith(".yml")]
    assert rendered
    for name in rendered:
        try:
            document = load_unique(files[name])
        except DuplicateKey as exc:
            pytest.fail(f"{name}: {exc}")
        services = set(document["services"])
        assert services <= {s.name for s in plan.services} | {VOLUME_INIT}, name


def test_the_strict_reader_catches_a_service_twice() -> None:
    with pytest.raises(DuplicateKey, match="'bus-ports' appears twice"):
        load_unique("services:\n  bus-ports: {}\n  x: {}\n  bus-ports: {}\n")


@pytest.mark.parametrize("volume", ["bus-data", "bus-data-2", "bus-data-5"])
def test_a_component_cannot_mount_the_bus_store(workdir: Path, volume: str) -> None:
    """volume-init would also hand it to the component's user (chown -R), taking it from the bus."""
    deploy = workdir / "nachos-deploy.yaml"
    deploy.write_text(
        f"components:\n  x:\n    image: i\n    user: '1000:1000'\n    volumes: ['{volume}:/d']\n"
    )
    result = runner.invoke(app, ["render"])
    message = " ".join(result.stderr.split())
    assert result.exit_code == 3, message
    assert str(deploy) in message and "components.x.volumes" in message
    assert f"{volume} holds the bus's JetStream store" in message and "a volume of its own" in message
    assert not (workdir / ".nachos").exists()


def test_the_bus_store_names_are_the_ones_the_plan_makes() -> None:
    from nachos_deploy.core.config import BUS_VOLUME

    assert all(BUS_VOLUME.fullmatch(bus_nodes.node_volume(index)) for index in range(1, 6))
    for free in ("bus-data-x", "my-bus-data", "bus-datastore"):
        assert not BUS_VOLUME.fullmatch(free)
