from __future__ import annotations

import json
import os
import string
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path, PurePath
from typing import Any

import jinja2
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from nachos_deploy.core.config import DeployConfig
from nachos_deploy.core.plan import make_plan
from nachos_deploy.core.render import render
from nachos_deploy.io import files, template_cache


def rendered(data: dict[str, Any]) -> dict[str, str]:
    plan = make_plan(
        DeployConfig.model_validate(data), base_dir=PurePath("/a"), output_dir=PurePath("/a/.nachos")
    )
    return render(plan)


def compose_of(data: dict[str, Any]) -> dict[str, Any]:
    document = yaml.safe_load(rendered(data)["docker-compose.yml"])
    assert isinstance(document, dict)
    return document


def test_bus_and_networks() -> None:
    doc = compose_of({})
    bus = doc["services"]["bus"]
    assert bus["command"] == ["--config", "/etc/nats/nats.conf", "--js", "--store_dir", "/data"]
    assert not any("max_payload" in arg for arg in bus["command"])
    assert "ports" not in bus and bus["networks"] == ["nachos-internal", "bus-link"]
    forwarder = doc["services"]["bus-ports"]
    published = {"host_ip": "127.0.0.1", "published": "4222", "target": 4222, "protocol": "tcp"}
    assert published in forwarder["ports"]
    assert forwarder["networks"] == ["host-access", "bus-link"] and forwarder["dns"] == ["127.0.0.1"]
    assert forwarder["dns_opt"] == ["timeout:1", "attempts:1"]
    assert forwarder["entrypoint"][:2] == ["sh", "-c"]
    script = forwarder["entrypoint"][2]  # socat with TCP_NODELAY both ways, a relay that gets no answer
    # from the bus gives up after a second (not the kernel's two minutes); busybox nc without socat
    # from the bus gives up after a second; a relay quiet for its idle timeout (-T) ends
    for port, relays, idle in ((4222, 128, 300), (8222, 16, 10)):
        listen = f"TCP4-LISTEN:{port},fork,reuseaddr,nodelay,max-children={relays}"
        assert f"socat -T {idle} -b 131072 {listen} TCP4:bus:{port},nodelay,connect-timeout=1 " in script
    # the monitoring port is relayed inside (the forwarder's healthcheck) but not published by default
    assert not any(port["target"] == 8222 for port in forwarder["ports"])
    assert "nc -ll -p 4222 -e nc bus 4222" in script and "$" not in script
    assert forwarder["user"] == "61002:61002" and forwarder["read_only"] is True
    assert forwarder["cap_drop"] == ["ALL"] and forwarder["mem_limit"] == 64 * 1024**2
    assert forwarder["pids_limit"] == 1280
    assert doc["networks"]["bus-link"]["internal"] is True  # and its own subnet (test_subnets.py)
    test = bus["healthcheck"]["test"][1]
    assert "/healthz" in test and "/jsz" in test
    assert "start_interval" not in bus["healthcheck"]
    assert doc["networks"]["nachos-internal"]["internal"] is True
    assert doc["volumes"] == {"bus-data": {}, "gateway-data": {}, "gateway-state": {}, "state-data": {}}
    for name, service in doc["services"].items():
        assert "container_name" not in service
        if name == "volume-init":
            continue
        assert service["init"] is True
        assert service["restart"] == "unless-stopped"
        if name == "bus-ports":  # relays to the bus when asked; the gate goes through it
            assert "depends_on" not in service
        elif name.startswith("bus-"):  # a sidecar waits for the hub, its component for the sidecar
            assert service["depends_on"] == {"bus": {"condition": "service_healthy"}}
        elif name == "state":  # not on the bus: waits for its volume only (docs/state-store.md)
            assert service["depends_on"] == {"volume-init": {"condition": "service_completed_successfully"}}
        elif name != "bus":
            assert service["depends_on"][f"bus-{name}"] == {"condition": "service_healthy"}
    assert doc["services"]["gateway"]["depends_on"]["volume-init"] == {
        "condition": "service_completed_successfully"
    }
    assert "volume-init" not in doc["services"]["llm-proxy"]["depends_on"]


def test_volume_init_hands_fresh_volumes_to_the_component_user() -> None:
    init = compose_of({})["services"]["volume-init"]
    assert init["user"] == "0:0" and init["restart"] == "no" and init["network_mode"] == "none"
    assert init["volumes"] == [
        {"type": "volume", "source": name, "target": f"/volumes/{name}"}
        for name in ("gateway-data", "gateway-state", "state-data")
    ]
    script = init["entrypoint"][2]
    assert "chown -R 61000:61000 /volumes/gateway-data" in script
    assert "chown -R 61000:61000 /volumes/gateway-state" in script  # the gateway's RUNTIME_STATE_DIR
    assert "$$(stat" in script  # Compose must not substitute the shell's $(...)


