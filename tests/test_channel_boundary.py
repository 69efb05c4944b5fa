"""What a compromised component can take or steer through the platform's own channels (issue 19,
items 4 and 9), repeated on the real engine with the probe standing in for every platform image.

Item 4: one rendered nachos.toml was mounted into every component, so with ``[channels.whatsapp]
token = "…"`` in it the filesystem tool and webchat could read the whatsapp channel's token. Each
component now reads its own copy holding only its sections and no secret; the token reaches the
whatsapp channel alone, as the platform's overlay variable CHANNEL_WHATSAPP_TOKEN. The attack: a
shell in webchat and in the filesystem tool looks for the token in its config file, its environment
and every file mounted into it; the whatsapp channel must still read it (the probe reads the
configuration as the platform's loader does: the file, then the overlay).

Item 9: a channel may publish on its own inbound subject, and it chooses the message's reply
subject. A gateway that answered such a message would publish wherever the channel chose (the
probe's gateway did, onto ``nachos.audit.log`` and ``nachos.llm.request``). The attack: from inside
webchat, publish on its inbound subject with those reply subjects, while the operator listens on the
host. The gateway's answer must appear only on the channel's outbound subject.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml

from tests.commands import container, nachos
from tests.documents import stack_document

PROBE = "nachos-deploy/probe:latest"
SECRET = f"wa-token-{uuid.uuid4().hex}"  # in nachos.toml only
VERIFY = f"wa-verify-{uuid.uuid4().hex}"
PLATFORM_TOML = f"""
[nachos]
name = "boundary"
version = "1.0"

[llm]
provider = "anthropic"
model = "claude-sonnet-4-5"

[security]
mode = "standard"

[channels.whatsapp]
token = "{SECRET}"
verify_token = "{VERIFY}"
phone_number_id = "1234"
webhook_path = "/whatsapp/webhook"

[channels.webchat]
port = 8080

[tools.filesystem]
enabled = true
"""
# The catalog's own required secrets of the channel, given other values: the token in nachos.toml
# is the one the channel must read (the overlay wins, as upstream's adapter reads config first).
HOST_SECRETS = {
    "WHATSAPP_TOKEN": "host-token-not-the-secret",
    "WHATSAPP_PHONE_NUMBER_ID": "1234",
    "WHATSAPP_VERIFY_TOKEN": "host-verify",
}


def in_container(name: str, *command: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["docker", "exec", "-i", name, *command], input=stdin, capture_output=True, text=True, timeout=60
    )


@dataclass
class Stack:
    folder: Path
    project: str
    nats_url: str

    def container(self, service: str) -> str:
        return container(self.project, service)


@pytest.fixture(scope="module")
def stack(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("channel-boundary")
    project = f"h19d-{uuid.uuid4().hex[:8]}"
    probe = {"image": PROBE, "egress": False}
    components = {
        "gateway": probe,
        "whatsapp": {"enabled": True, **probe},
        "webchat": {"enabled": True, **probe},
        "filesystem": {"enabled": True, **probe},
    }
    document = stack_document(project, components)
    (folder / "nachos-deploy.yaml").write_text(yaml.safe_dump(document))
    (folder / "nachos.toml").write_text(PLATFORM_TOML)
    (folder / "workspace").mkdir()
    try:
        done = nachos(folder, "up", "--json", "--timeout", "180", timeout=240, env=HOST_SECRETS)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stderr.count("holds secrets written as values") == 1, done.stderr  # said once
        yield Stack(folder, project, json.loads(done.stdout)["nats_url"])
    finally:
        removed = nachos(folder, "down", "--volumes", "--yes", timeout=240, env=HOST_SECRETS)
        assert removed.returncode == 0, removed.stdout + removed.stderr


def _inspect(name: str) -> bytes:
    return subprocess.run(["docker", "inspect", name], capture_output=True, check=True).stdout


def readable_by(name: str) -> dict[str, str]:
    """What a shell inside the container ``name`` can read that a secret could hide in: the platform's
    configuration file, the environment of every process it sees, and every file mounted into it."""
    inspected = json.loads(
        subprocess.run(["docker", "inspect", name], capture_output=True, check=True).stdout
    )
    mounts = [m["Destination"] for m in inspected[0]["Mounts"]]
    script = (
        "import os, pathlib, sys\n"
        "out = {}\n"
        "for proc in pathlib.Path('/proc').glob('[0-9]*/environ'):\n"
        "    try: out[str(proc)] = proc.read_bytes().decode(errors='replace')\n"
        "    except OSError: pass\n"
        "for top in sys.argv[1:]:\n"
        "    paths = [pathlib.Path(top)] if pathlib.Path(top).is_file() else pathlib.Path(top).rglob('*')\n"
        "    for path in paths:\n"
        "        try: out[str(path)] = path.read_bytes()[:1_000_000].decode(errors='replace')\n"
        "        except OSError: pass\n"
        "import json; print(json.dumps(out))\n"
    )
    done = in_container(name, "python3", "-", "/etc/nachos/nachos.toml", *mounts, stdin=script)
    assert done.returncode == 0, done.stderr
    found: dict[str, str] = json.loads(done.stdout)
    assert "/etc/nachos/nachos.toml" in found  # the attack did read the config file
    assert any(key.endswith("/environ") for key in found)  # and the environment
    return found


@pytest.mark.parametrize("service", ["webchat", "filesystem", "gateway"])
def test_no_other_component_can_read_the_whatsapp_token(stack: Stack, service: str) -> None:
    name = stack.container(service)
    leaks = [where for where, text in readable_by(name).items() if SECRET in text or VERIFY in text]
    assert leaks == [], f"{service} can read the whatsapp channel's secrets in {leaks}"
    # nor does the platform's loader, run in its place, find one (file, then overlay)
    done = in_container(name, "python3", "-m", "nachos_probe", "--config-value", "channels.whatsapp.token")
    assert done.returncode == 1 and SECRET not in done.stdout, done.stdout + done.stderr


def test_the_whatsapp_channel_still_reads_its_token(stack: Stack) -> None:
    name = stack.container("whatsapp")
    for key, expected in (("channels.whatsapp.token", SECRET), ("channels.whatsapp.verify_token", VERIFY)):
        done = in_container(name, "python3", "-m", "nachos_probe", "--config-value", key)
        assert (done.returncode, done.stdout.strip()) == (0, expected), done.stderr
    # ... from its environment (the overlay), not from its file, which holds no secret
    config = in_container(name, "cat", "/etc/nachos/nachos.toml").stdout
    assert "webhook_path" in config and SECRET not in config
    # and the rendered files hold none either; the private env file does, 0600
    rendered = stack.folder / ".nachos"
    assert not [p.name for p in rendered.iterdir() if p.is_file() and SECRET in p.read_text()]
    private = rendered / "credentials" / "platform-whatsapp.env"
    assert f"CHANNEL_WHATSAPP_TOKEN={SECRET}" in private.read_text()
    assert private.stat().st_mode & 0o777 == 0o600


PUBLISH_FROM_CHANNEL = """
import asyncio, json, os, sys
import nats

