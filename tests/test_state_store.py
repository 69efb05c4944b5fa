"""The state store (Redis, issue 20 part 2): who may reach it, with which login, and what it keeps.

Fast tests check the plan, the rendered files and the ACL file; the engine tests bring one Compose
stack up (the probe as gateway and as a channel, the offline redis:7-alpine stand-in) and check each
promise on it: an authenticated PING gates the gateway, the default user is off, the gateway's user
is the only one with data rights, no other component reaches Redis, sessions outlive a gateway restart
and a `down`/`up`, `down --volumes` deletes them, and `credentials rotate` changes the gateway's
password in Redis and in the gateway.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import subprocess
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml

from nachos_deploy.core.catalog import Role
from nachos_deploy.core.config import DeployConfig
from nachos_deploy.core.errors import DeployError
from nachos_deploy.core.names import (
    STATE,
    STATE_CLIENTS_COMMAND,
    STATE_HEALTH_TEST,
    STATE_NETWORK,
    STATE_VOLUME,
)
from nachos_deploy.core.plan import make_plan
from nachos_deploy.core.render import render
from nachos_deploy.docker.engine import ServiceState
from nachos_deploy.io import credentials, state_credentials
from nachos_deploy.io.loader import load
from nachos_deploy.lifecycle.observe import BusView, judge
from tests.commands import compose_down, container, docker, nachos
from tests.gateway_stack import CHANNEL, document
from tests.probe_module import load_settings, nachos_probe


def plan_of(document: dict[str, Any]) -> Any:
    return make_plan(DeployConfig.model_validate(document))


# -- fast: configuration, plan, rendered files, ACL file ---------------------------------------------


def test_the_state_store_runs_with_the_gateway_before_it_on_a_network_of_their_own() -> None:
    plan = plan_of({})
    names = [c.name for c in plan.components]
    assert names.index(STATE) < names.index("gateway")
    state, gateway = plan.component(STATE), plan.component("gateway")
    assert state.role is Role.STATE and state.sidecar is None and state.connection_name is None
    assert state.networks == (STATE_NETWORK,)
    assert dict(plan.networks)[STATE_NETWORK] is True  # internal
    on_it = [s.name for s in plan.services if STATE_NETWORK in s.networks]
    assert on_it == [STATE, "gateway"]
    assert (STATE, "service_healthy") in gateway.depends_on
    assert "credentials/platform-gateway.env" in gateway.env_files
    assert not {"REDIS_URL", "RUNTIME_REDIS_URL"} & {v.name for v in gateway.environment}
    command = list(state.command or ())
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert command[command.index("--appendonly") + 1] == "yes"
    # backup's snapshot (redis-cli --rdb, a replica's full sync) must not wait Redis's 5 s for others
    assert command[command.index("--repl-diskless-sync-delay") + 1] == "0"
    assert state.user == "61005:61005" and state.hardening.read_only and state.hardening.cap_drop_all
    assert state.limits.memory and state.limits.pids
    assert any(p.volume == STATE_VOLUME and p.owner == "61005:61005" for p in plan.prepared_volumes)
    # up --only gateway starts its store too (a gateway without it never says it is healthy)
    assert [s.name for s in plan.selected(["gateway"])][-2:] == [STATE, "gateway"]
    assert STATE not in [s.name for s in plan.selected(["llm-proxy"])]


def test_state_enabled_false_opts_out_and_no_gateway_means_no_state() -> None:
    assert plan_of({"state": {"enabled": False}}).state is None
    plan = plan_of({"components": {"gateway": {"enabled": False}}, "state": {"enabled": True}})
    assert plan.state is None
    assert any("no gateway runs" in w for w in plan.warnings)


def test_state_keys_are_checked(tmp_path: Path) -> None:
    config = plan_of({"state": {"maxmemory": "32MB", "resources": {"memory": "128MB"}}}).component(STATE)
    assert "33554432" in (config.command or ())
    assert config.limits.memory == 128 * 1024 * 1024
    for bad in (
        {"maxmemory": "10KB"},
        {"maxmemory": "64MB", "resources": {"memory": "64MB"}},
        {"enabled": 1},
        {"image": "Not An Image"},
        {"evict": True},
    ):
        (tmp_path / "nachos-deploy.yaml").write_text(yaml.safe_dump({"state": bad}))
        with pytest.raises(DeployError) as refused:
            load(tmp_path / "nachos-deploy.yaml")
        assert "state." in refused.value.message, bad


def test_a_component_named_state_is_refused(tmp_path: Path) -> None:
    (tmp_path / "nachos-deploy.yaml").write_text(yaml.safe_dump({"components": {"state": {"image": "x"}}}))
    with pytest.raises(DeployError) as refused:
        load(tmp_path / "nachos-deploy.yaml")
    assert refused.value.exit_code == 3 and "components.state" in refused.value.message


def test_no_password_is_rendered_and_the_acl_file_holds_only_hashes(tmp_path: Path) -> None:
    plan = plan_of({})
    urls = state_credentials.ensure(tmp_path, plan)
    values = state_credentials.passwords(tmp_path)
    gateway_password = values[state_credentials.GATEWAY_PASSWORD]
    assert urls == {
        "gateway": dict.fromkeys(
            ("REDIS_URL", "RUNTIME_REDIS_URL"), f"redis://gateway:{gateway_password}@state:6379"
        )
    }
    assert (tmp_path / "credentials" / "state.env").stat().st_mode & 0o777 == 0o600
    acl = (tmp_path / "credentials" / "state" / "users.acl").read_text()
    assert gateway_password not in acl
    assert f"#{hashlib.sha256(gateway_password.encode()).hexdigest()}" in acl
    lines = acl.splitlines()
    assert lines[0].startswith("user default off") and len(lines) == 4
    assert "-@all +ping +client|list" in lines[2]  # the healthcheck's user reads nothing
    assert lines[3].startswith("user nachos-backup on #") and "resetkeys" in lines[3]  # no key by name
    for text in render(plan).values():
        assert gateway_password not in text and values[state_credentials.HEALTH_PASSWORD] not in text
    assert state_credentials.ensure(tmp_path, plan) == urls  # kept by a second up
    assert state_credentials.ensure(tmp_path, plan, rotate=True) != urls


def test_the_judge_wants_the_gateway_on_the_state_store() -> None:
    plan = plan_of({})
    state = plan.component(STATE)
    running = ServiceState(STATE, "c", "running", "healthy", 0, 0, "redis:7-alpine", "i")
    listed = BusView(connections={}, state_clients=frozenset({"gateway", "nachos-health"}))
    assert judge(state, running, listed).problem is None
    alone = BusView(connections={}, state_clients=frozenset({"nachos-health"}))
    assert "CLIENT LIST" in (judge(state, running, alone).problem or "")
    assert judge(state, running, BusView(connections={})).problem is None  # not read: not judged


def test_the_probes_resp_client_speaks_resp2() -> None:
    assert (
        nachos_probe.resp_command("AUTH", "gateway", "pw")
        == b"*3\r\n$4\r\nAUTH\r\n$7\r\ngateway\r\n$2\r\npw\r\n"
    )

    async def read(data: bytes) -> Any:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await nachos_probe.resp_reply(reader)

    assert asyncio.run(read(b"+PONG\r\n")) == "PONG"
    assert asyncio.run(read(b":7\r\n")) == 7
    assert asyncio.run(read(b"$-1\r\n")) is None
    assert asyncio.run(read(b"*2\r\n$4\r\na\r\nb\r\n*1\r\n:1\r\n")) == [b"a\r\nb", [1]]
    with pytest.raises(nachos_probe.RedisError, match="WRONGPASS"):
        asyncio.run(read(b"-WRONGPASS invalid username-password pair\r\n"))
    settings = load_settings(
        {
            "NACHOS_COMPONENT": "gateway",
            "NACHOS_ROLE": "gateway",
            "RUNTIME_REDIS_URL": "redis://gateway:pw@state:6379",
        }
    )
    assert settings.redis_url == "redis://gateway:pw@state:6379"
    client = nachos_probe.RedisClient(settings.redis_url, "gateway")
    assert (client.host, client.port, client.user, client.password) == ("state", 6379, "gateway", "pw")
    channel = load_settings({"NACHOS_COMPONENT": "chat", "NACHOS_ROLE": "channel", "RUNTIME_REDIS_URL": "x"})
    assert channel.redis_url == ""  # only the gateway keeps sessions


# -- engine: one Compose stack -----------------------------------------------------------------------


class Stack:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.project = f"h20s-st-{uuid.uuid4().hex[:6]}"
        (folder / "nachos-deploy.yaml").write_text(yaml.safe_dump(document(self.project)))
        self.nats_url = ""

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        done = nachos(self.folder, *args)
        assert done.returncode == 0, done.stderr[-3000:]
        return done

    def up(self) -> dict[str, Any]:
        result: dict[str, Any] = json.loads(self.run("up", "--json").stdout)
        self.nats_url = result["nats_url"]
        return result

    def redis(self, user: str, password: str, *command: str) -> str:
        """redis-cli in the state's container, logged in as ``user`` (no login: user "")."""
        login = ["-e", f"REDISCLI_AUTH={password}"] if user else []
        args = ["--no-auth-warning", "--user", user] if user else []
        where = container(self.project, STATE)
        done = subprocess.run(
            ["docker", "exec", *login, where, "redis-cli", *args, *command],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return (done.stdout + done.stderr).strip()  # a failed AUTH is said on stderr

    def operator_again(self) -> None:
        """The operator's URL with its password as it is now (after a rotation)."""
        login = credentials.load(self.folder / ".nachos")
        assert login is not None
        address = urllib.parse.urlsplit(self.nats_url)
        self.nats_url = login.operator_url(f"nats://{address.hostname}:{address.port}")

    def password(self) -> str:
        return state_credentials.passwords(self.folder / ".nachos")[state_credentials.GATEWAY_PASSWORD]

    def session(self, sender: str, text: str) -> dict[str, Any]:
        """One inbound message on the channel's subject; the gateway's answer on the outbound one."""

        async def exchange() -> dict[str, Any]:
            client = await nats.connect(self.nats_url, connect_timeout=5, allow_reconnect=False)
            try:
                inbox = await client.subscribe(f"nachos.channel.{CHANNEL}.outbound")
                message = {
                    "sender": {"id": sender},
                    "conversation": {"id": sender},
                    "content": {"text": text},
                }
                deadline = time.monotonic() + 30
                while True:  # the gateway may be on its way back (a restart): ask again
                    await client.publish(f"nachos.channel.{CHANNEL}.inbound", json.dumps(message).encode())
                    try:
                        answer = await inbox.next_msg(timeout=2)
                    except TimeoutError:
                        assert time.monotonic() < deadline, "the gateway never answered"
                        continue
                    doc: dict[str, Any] = json.loads(answer.data)
                    if doc["content"]["text"] == f"echo: {text}" and doc.get("session"):
                        return doc
                    assert time.monotonic() < deadline, f"no session in the gateway's answers: {doc}"
            finally:
                await client.close()

        return asyncio.run(exchange())


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    made = Stack(tmp_path_factory.mktemp("state"))
    made.up()
    try:
        yield made
    finally:
        compose_down(made.project)


@pytest.mark.engine
def test_gate_acl_and_status(stack: Stack) -> None:
    where = container(stack.project, STATE)
    # The healthcheck is an authenticated PING, and the gateway waited for it.
    assert (
        subprocess.run(["docker", "exec", where, "sh", "-c", STATE_HEALTH_TEST], timeout=10).returncode == 0
    )
    # The default user is off; the healthcheck's user may PING and nothing else; a wrong password fails.
    assert "NOAUTH" in stack.redis("", "", "GET", "x")
    health = (stack.folder / ".nachos" / "credentials" / "state" / "health").read_text()
    assert "NOPERM" in stack.redis("nachos-health", health, "GET", "x")
    assert "WRONGPASS" in stack.redis("gateway", "wrong", "PING")
    # The gateway's user has the data, but no administration (it cannot change these rules).
    assert stack.redis("gateway", stack.password(), "SET", "probe-key", "1") == "OK"
    assert "NOPERM" in stack.redis("gateway", stack.password(), "ACL", "LIST")
    assert "NOPERM" in stack.redis(
        "gateway", stack.password(), "CONFIG", "SET", "maxmemory-policy", "allkeys-lru"
    )
    # status: the state store running, healthy, and the gateway connected to it as its user.
    status = json.loads(stack.run("status", "--json").stdout)
    report = next(s for s in status["services"] if s["name"] == STATE)
    assert report["status"] == "running" and report["health"] == "healthy" and not report.get("problem")
    listed = docker("exec", where, *STATE_CLIENTS_COMMAND)
    assert "user=gateway" in listed
    # No password in what `docker inspect` shows of the state store (the gateway's environment has its
    # URL, from its env file: the platform's gateway reads it nowhere else).
    inspected = docker("inspect", where)
    assert stack.password() not in inspected and health.strip() not in inspected
    # Redis's own memory, idle (docs/state-store.md quotes it).
    print("state memory:", docker("stats", "--no-stream", "--format", "{{.MemUsage}}", where))


@pytest.mark.engine
def test_no_other_component_reaches_the_state_store(stack: Stack) -> None:
    """From the gateway, the state store answers (by name and at its address); from the channel and
    from a sidecar (on nachos-internal with the hub), neither its name nor any of its addresses does."""
    addresses = docker(
        "inspect", "--format", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
        container(stack.project, STATE),
    ).split()  # fmt: skip
    dial = (
        "import socket, sys\n"
        "for host in sys.argv[1:]:\n"
        "    try:\n"
        "        with socket.create_connection((host, 6379), timeout=1) as s:\n"
        "            s.sendall(b'PING\\r\\n'); print(host, s.recv(64))\n"
        "    except OSError as exc:\n"
        "        print(host, 'no answer', type(exc).__name__)\n"
    )
    # busybox nc (the bus image's) has no -z: a Redis that answers says NOAUTH to the PING.
    relay = "; ".join(f"printf 'PING\\r\\n' | timeout 2 nc {host} 6379" for host in (STATE, *addresses))
    seen = {
        service: docker("exec", container(stack.project, service), "python3", "-c", dial, STATE, *addresses)
        for service in ("gateway", CHANNEL)
    }
    seen[f"bus-{CHANNEL}"] = subprocess.run(
        ["docker", "exec", container(stack.project, f"bus-{CHANNEL}"), "sh", "-c", relay],
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert seen["gateway"].count("NOAUTH") == 2, seen  # its name and its one address
    assert "NOAUTH" not in seen[CHANNEL], seen
    assert "NOAUTH" not in seen[f"bus-{CHANNEL}"], seen


@pytest.mark.engine
def test_rotate_changes_the_gateways_password_in_redis_and_in_the_gateway(stack: Stack) -> None:
    before = stack.session("rotating", "one")["session"]["messages"]
    old = stack.password()
    started = time.monotonic()
    stack.run("credentials", "rotate")
    print(f"credentials rotate with the state store: {time.monotonic() - started:.1f} s")
    stack.operator_again()
    new = stack.password()
    assert new != old
    assert "WRONGPASS" in stack.redis("gateway", old, "PING")
    assert stack.redis("gateway", new, "PING") == "PONG"
    assert "user=gateway" in docker("exec", container(stack.project, STATE), *STATE_CLIENTS_COMMAND)
    assert stack.session("rotating", "two")["session"]["messages"] == before + 1  # kept across it


@pytest.mark.engine
def test_sessions_outlive_a_gateway_restart_and_down_up_and_down_volumes_deletes_them(stack: Stack) -> None:
    mark = time.monotonic()

    def lap(what: str) -> None:
        nonlocal mark
        print(f"{what}: {time.monotonic() - mark:.1f} s")
        mark = time.monotonic()

    first = stack.session("alice", "hello")["session"]
    lap("first session")
    docker("restart", "-t", "1", container(stack.project, "gateway"))
    second = stack.session("alice", "again")["session"]
    lap("restart and session")
    assert second["messages"] == first["messages"] + 1
    assert (
        second["window_count"] == first["window_count"] + 1
    )  # the limit's counter is shared, not per process
    stack.run("down")
    lap("down")
    volumes = docker("volume", "ls", "--quiet", "--filter", f"name={stack.project}_{STATE_VOLUME}")
    assert volumes, "down removed the state store's volume"
    stack.up()
    lap("up")
    assert stack.session("alice", "after down")["session"]["messages"] == second["messages"] + 1
    lap("session")
    stack.run("down", "--volumes", "--yes")
    assert not docker("volume", "ls", "--quiet", "--filter", f"name={stack.project}_{STATE_VOLUME}")