def test_healthcheck_false_disables_the_image_check() -> None:
    services = compose_of({"components": {"x": {"image": "x", "healthcheck": False}}})["services"]
    assert services["x"]["healthcheck"] == {"disable": True}
    assert services["llm-proxy"]["healthcheck"]["test"][:3] == ["CMD", "node", "-e"]  # the bus check
    assert compose_of({"components": {"llm-proxy": {"healthcheck": False}}})["services"]["llm-proxy"][
        "healthcheck"
    ] == {"disable": True}
    assert "healthcheck" not in compose_of({"components": {"x": {"image": "x"}}})["services"]["x"]


def test_nats_config_carries_max_payload() -> None:
    conf = rendered({})["nats.conf"]
    assert "max_payload: 10MB\n" in conf
    assert "http_port: 8222\n" in conf
    assert "max_payload: 1MB\n" in rendered({"bus": {"max_payload": 1048576}})["nats.conf"]


def test_ephemeral_ports_have_no_published_value() -> None:
    ports = compose_of({"bus": {"client_port": 0}})["services"]["bus-ports"]["ports"]
    assert ports[0] == {"host_ip": "127.0.0.1", "target": 4222, "protocol": "tcp"}


def test_secret_references() -> None:
    env = compose_of({"components": {"whatsapp": {"enabled": True}}})["services"]["whatsapp"]["environment"]
    assert env["WHATSAPP_TOKEN"] == "${WHATSAPP_TOKEN}"
    assert env["WHATSAPP_APP_SECRET"] == "${WHATSAPP_APP_SECRET:-}"


def test_rendering_is_deterministic_across_processes(tmp_path: Path) -> None:
    # Two interpreters with different hash seeds: set and dict orders that depend on string hashing
    # would show up as differences.
    (tmp_path / "nachos-deploy.yaml").write_text(
        yaml.safe_dump(
            {
                "components": {
                    "slack": {"enabled": True},
                    "x": {"image": "x", "environment": {"B": 1, "A": 2}, "volumes": ["b:/b", "a:/a"]},
                    "y": {"image": "y", "user": "5:5", "volumes": ["c:/c", "a2:/a"]},
                }
            }
        )
    )
    script = (
        "import json, sys; from pathlib import Path; from nachos_deploy.io.stack import prepare; "
        "s = prepare(Path(sys.argv[1]), environ={}); print(json.dumps(dict(s.files), sort_keys=True))"
    )
    outputs = []
    for seed in ("1", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, "-c", script, str(tmp_path / "nachos-deploy.yaml")],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        outputs.append(done.stdout)
    assert outputs[0] == outputs[1]
    assert "volume-init" in outputs[0]


# Values are data: whatever the text, it comes back as the same string (with '$' escaped for Compose).
pieces = st.sampled_from(
    [*string.printable, "{{", "}}", "{%", ": ", " #", "${HOME}", "é", "\u2028", "\x85", "🙂", "'", '"']
)
tricky = st.lists(pieces, max_size=20).map("".join) | st.text(max_size=30)


@settings(max_examples=150, deadline=None)
@given(value=tricky, command=st.lists(tricky, max_size=3))
def test_values_are_data_not_structure(value: str, command: list[str]) -> None:
    """Free-text keys (image and user have a grammar of their own, checked in the config)."""
    data = {"components": {"probe": {"image": "probe", "command": command, "environment": {"VALUE": value}}}}
    service = compose_of(data)["services"]["probe"]
    assert service["environment"]["VALUE"] == value.replace("$", "$$")
    assert service.get("command", []) == [arg.replace("$", "$$") for arg in command]