async def main():
    client = await nats.connect(os.environ["NATS_URL"], allow_reconnect=False)
    for reply in sys.argv[1:]:
        body = {"channel": "webchat", "conversation": {"id": reply}, "content": {"text": "hi " + reply}}
        await client.publish("nachos.channel.webchat.inbound", json.dumps(body).encode(), reply=reply)
    await client.flush()
    await client.close()

asyncio.run(main())
"""
STEERED = ("nachos.audit.log", "nachos.llm.request")


def test_a_channel_cannot_steer_the_gateways_answer_with_a_reply_subject(stack: Stack) -> None:
    async def run() -> dict[str, list[Any]]:
        operator = await nats.connect(stack.nats_url, allow_reconnect=False)
        got: dict[str, list[Any]] = {subject: [] for subject in (*STEERED, "nachos.channel.webchat.outbound")}
        try:
            for subject, kept in got.items():

                async def keep(msg: Any, kept: list[Any] = kept) -> None:
                    kept.append(json.loads(msg.data))

                await operator.subscribe(subject, cb=keep)
            await operator.flush()
            await asyncio.sleep(0.5)  # interest reaches the sidecars over the leaf connections
            done = in_container(
                stack.container("webchat"), "python3", "-", *STEERED, stdin=PUBLISH_FROM_CHANNEL
            )
            assert done.returncode == 0, done.stderr
            for _ in range(50):  # the gateway answers within a few ms; wait for both, then a little
                if len(got["nachos.channel.webchat.outbound"]) >= len(STEERED):
                    break
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
        finally:
            await operator.close()
        return got

    got = asyncio.run(run())
    # the gateway took both messages and answered where the platform's gateway does ...
    answered = sorted(m["conversationId"] for m in got["nachos.channel.webchat.outbound"])
    assert answered == sorted(STEERED), got
    # ... and published nothing where the channel pointed it
    assert got["nachos.audit.log"] == [] and got["nachos.llm.request"] == [], got
