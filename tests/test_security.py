"""The bus as the security boundary, with the configs nachos-deploy renders, on real nats-server
processes: the hub, and one sidecar per role. Every denial is observed (a permissions violation
reported by the server, a message that never arrives), never assumed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import nats
import pytest
from nats.aio.client import Client

from nachos_deploy.bus import monitor
from nachos_deploy.core.config import DeployConfig
from nachos_deploy.core.names import LEAF_URL
from nachos_deploy.core.plan import make_plan
from nachos_deploy.core.plan_types import Plan
from nachos_deploy.core.render import render
from nachos_deploy.io import credentials
from nachos_deploy.io.files import read_env_file
from tests.natsserver import NatsServer, find_nats_server, start_nats_server
from tests.ports import free_port

natsserver = pytest.mark.natsserver

COMPONENTS = {
    "gateway": {},
    "llm-proxy": {},
    "whatsapp": {"enabled": True},
    "filesystem": {"enabled": True},
    "archiver": {"image": "x", "permissions": {"subscribe": ["nachos.audit.log"]}},
}


@dataclass
class Bus:
    plan: Plan
    hub: NatsServer
    sidecars: dict[str, NatsServer]
    operator_url: str
    output: Path


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    find_nats_server()  # skip with the fix, or fail under CI, when the binary is missing
    output = tmp_path_factory.mktemp("rendered")
    plan = make_plan(
        DeployConfig.model_validate({"components": COMPONENTS}),
        base_dir=PurePath(output),
        output_dir=PurePath(output),
    )
    files = render(plan)
    login = credentials.ensure(output, plan)
    secrets = read_env_file(output / "credentials" / "bus.env")
    leaf_port = free_port()
    hub_conf = files["nats.conf"].replace("  port: 7422", f"  port: {leaf_port}")
    # The configs include their secrets from credentials/secrets.conf beside them, as in a container.
    (output / "hub").mkdir()
    (output / "hub" / "credentials").symlink_to(output / "credentials" / "bus")
    with contextlib.ExitStack() as stack:
        hub = stack.enter_context(
            start_nats_server(output / "hub", jetstream=False, config_text=hub_conf, env=secrets)
        )
        sidecars = {}
        for sidecar in plan.sidecars:
            url = read_env_file(output / "credentials" / f"{sidecar.service.name}.env")[LEAF_URL]
            url = url.replace(f"@bus:{7422}", f"@127.0.0.1:{leaf_port}")
            included = output / sidecar.service.name / "credentials" / "secrets.conf"
            included.parent.mkdir(parents=True)
            included.write_text(credentials.include_text({LEAF_URL: url}))
            sidecars[sidecar.component] = stack.enter_context(
                start_nats_server(
                    output / sidecar.service.name,
                    jetstream=False,
                    config_text=files[sidecar.config_file],
                    env={LEAF_URL: url},
                )
            )
        deadline = time.monotonic() + 10
        expected = {s.service.name for s in plan.sidecars}
        while monitor.leaf_names(hub.monitor_url) != expected:
            assert time.monotonic() < deadline, (
                f"sidecars not at the hub: {monitor.leaf_names(hub.monitor_url)}"
            )
            time.sleep(0.05)
        yield Bus(plan, hub, sidecars, login.operator_url(hub.nats_url), output)


class Client_:
    """A component's client on its sidecar: anonymous, as the platform's components connect."""

    def __init__(self, client: Client, errors: list[str]) -> None:
        self.client = client
        self.errors = errors

    async def denied(self, what: str, subject: str) -> bool:
        """Whether the server reported a permissions violation for ``what`` on ``subject``."""
        await self.client.flush()
        for _ in range(40):
            if any(f'permissions violation for {what} to "{subject}"' in e for e in self.errors):
                return True
            await asyncio.sleep(0.025)
        return False


async def component(bus: Bus, name: str) -> Client_:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    client = await nats.connect(
        bus.sidecars[name].nats_url, name=name, error_cb=on_error, allow_reconnect=False
    )
    return Client_(client, errors)


async def operator(bus: Bus) -> Client:
    return await nats.connect(bus.operator_url, allow_reconnect=False)


async def received(client: Client, subject: str, send: Any) -> list[bytes]:
    """Subscribe on ``client``, run ``send``, and return what arrived within a short wait."""
    got: list[bytes] = []

    async def keep(msg: Any) -> None:
        got.append(msg.data)

    sub = await client.subscribe(subject, cb=keep)
    await client.flush()
    await asyncio.sleep(0.2)  # interest crosses the leaf connection
    await send()
    await asyncio.sleep(0.3)
    await sub.unsubscribe()
    return got


# Per role: (a subject it may subscribe to, one it may not), (one it may publish on, one it may not).
MATRIX = {
    "gateway": (
        ("nachos.channel.whatsapp.inbound", "nachos.llm.request"),
        ("nachos.channel.whatsapp.outbound", "nachos.channel.whatsapp.inbound"),
    ),
    "llm-proxy": (
        ("nachos.llm.request", "nachos.channel.whatsapp.inbound"),
        ("nachos.llm.response", "nachos.tool.filesystem_read.request"),
    ),
    "whatsapp": (
        ("nachos.channel.whatsapp.outbound", "nachos.llm.request"),
        ("nachos.channel.whatsapp.inbound", "nachos.llm.request"),
    ),
    "filesystem": (
        ("nachos.tool.filesystem_read.request", "nachos.channel.whatsapp.outbound"),
        (None, "nachos.llm.request"),
    ),
    "archiver": (
        ("nachos.audit.log", "nachos.llm.request"),
        (None, "nachos.audit.log"),
    ),
}


@natsserver
@pytest.mark.parametrize("name", sorted(MATRIX))
def test_each_role_gets_exactly_its_rights(bus: Bus, name: str) -> None:
    (sub_ok, sub_denied), (pub_ok, pub_denied) = MATRIX[name]

    async def run() -> None:
        me = await component(bus, name)
        op = await operator(bus)
        try:
            # allowed subscription: what the operator publishes at the hub arrives through the sidecar
            got = await received(me.client, sub_ok, lambda: op.publish(sub_ok, b"in"))
            assert got == [b"in"], f"{name} should receive {sub_ok}"
            # denied subscription: the sidecar says so
            await me.client.subscribe(sub_denied)
            assert await me.denied("subscription", sub_denied), me.errors
            # allowed publish reaches the hub; a denied one is refused and never arrives
            if pub_ok is not None:
                got = await received(op, pub_ok, lambda: me.client.publish(pub_ok, b"out"))
                assert got == [b"out"], f"{name} should publish on {pub_ok}"
            got = await received(op, pub_denied, lambda: me.client.publish(pub_denied, b"nope"))
            assert got == []
            assert await me.denied("publish", pub_denied), me.errors
        finally:
            await me.client.close()
            await op.close()

    asyncio.run(run())


@natsserver
def test_requests_cross_the_leafs_only_where_the_roles_allow(bus: Bus) -> None:
    async def run() -> None:
        proxy = await component(bus, "llm-proxy")
        gateway = await component(bus, "gateway")
        channel = await component(bus, "whatsapp")
        tool = await component(bus, "filesystem")
        op = await operator(bus)
        try:

            async def answer(msg: Any) -> None:
                await msg.respond(b"answer:" + msg.data)

            await proxy.client.subscribe("nachos.llm.request", cb=answer)
            await tool.client.subscribe("nachos.tool.filesystem_read.request", cb=answer)
            for client in (proxy.client, tool.client):
                await client.flush()
            await asyncio.sleep(0.3)
            # gateway → llm-proxy and gateway → tool, each through two sidecars and the hub
            reply = await gateway.client.request("nachos.llm.request", b"prompt", timeout=2)
            assert reply.data == b"answer:prompt"
            reply = await gateway.client.request("nachos.tool.filesystem_read.request", b"ls", timeout=2)
            assert reply.data == b"answer:ls"
            # the operator at the hub reaches them too (nachos-deploy's request command)
            assert (await op.request("nachos.llm.request", b"op", timeout=2)).data == b"answer:op"
            # a channel (the component facing the internet) may not ask the model or a tool
            for subject in ("nachos.llm.request", "nachos.tool.filesystem_read.request"):
                with pytest.raises(TimeoutError):
                    await channel.client.request(subject, b"steal", timeout=0.5)
                assert await channel.denied("publish", subject)
            # nor may it answer the tool's requests in the tool's place
            await channel.client.subscribe("nachos.tool.filesystem_read.request")
            assert await channel.denied("subscription", "nachos.tool.filesystem_read.request")
        finally:
            for client in (proxy.client, gateway.client, channel.client, tool.client, op):
                await client.close()

    asyncio.run(run())


@natsserver
def test_the_hub_refuses_anonymous_clients_and_wrong_passwords(bus: Bus) -> None:
    async def attempt(url: str) -> str:
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        client = Client()
        try:
            with pytest.raises(Exception):  # noqa: B017 - nats-py raises several types here
                await client.connect(
                    url, allow_reconnect=False, max_reconnect_attempts=1, connect_timeout=2, error_cb=on_error
                )
        finally:
            with contextlib.suppress(Exception):
                await client.close()
            await asyncio.sleep(0.05)
        return " ".join(errors)

    host = bus.hub.nats_url.removeprefix("nats://")
    assert "Authorization Violation" in asyncio.run(attempt(bus.hub.nats_url))
    assert "Authorization Violation" in asyncio.run(attempt(f"nats://nachos-deploy:wrong@{host}"))
    # Each sidecar's own leaf login, logged in as a leaf right now (the fixture waits for it), is
    # refused on the client port: a stolen leaf password opens no client session (issue 19).
    for sidecar in bus.plan.sidecars:
        url = read_env_file(bus.output / "credentials" / f"{sidecar.service.name}.env")[LEAF_URL]
        stolen = url.replace("@bus:7422", f"@{host}")
        assert "Authorization Violation" in asyncio.run(attempt(stolen)), sidecar.leaf_user


@natsserver
def test_credentials_stay_out_of_rendered_files_and_are_private(bus: Bus, tmp_path: Path) -> None:
    files = render(bus.plan)
    folder = bus.output / "credentials"
    passwords = [v for f in folder.glob("*.env") for v in read_env_file(f).values()]
    # operator, system user; each leaf's password and URL
    assert len(passwords) == 2 + 2 * len(bus.plan.sidecars)
    rendered = "".join(files.values())
    assert not any(secret in rendered or secret.split("@")[0] in rendered for secret in passwords)
    assert folder.stat().st_mode & 0o777 == 0o700
    assert all(f.stat().st_mode & 0o777 == 0o600 for f in folder.glob("*.env"))
    # What the servers include: readable inside their containers (uid 65534; the hub's root has no
    # CAP_DAC_OVERRIDE), reachable on the host only through the 0700 folder above.
    owners = {"bus", *(s.service.name for s in bus.plan.sidecars)}
    assert {p.name for p in folder.iterdir() if p.is_dir()} == owners
    for owner in owners:
        assert (folder / owner).stat().st_mode & 0o777 == 0o711
        assert (folder / owner / "secrets.conf").stat().st_mode & 0o777 == 0o644
        assert [p.name for p in (folder / owner).iterdir()] == ["secrets.conf"]  # no temporary left
    included = (folder / "bus-gateway" / "secrets.conf").read_text()
    assert read_env_file(folder / "bus-gateway.env")[LEAF_URL] in included
    assert "OPERATOR" not in included  # a sidecar sees its own login only
    assert "/credentials/" in files[".gitignore"]
    # a second ensure keeps them (a second up changes nothing); rotate replaces every one (in a copy:
    # the running servers of this module keep the passwords they started with)
    copy = tmp_path / "output"
    credentials.ensure(copy, bus.plan)
    before = {str(f): f.read_text() for f in (copy / "credentials").rglob("*") if f.is_file()}
    credentials.ensure(copy, bus.plan)
    assert {str(f): f.read_text() for f in (copy / "credentials").rglob("*") if f.is_file()} == before
    credentials.ensure(copy, bus.plan, rotate=True)
    after = {str(f): f.read_text() for f in (copy / "credentials").rglob("*") if f.is_file()}
    assert all(after[name] != before[name] for name in before)


@natsserver
def test_the_hub_repeats_the_limits_for_a_subverted_sidecar(bus: Bus, tmp_path: Path) -> None:
    # Defence in depth: a server that logs in with the whatsapp channel's leaf credentials but
    # enforces nothing locally still gets only the channel's rights at the hub.
    url = read_env_file(bus.output / "credentials" / "bus-whatsapp.env")[LEAF_URL]
    url = url.replace("@bus:7422", f"@127.0.0.1:{read_leaf_port(bus)}")
    rogue_conf = f'server_name: "rogue"\nleafnodes {{ remotes: [ {{ url: "{url}" }} ] }}\n'
    with start_nats_server(tmp_path / "rogue", jetstream=False, config_text=rogue_conf) as rogue:
        deadline = time.monotonic() + 10
        while "rogue" not in monitor.leaf_names(bus.hub.monitor_url):
            assert time.monotonic() < deadline
            time.sleep(0.05)

        async def run() -> None:
            thief = await nats.connect(rogue.nats_url, allow_reconnect=False)
            op = await operator(bus)
            try:
                # what the hub sends down this leaf: the channel's outbound, not the model's requests
                assert (
                    await received(
                        thief, "nachos.llm.request", lambda: op.publish("nachos.llm.request", b"secret")
                    )
                    == []
                )
                assert await received(
                    thief,
                    "nachos.channel.whatsapp.outbound",
                    lambda: op.publish("nachos.channel.whatsapp.outbound", b"ok"),
                ) == [b"ok"]
                # what the hub takes from it: the channel's inbound, not a forged tool request
                assert (
                    await received(
                        op,
                        "nachos.tool.filesystem_read.request",
                        lambda: thief.publish("nachos.tool.filesystem_read.request", b"forged"),
                    )
                    == []
                )
                assert await received(
                    op,
                    "nachos.channel.whatsapp.inbound",
                    lambda: thief.publish("nachos.channel.whatsapp.inbound", b"hi"),
                ) == [b"hi"]
            finally:
                await thief.close()
                await op.close()

        asyncio.run(run())


def read_leaf_port(bus: Bus) -> int:
    config = (bus.output / "hub" / "nats.conf").read_text()
    return int(config.split("leafnodes {", 1)[1].split("port:", 1)[1].split()[0])


@natsserver
def test_the_system_user_reads_monitoring_and_nothing_else(bus: Bus) -> None:
    """The host's monitoring reader (issue 19, item 6) sees every connection of the global account,
    through the rendered hub config; it may not kick a connection or reload the server, and the
    operator cannot read monitoring over NATS."""
    login = credentials.load(bus.output)
    assert login is not None and login.system_password is not None
    system_url = login.system_url(bus.hub.nats_url)
    assert system_url is not None
    leafs = monitor.leaf_names(system_url)
    assert leafs == {s.service.name for s in bus.plan.sidecars}
    assert monitor.get_json(system_url, "/healthz", 2.0)["status"] == "ok"
    # the same view as the HTTP port's, the reader's own connection left out
    assert monitor.connection_names(system_url) == monitor.connection_names(bus.hub.monitor_url)
    with pytest.raises(monitor.MonitorProblem, match="no server answered"):
        monitor.get_json(bus.operator_url, "/varz", 2.0)  # the operator is no system-account user

    async def kick() -> str:
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        client = await nats.connect(system_url, error_cb=on_error, allow_reconnect=False)
        try:
            await client.publish(f"$SYS.REQ.SERVER.{client._server_info['server_id']}.KICK", b'{"cid": 1}')
            await client.flush()
            await asyncio.sleep(0.2)
        finally:
            await client.close()
        return " ".join(errors)

    assert "permissions violation for publish" in asyncio.run(kick()).lower()
