"""`components.<name>.permissions` cannot undo the boundary by accident: a grant that reaches NATS's own
subjects (the system account, the JetStream API and the stores on it) is refused with exit 3 before
anything is written, unless `allow_system: true` names it on purpose; full wildcards are warned about.
The opt-in grants are then shown to do exactly what they say on real nats-server processes (hub with
JetStream, sidecar) rendered by nachos-deploy."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path, PurePath
from typing import Any

import nats
import pytest
import yaml
from nats.aio.client import Client
from typer.testing import CliRunner

from nachos_deploy.bus import monitor
from nachos_deploy.core import subjects
from nachos_deploy.core.config import DeployConfig
from nachos_deploy.core.errors import ConfigError, ExitCode
from nachos_deploy.core.names import LEAF_URL
from nachos_deploy.core.plan import make_plan
from nachos_deploy.core.render import render
from nachos_deploy.interfaces.cli import app
from nachos_deploy.io import credentials
from nachos_deploy.io.files import read_env_file
from nachos_deploy.io.loader import validate
from tests.natsserver import NatsServer, find_nats_server, start_nats_server
from tests.ports import free_port

runner = CliRunner()
natsserver = pytest.mark.natsserver


# --- the subject algebra ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (">", "$SYS.>", True),
        ("*.>", "$JS.>", True),
        ("*.API.>", "$JS.>", True),
        ("$JS.API.>", "$JS.>", True),
        ("$JS.API.STREAM.DELETE.AUDIT", "$JS.>", True),
        ("*.*", "$KV.>", True),  # $KV.bucket
        ("*", "$SYS.>", False),  # one token; $SYS.> needs two or more
        ("$JS", "$JS.>", False),
        ("nachos.>", "$JS.>", False),
        ("_INBOX.>", "$SYS.>", False),
        ("$JSX.>", "$JS.>", False),
        ("a.*.c", "a.b.*", True),
        ("a.b", "a.b.c", False),
        ("a.>", "a", False),
        ("a.b", "a.b", True),
    ],
)
def test_overlap_follows_nats_wildcards(first: str, second: str, expected: bool) -> None:
    assert subjects.overlap(first, second) is expected
    assert subjects.overlap(second, first) is expected


@pytest.mark.parametrize(
    ("grant", "full"),
    [
        *[(">", True), ("*.>", True), ("nachos.>", True), ("nachos.*.>", True), ("*.*.>", True)],
        *[("nachos.channel.>", False), ("nachos.x.*", False), ("_INBOX.>", False), ("a.>", False)],
    ],
)
def test_full_wildcards_name_no_component(grant: str, full: bool) -> None:
    assert subjects.is_full_wildcard(grant) is full


# --- refused, unless named on purpose ----------------------------------------------------------

REFUSED = [
    ("publish", ">"),
    ("subscribe", "$SYS.>"),
    ("publish", "$JS.API.STREAM.DELETE.AUDIT"),
    ("request", "$JS.API.>"),
    ("respond", "$KV.settings.>"),
    ("subscribe", "$O.>"),
    ("publish", "*.>"),
    ("subscribe", "*.API.>"),
    ("request", "$SYS.REQ.SERVER.PING"),
]


def component(**permissions: Any) -> dict[str, Any]:
    return {"components": {"archiver": {"image": "x", "permissions": permissions}}}


@pytest.mark.parametrize(("key", "subject"), REFUSED)
def test_a_grant_reaching_nats_own_subjects_is_refused(key: str, subject: str) -> None:
    with pytest.raises(ConfigError) as caught:
        validate(component(**{key: [subject]}), source="deploy.yaml")
    message = caught.value.message
    assert caught.value.exit_code == ExitCode.CONFIG
    assert message.startswith(
        f"Invalid configuration from deploy.yaml: components.archiver.permissions.{key}: "
    )
    assert f"{subject!r} reaches NATS's own subjects" in message
    assert "allow_system: true" in message and "docs/security.md" in message
    assert "\n" not in message


@pytest.mark.parametrize(("key", "subject"), REFUSED)
def test_allow_system_grants_it_on_purpose_with_a_warning(key: str, subject: str) -> None:
    config = validate(component(allow_system=True, **{key: [subject]}))
    plan = make_plan(config)
    said = [w for w in plan.warnings if f"components.archiver.permissions.{key}: {subject!r}" in w]
    assert any("granted on purpose by components.archiver.permissions.allow_system" in w for w in said)


def test_allow_system_must_be_a_boolean() -> None:
    with pytest.raises(ConfigError, match=r"permissions\.allow_system: .*true or false"):
        validate(component(allow_system="yes", publish=["$JS.API.>"]))


@pytest.mark.parametrize("grant", ["nachos.>", "nachos.*.>"])
def test_a_full_wildcard_is_a_warning(grant: str) -> None:
    plan = make_plan(validate(component(subscribe=[grant])))
    assert any(
        w.startswith(f"components.archiver.permissions.subscribe: {grant!r} takes in every component's")
        for w in plan.warnings
    ), plan.warnings


def test_the_defaults_warn_about_nothing() -> None:
    plan = make_plan(
        validate({"components": {"whatsapp": {"enabled": True}, "filesystem": {"enabled": True}}})
    )
    assert not [w for w in plan.warnings if "permissions" in w]


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_up_refuses_before_anything_is_written(workdir: Path) -> None:
    deploy = workdir / "nachos-deploy.yaml"
    deploy.write_text(yaml.safe_dump({"project": "h18-reserved", **component(publish=[">"])}))
    for command in ("up", "render", "validate"):
        code, out, err = run(command, "-c", str(deploy))
        assert code == 3, (command, out, err)
        assert "components.archiver.permissions.publish: '>' reaches NATS's own subjects" in " ".join(
            err.split()
        )
        assert "Traceback" not in out + err
    assert sorted(p.name for p in workdir.iterdir()) == ["nachos-deploy.yaml"]  # nothing written


def test_validate_and_doctor_warn_on_a_full_wildcard(workdir: Path, engine: str) -> None:
    deploy = workdir / "nachos-deploy.yaml"
    deploy.write_text(
        yaml.safe_dump({"project": "h18-reserved", **component(allow_system=True, publish=[">"])})
    )
    code, out, err = run("validate", "-c", str(deploy))
    said = " ".join(err.split())
    assert code == 0, out + err
    assert "warning: components.archiver.permissions.publish: '>' takes in every component's subjects" in said
    assert "'>' reaches NATS's own subjects ($SYS.>, $JS.>" in said
    _, out, _ = run("doctor", "-c", str(deploy), "--json")
    warned = [
        c for c in json.loads(out)["checks"] if "components.archiver.permissions.publish" in c["detail"]
    ]
    assert {(c["name"], c["level"]) for c in warned} == {("config", "warn")} and len(warned) == 2


# --- on real nats-server: the opt-in does what it says, and no more -----------------------------


CONNZ = "$SYS.REQ.ACCOUNT.PING.CONNZ"  # the system account's connection list, imported into every account
ARCHIVER = {
    "image": "x",
    "permissions": {
        "allow_system": True,
        "request": [CONNZ, "$JS.API.STREAM.INFO.AUDIT"],
        "subscribe": ["nachos.audit.log"],
    },
}


def without_includes(conf: str) -> str:
    """The config with its passwords taken from the environment only (the credentials' env files, with
    the hub's address changed for this host), not from the files a container mounts beside it."""
    return re.sub(r"^include .*$", "", conf, flags=re.MULTILINE)


@pytest.fixture
def bus(tmp_path: Path) -> Iterator[tuple[NatsServer, dict[str, NatsServer], str]]:
    """The hub with JetStream and the AUDIT stream, and the sidecars of llm-proxy (the defaults) and
    of an archiver allowed, on purpose, to ask for the audit stream's info."""
    find_nats_server()
    config = DeployConfig.model_validate(
        {"components": {"gateway": {"enabled": False}, "archiver": ARCHIVER}}
    )
    plan = make_plan(config, base_dir=PurePath(tmp_path), output_dir=PurePath(tmp_path))
    files = render(plan)
    login = credentials.ensure(tmp_path, plan)
    leaf_port = free_port()
    hub_conf = without_includes(files["nats.conf"]).replace("  port: 7422", f"  port: {leaf_port}")
    with contextlib.ExitStack() as stack:
        hub = stack.enter_context(
            start_nats_server(
                tmp_path / "hub",
                jetstream=True,
                config_text=hub_conf,
                env=read_env_file(tmp_path / "credentials" / "bus.env"),
            )
        )
        sidecars = {}
        for sidecar in plan.sidecars:
            url = read_env_file(tmp_path / "credentials" / f"{sidecar.service.name}.env")[LEAF_URL]
            url = url.replace("@bus:7422", f"@127.0.0.1:{leaf_port}")
            sidecars[sidecar.component] = stack.enter_context(
                start_nats_server(
                    tmp_path / sidecar.service.name,
                    jetstream=False,
                    config_text=without_includes(files[sidecar.config_file]),
                    env={LEAF_URL: url},
                )
            )
        deadline = time.monotonic() + 10
        while monitor.leaf_names(hub.monitor_url) != {s.service.name for s in plan.sidecars}:
            assert time.monotonic() < deadline, monitor.leaf_names(hub.monitor_url)
            time.sleep(0.05)
        yield hub, sidecars, login.operator_url(hub.nats_url)


async def _client(url: str, errors: list[str]) -> Client:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    return await nats.connect(url, error_cb=on_error, allow_reconnect=False)


async def _ask(client: Client, subject: str) -> dict[str, Any] | None:
    """The JetStream API's answer, or None when none came (a denied publish is dropped)."""
    try:
        reply = await client.request(subject, b"", timeout=1)
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
        return None
    answer = json.loads(reply.data)
    assert isinstance(answer, dict)
    return answer


@natsserver
def test_allow_system_grants_exactly_what_it_names(
    bus: tuple[NatsServer, dict[str, NatsServer], str],
) -> None:
    _, sidecars, operator_url = bus

    async def run() -> None:
        operator = await nats.connect(operator_url, allow_reconnect=False)
        await operator.jetstream().add_stream(name="AUDIT", subjects=["nachos.audit.log"])
        archiver_errors: list[str] = []
        proxy_errors: list[str] = []
        archiver = await _client(sidecars["archiver"].nats_url, archiver_errors)
        proxy = await _client(sidecars["llm-proxy"].nats_url, proxy_errors)
        try:
            # The system subject named on purpose is answered: the account's connections.
            connz = await _ask(archiver, CONNZ)
            assert connz is not None and "server" in connz and "data" in connz, connz
            # Nothing beside what it names: deleting the audit stream is denied, and the stream stays.
            assert await _ask(archiver, "$JS.API.STREAM.DELETE.AUDIT") is None
            assert _violation(archiver_errors, "$JS.API.STREAM.DELETE.AUDIT")
            # Granted, but nats-server itself keeps the JetStream API off leaf connections (whose
            # system account is not shared): through its sidecar a component never reaches it.
            assert await _ask(archiver, "$JS.API.STREAM.INFO.AUDIT") is None
            assert not _violation(archiver_errors, "$JS.API.STREAM.INFO.AUDIT")
            # A component under the defaults has none of it.
            assert await _ask(proxy, CONNZ) is None
            assert _violation(proxy_errors, CONNZ)
            assert (await operator.jetstream().stream_info("AUDIT")).config.name == "AUDIT"
        finally:
            for client in (archiver, proxy, operator):
                await client.close()

    asyncio.run(run())


def _violation(errors: list[str], subject: str) -> bool:
    """Whether the sidecar reported a denied publish on ``subject`` (nats-py lowercases the text)."""
    return any(f'permissions violation for publish to "{subject}"'.lower() in e.lower() for e in errors)