def test_a_container_sees_values_unchanged_and_secrets_from_the_host(engine: str, tmp_path: Path) -> None:
    """End to end through Compose and a container: '$' escaping and references mean what we say."""
    value = "a $HOME ${NOPE} $$ {{ x }} 'q' \"dq\" #c: d\nline2 é"
    data = {
        "project": f"ndt-{uuid.uuid4().hex[:10]}",
        "components": {
            "gateway": {"enabled": False},
            "llm-proxy": {"enabled": False},
            "probe": {
                "image": "nachos-deploy/probe:latest",
                "environment": {"VALUE": value},
                "secrets": {"TOKEN": "NACHOS_T_SECRET"},
            },
        },
    }
    plan = make_plan(DeployConfig.model_validate(data), base_dir=tmp_path, output_dir=tmp_path / "out")
    files.write_all(tmp_path / "out", render(plan))
    compose = ["docker", "compose", "-p", plan.project, "-f", str(tmp_path / "out" / "docker-compose.yml")]
    show = "import os, json; print(json.dumps([os.environ['VALUE'], os.environ['TOKEN']]))"
    try:
        result = subprocess.run(
            [*compose, "run", "--rm", "--no-deps", "--entrypoint", "python3", "probe", "-c", show],
            capture_output=True,
            text=True,
            env={**os.environ, "NACHOS_T_SECRET": "from-the-host"},
            timeout=120,
        )
    finally:
        subprocess.run([*compose, "down", "--volumes"], capture_output=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == [value, "from-the-host"]
    assert "from-the-host" not in (tmp_path / "out" / "docker-compose.yml").read_text()


def test_a_clustered_bus_renders_routes_by_variable_and_aliases() -> None:
    files = rendered({"bus": {"nodes": 3}})
    conf = files["nats.conf"]
    assert "cluster {" in conf and "no_advertise: true" in conf and "port: 6222" in conf
    assert "password: $NACHOS_ROUTE_PASSWORD" in conf
    assert all(f"$NACHOS_ROUTE_{index}" in conf for index in (1, 2, 3))
    assert "nats-route://" not in conf  # the URLs carry the password: only in credentials/bus.env
    services = yaml.safe_load(files["docker-compose.yml"])["services"]
    assert services["bus-2"]["networks"] == {
        "nachos-internal": {"aliases": ["bus"]},
        "bus-link": {"aliases": ["bus", "bus-2"]},  # `bus`: any live node, for the forwarder too
    }
    # `bus-1` on nachos-internal too: the sidecars name each node (bus_nodes.leaf_remotes)
    assert services["bus"]["networks"] == {
        "nachos-internal": {"aliases": ["bus-1"]},
        "bus-link": {"aliases": ["bus-1"]},
    }
    hashes = {services[name]["labels"]["org.nachos-deploy.config-hash"] for name in ("bus", "bus-2", "bus-3")}
    assert len(hashes) == 1  # a changed nats.conf recreates every node
    assert "cluster {" not in rendered({})["nats.conf"]


def test_cluster_credentials_hold_the_route_urls(tmp_path: Path) -> None:
    from nachos_deploy.io import credentials

    plan = make_plan(DeployConfig.model_validate({"bus": {"nodes": 3}}), base_dir=PurePath("/a"))
    credentials.ensure(tmp_path, plan)
    values = files.read_env_file(tmp_path / "credentials" / "bus.env")
    password = values["NACHOS_ROUTE_PASSWORD"]
    assert values["NACHOS_ROUTE_2"] == f"nats-route://nachos-route:{password}@bus-2:6222"
    assert password != values["NACHOS_OPERATOR_PASSWORD"] and len(password) > 40


def _plan_of(data: dict[str, Any]) -> Any:
    return make_plan(
        DeployConfig.model_validate(data), base_dir=PurePath("/a"), output_dir=PurePath("/a/.nachos")
    )


def test_compiled_templates_are_kept_between_runs_and_change_nothing(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A second process (a new cache object, new environments) compiles no template: it loads what
    the first one kept. What is rendered is the same with the cache, without it, and from it."""
    plan = _plan_of({"components": {"webchat": {"enabled": True}}})
    without = render(plan)
    first = render(plan, template_cache._QuietCache(str(tmp_path)))
    assert first == without
    assert list(tmp_path.glob("__jinja2_*.cache")), "the compiled templates should have been kept"
    compiled: list[str] = []
    real = jinja2.Environment.compile

    def counting(
        self: jinja2.Environment, source: Any, name: str | None = None, *rest: Any, **kw: Any
    ) -> Any:
        compiled.append(str(name))
        return real(self, source, name, *rest, **kw)

    monkeypatch.setattr(jinja2.Environment, "compile", counting)
    assert render(plan, template_cache._QuietCache(str(tmp_path))) == without
    assert compiled == [], f"compiled again despite the cache: {compiled}"


def test_a_cache_that_cannot_be_written_or_trusted_costs_nothing_but_time(
    tmp_path: Path, monkeypatch: Any
) -> None:
    plan = _plan_of({})
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    # Writing under a regular file fails (NotADirectoryError, even for root): the render goes on.
    assert render(plan, template_cache._QuietCache(str(blocked / "cache"))) == render(plan)
    # Jinja's per-user folder, owned by someone else: refused, so no cache at all.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    foreign = tmp_path / f"_jinja2-cache-{os.getuid()}"
    foreign.mkdir(mode=0o700)
    os.chown(foreign, os.getuid() + 1, os.getgid())
    assert template_cache.bytecode_cache.__wrapped__() is None
    foreign.rmdir()
    assert isinstance(template_cache.bytecode_cache.__wrapped__(), jinja2.BytecodeCache)
