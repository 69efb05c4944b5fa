"""Every port key at its bounds: 1 to 65535, and 0 for a port the engine picks (documented in the
README); one past either end is refused with the key named. A bound moved by one was not caught."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from nachos_deploy.interfaces.cli import app
from tests.yaml_strict import load_unique

runner = CliRunner()
# key -> the container port bus-ports publishes it for
PORT_KEYS = {"client_port": 4222, "monitor_port": 8222}
OTHER = {"client_port": "monitor_port", "monitor_port": "client_port"}


@pytest.mark.parametrize("key", PORT_KEYS)
@pytest.mark.parametrize("port", [0, 1, 65535])
def test_a_port_at_its_bounds_is_published_as_written(workdir: Path, key: str, port: int) -> None:
    # the other port set apart, so that the two never meet (equal ports are refused)
    (workdir / "nachos-deploy.yaml").write_text(
        f"bus:\n  {key}: {port}\n  {OTHER[key]}: 30000\n  publish_monitor: true\n"
    )
    result = runner.invoke(app, ["render"])
    assert result.exit_code == 0, result.stderr
    services = load_unique((workdir / ".nachos" / "docker-compose.yml").read_text())["services"]
    published = {p["target"]: p.get("published") for p in services["bus-ports"]["ports"]}
    # 0: no published key, so the engine picks a free port (up reports it)
    assert published == {PORT_KEYS[key]: str(port) if port else None, PORT_KEYS[OTHER[key]]: "30000"}


@pytest.mark.parametrize("key", PORT_KEYS)
@pytest.mark.parametrize("port", ["65536", "-1", "100000"])
@pytest.mark.parametrize("where", ["file", "set", "environment"])
def test_a_port_out_of_range_is_refused(workdir: Path, key: str, port: str, where: str) -> None:
    deploy = workdir / "nachos-deploy.yaml"
    deploy.write_text(f"bus:\n  {key}: {port}\n" if where == "file" else "project: ports\n")
    args = ["render", *(["--set", f"bus.{key}={port}"] if where == "set" else [])]
    env = {f"NACHOS_DEPLOY_BUS__{key.upper()}": port} if where == "environment" else {}
    result = runner.invoke(app, args, env=env)
    message = " ".join(result.stderr.split())
    assert result.exit_code == 3, message
    assert f"bus.{key}: must be a port number from 0 to 65535 (0 picks a free port on the host)" in message
    origin = {
        "file": str(deploy),
        "set": f"--set bus.{key}",
        "environment": f"NACHOS_DEPLOY_BUS__{key.upper()}",
    }
    assert origin[where] in message
    assert not (workdir / ".nachos").exists()


def test_equal_ports_are_refused_unless_both_are_picked_by_the_engine(workdir: Path) -> None:
    deploy = workdir / "nachos-deploy.yaml"
    deploy.write_text("bus:\n  client_port: 5000\n  monitor_port: 5000\n")
    result = runner.invoke(app, ["render"])
    assert result.exit_code == 3 and "client_port and monitor_port must differ" in result.stderr
    deploy.write_text("bus:\n  client_port: 0\n  monitor_port: 0\n  publish_monitor: true\n")
    result = runner.invoke(app, ["render"])
    assert result.exit_code == 0, result.stderr
    services = load_unique((workdir / ".nachos" / "docker-compose.yml").read_text())["services"]
    assert [p.get("published") for p in services["bus-ports"]["ports"]] == [None, None]
