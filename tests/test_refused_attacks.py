"""Issue 19: the attacks that were refused, repeated on the real engine so that they stay refused.

The issue's attacker had a shell inside the webchat channel (the internet-facing component) and the
filesystem tool. Each test here does what that shell did: a client in the container's own Python
with nats-py (the probe image stands in for the platform's), or a socket, against what the container
can name or address. One stack serves the whole file. What each attack was and what refused it is in
docs/security.md ("What was tried").
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml

from nachos_deploy.bus import natsclient
from nachos_deploy.bus.monitor import BusUnavailable
from tests.commands import cli, compose_down, docker
from tests.conftest import unavailable
from tests.documents import stack_document
from tests.test_lifecycle import LookupWatch

pytestmark = pytest.mark.engine

PROBE = "nachos-deploy/probe:latest"
TOOL_SUBJECT = "nachos.tool.filesystem_read.request"


@dataclass
class Stack:
    file: Path
    project: str
    nats_url: str  # the operator's, on the published port

    def container(self, service: str) -> str:
        return f"{self.project}-{service}-1"

    def address(self, service: str, network: str) -> str:
        return docker(
            "inspect",
            self.container(service),
            "--format",
            f'{{{{(index .NetworkSettings.Networks "{self.project}_{network}").IPAddress}}}}',
        )


@pytest.fixture(scope="module")
def stack(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("attacks")
    (folder / "workspace").mkdir()
    project = f"h19f-att-{uuid.uuid4().hex[:8]}"
    component = {"image": PROBE, "egress": False}
    file = folder / "nachos-deploy.yaml"
    components = {
        "llm-proxy": component,
        "webchat": {**component, "enabled": True},
        "filesystem": {**component, "enabled": True},
    }
    file.write_text(yaml.safe_dump(stack_document(project, components)))
    try:
        code, out, err = cli("up", "-c", str(file), "--json", "--timeout", "90")
        assert code == 0, out + err
        yield Stack(file, project, json.loads(out)["nats_url"])
    finally:
        compose_down(project)


def inside(stack: Stack, service: str, script: str, *args: str, stdin: str = "") -> str:
    """Run ``script`` with the container's own python3, as a shell in it would."""
    done = subprocess.run(
        ["docker", "exec", "-i", stack.container(service), "python3", "-c", script, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# --- subscriptions, publishes, requests and answers outside the role -----------------------------

# Inside the container, on its sidecar (the only bus it can reach): subscribe and queue-subscribe
# (answering "forged" to whatever arrives), say "ready", wait for a line on stdin (the host then
# publishes on those subjects and asks llm-proxy), publish the marker and send requests, and print
# what it received and every error the server sent.
ROGUE = """
import asyncio, json, sys, nats
async def main():
    spec, errors, got = json.loads(sys.argv[2]), [], []
    async def on_error(exc):
        errors.append(str(exc))
    client = await nats.connect(
        sys.argv[1], error_cb=on_error, allow_reconnect=False, max_reconnect_attempts=1, connect_timeout=3
    )
    async def keep(msg):
        got.append(msg.subject)
        if msg.reply:
            await msg.respond(b"forged")
    for subject in spec["subscribe"]:
        await client.subscribe(subject, cb=keep)
    for subject, queue in spec["queue"]:
        await client.subscribe(subject, queue=queue, cb=keep)
    await client.flush()
    await asyncio.sleep(0.5)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    for subject in spec["publish"]:
        await client.publish(subject, spec["marker"].encode())
    answers = {}
    for subject in spec["request"]:
        try:
            answers[subject] = (await client.request(subject, b"{}", timeout=0.5)).data.decode()
        except Exception as exc:
            answers[subject] = type(exc).__name__
    await client.flush()
    await asyncio.sleep(0.5)
    print(json.dumps({"errors": errors, "got": got, "answers": answers}), flush=True)
    await client.close()
asyncio.run(main())
"""

EVERYTHING = [">", "$SYS.>", "$JS.API.>", "_INBOX.>", "nachos.>"]
ATTACKS: dict[str, dict[str, Any]] = {
    "webchat": {
        "subscribe": [
            *EVERYTHING,
            "nachos.channel.slack.outbound",  # another channel's messages
            "nachos.channel.webchat.inbound",  # what its own users said, as the gateway reads it
            "nachos.llm.request",
            "nachos.audit.log",
        ],
        "queue": [["nachos.llm.request", "llm-proxy"], [TOOL_SUBJECT, "filesystem"]],
        "publish": [
            "nachos.llm.request",
            TOOL_SUBJECT,
            "nachos.audit.log",
            "nachos.channel.slack.inbound",  # speaking as another channel
            "nachos.channel.webchat.outbound",  # speaking as the gateway to its own users
            "$JS.API.STREAM.DELETE.AUDIT",
            "$SYS.REQ.SERVER.PING",
            "_INBOX.stolen.reply",
        ],
        "request": ["nachos.llm.request", TOOL_SUBJECT, "$JS.API.INFO", "$SYS.REQ.SERVER.PING"],
    },
    "filesystem": {
        "subscribe": [
            *EVERYTHING,
            "nachos.tool.browser_navigate.request",  # another tool's requests
            "nachos.channel.webchat.outbound",
            "nachos.llm.request",
            "nachos.audit.log",
        ],
        "queue": [["nachos.llm.request", "llm-proxy"], ["nachos.tool.browser_navigate.request", "browser"]],
        "publish": [
            "nachos.llm.request",
            TOOL_SUBJECT,  # its own request subject: it answers requests, it does not make them
            "nachos.channel.webchat.outbound",
            "nachos.audit.log",
            "$JS.API.STREAM.DELETE.AUDIT",
            "_INBOX.stolen.reply",
        ],
        "request": ["nachos.llm.request", "nachos.tool.browser_navigate.request", "$JS.API.INFO"],
    },
}
# What the host publishes while the rogue listens: something on every subject it tried to read.
HOST_PUBLISHES = [
    "nachos.channel.slack.outbound",
    "nachos.channel.webchat.inbound",
    "nachos.channel.webchat.outbound",
    "nachos.tool.browser_navigate.request",
    "nachos.audit.log",
    "_INBOX.someone.else",
]


@pytest.mark.parametrize("service", sorted(ATTACKS))
def test_a_component_gets_nothing_outside_its_role(stack: Stack, service: str) -> None:
    spec = {**ATTACKS[service], "marker": f"attack-{uuid.uuid4().hex}"}
    sidecar = f"nats://bus-{service}:4222"

    async def run() -> tuple[dict[str, Any], list[str], list[bytes]]:
        operator = await nats.connect(stack.nats_url, allow_reconnect=False)
        leaked: list[str] = []

        async def watch(msg: Any) -> None:
            if spec["marker"].encode() in msg.data:
                leaked.append(msg.subject)

        await operator.subscribe(">", cb=watch)
        await operator.flush()
        rogue = await asyncio.create_subprocess_exec(
            *(
                "docker",
                "exec",
                "-i",
                stack.container(service),
                "python3",
                "-c",
                ROGUE,
                sidecar,
                json.dumps(spec),
            ),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert rogue.stdout is not None and rogue.stdin is not None
        assert (await asyncio.wait_for(rogue.stdout.readline(), 30)).strip() == b"ready"
        for subject in HOST_PUBLISHES:
            await operator.publish(subject, b"for someone else")
        # requests to llm-proxy while the rogue queue-subscribes to them: the real one answers each
        answers = [(await operator.request("nachos.llm.request", b"{}", timeout=2)).data for _ in range(5)]
        await operator.flush()
        out, err = await asyncio.wait_for(rogue.communicate(b"go\n"), 30)
        assert rogue.returncode == 0, err.decode()
        await asyncio.sleep(0.3)
        await operator.close()
        return json.loads(out.decode().strip().splitlines()[-1]), leaked, answers

    seen, leaked, answers = asyncio.run(run())
    errors = " | ".join(seen["errors"]).lower()
    assert seen["got"] == [], f"{service} received {seen['got']}"
    for subject in [*spec["subscribe"], *(subject for subject, _ in spec["queue"])]:
        assert f'permissions violation for subscription to "{subject.lower()}"' in errors, (subject, errors)
    for subject in spec["publish"]:
        assert f'permissions violation for publish to "{subject.lower()}"' in errors, (subject, errors)
    assert leaked == [], f"the hub received {service}'s publishes on {leaked}"
    assert all(answer not in ("forged",) and answer for answer in seen["answers"].values())
    assert not any(a.startswith("{") for a in seen["answers"].values()), seen["answers"]
    assert b"forged" not in answers and all(a for a in answers), answers
    # the audit stream it tried to delete is still there
    out = cli("status", "-c", str(stack.file), "--json")[1]
    assert json.loads(out)["bus"]["audit"]["stream"] == "AUDIT", out


# --- networks, ports, names, the way off the machine --------------------------------------------

# Every connection at once (threads), each "ok" or the error's name; what has no answer after 3 s
# (a name the internal network's DNS cannot resolve waits for its resolver's timeouts) is "no answer".
REACH = """
import json, os, socket, sys, threading, time
results = {}
def attempt(target):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=1.5).close()
        results[target] = "ok"
    except OSError as exc:
        results[target] = type(exc).__name__
for target in sys.argv[1:]:
    threading.Thread(target=attempt, args=(target,), daemon=True).start()
deadline = time.monotonic() + 3
while len(results) < len(sys.argv) - 1 and time.monotonic() < deadline:
    time.sleep(0.05)
print(json.dumps({t: results.get(t, "no answer") for t in sys.argv[1:]}), flush=True)
os._exit(0)
"""


def test_a_component_reaches_nothing_but_its_own_sidecar(stack: Stack) -> None:
    hub = stack.address("bus", "nachos-internal")
    other_sidecar = stack.address("bus-filesystem", "filesystem-link")
    other_component = stack.address("llm-proxy", "llm-proxy-link")
    targets = [
        "bus-webchat:4222",  # its own sidecar: the one way to the bus (the control: it must answer)
        "bus-webchat:7422",  # the sidecar's leafnode port: it has none to accept
        "bus-webchat:6222",  # a cluster port: none
        "bus:4222",  # the hub, by name
        "bus:7422",
        f"{hub}:4222",  # the hub, by address
        f"{hub}:7422",
        "bus-filesystem:4222",  # another component's sidecar
        f"{other_sidecar}:4222",
        "llm-proxy:4222",  # another component
        f"{other_component}:4222",
        "169.254.169.254:80",  # a cloud's metadata service
        "1.1.1.1:443",  # off the machine
        "8.8.8.8:53",
    ]
    results = json.loads(inside(stack, "webchat", REACH, *targets))
    assert results.pop("bus-webchat:4222") == "ok"
    assert {target for target, result in results.items() if result == "ok"} == set(), results
    # DNS: no name off the machine resolves, and the lookup is not even sent off the machine
    if os.geteuid() != 0:
        unavailable("watching the host's interfaces for a lookup needs root; run the tests as root")
    label = f"nachos-attack-{uuid.uuid4().hex[:12]}"
    watch = LookupWatch(label)
    results = json.loads(inside(stack, "webchat", REACH, f"{label}.example.com:443"))
    assert results[f"{label}.example.com:443"] in ("gaierror", "no answer"), results
    assert not LookupWatch.outside(watch.stop()), "a lookup from webchat left the machine"


# --- privileges --------------------------------------------------------------------------------

PRIVILEGES = """
import json, os
lines = open("/proc/self/status").read().splitlines()
status = dict(line.split(":\\t", 1) for line in lines if ":\\t" in line)
names = ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp")
out = {k: status[k].strip() for k in names}
out["uid"] = os.getuid()
def attempt(name, action):
    try:
        action()
        out[name] = "done"
    except OSError as exc:
        out[name] = type(exc).__name__ + ":" + str(exc.errno)
attempt("setuid0", lambda: os.setuid(0))
attempt("write_root", lambda: open("/escalate", "w"))
attempt("write_app", lambda: open("/usr/local/bin/escalate", "w"))
attempt("chroot", lambda: os.chroot("/tmp"))
attempt("raw_socket", lambda: __import__("socket").socket(17, 3))  # AF_PACKET, SOCK_RAW
print(json.dumps(out))
"""


@pytest.mark.parametrize("service", ["webchat", "filesystem"])
def test_a_component_has_no_privilege_to_escalate_with(stack: Stack, service: str) -> None:
    seen = json.loads(inside(stack, service, PRIVILEGES))
    for capability in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        assert int(seen[capability], 16) == 0, seen  # cap_drop: ALL
    assert seen["NoNewPrivs"] == "1", seen  # no-new-privileges: a setuid binary gains nothing
    assert seen["Seccomp"] == "2", seen  # the engine's default seccomp filter
    assert seen["uid"] != 0, seen
    assert seen["setuid0"].startswith("PermissionError"), seen
    assert seen["write_root"].startswith("OSError:30") or seen["write_root"].startswith("PermissionError"), (
        seen
    )
    assert seen["write_app"] != "done" and seen["chroot"] != "done" and seen["raw_socket"] != "done", seen
    assert docker("inspect", stack.container(service), "--format", "{{.HostConfig.ReadonlyRootfs}}") == "true"


# --- logins ------------------------------------------------------------------------------------

GUESSES = [
    "",
    "nachos-deploy:nachos-deploy",
    "nachos-deploy:password",
    "leaf-webchat:leaf-webchat",
    "admin:admin",
]


def test_anonymous_and_guessed_logins_are_refused(stack: Stack) -> None:
    host = stack.nats_url.rpartition("@")[2]

    def refusal(url: str) -> str | None:
        """Why the bus refused the login, None when it accepted it. A login that got no answer at
        all (a busy machine: the connect timed out) is tried again, up to three times."""
        for attempt in range(3):
            try:
                return natsclient.login_refusal(url, timeout=5)
            except BusUnavailable:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    for guess in GUESSES:
        url = f"nats://{guess}@{host}" if guess else f"nats://{host}"
        why = refusal(url)
        assert why is not None, f"the bus's published port accepted {guess or 'an anonymous client'}"
        assert "authorization" in why.lower(), why
    # from inside webchat, where only its sidecar answers: a login there as anyone else is refused too
    script = """
import asyncio, sys, nats
async def main():
    for url in sys.argv[1:]:
        try:
            client = await nats.connect(
                url, allow_reconnect=False, max_reconnect_attempts=1, connect_timeout=2
            )
            print("accepted", url.split("@")[0])
            await client.close()
        except Exception as exc:
            print("refused", type(exc).__name__)
asyncio.run(main())
"""
    urls = [f"nats://{guess}@bus-webchat:4222" for guess in GUESSES[1:4]]
    lines = inside(stack, "webchat", script, *urls).splitlines()
    assert len(lines) == 3 and all(line.startswith("refused") for line in lines), lines


# --- a name is not an identity (last: it stops the filesystem tool) ------------------------------

IMPOSTOR = """
import asyncio, sys, nats
async def main():
    for attempt in range(3):  # webchat's sidecar runs at 0.05 CPU: on a busy machine a connect is slow
        try:
            client = await nats.connect(
                sys.argv[1], name=sys.argv[2], allow_reconnect=False, max_reconnect_attempts=1,
                connect_timeout=10,
            )
            break
        except Exception as exc:
            print("attempt", attempt, type(exc).__name__, exc, file=sys.stderr, flush=True)
    else:
        sys.exit(1)
    print("connected", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    await client.close()
asyncio.run(main())
"""


def test_a_connection_named_like_another_component_does_not_fool_status(stack: Stack) -> None:
    name = docker(
        "inspect",
        stack.container("filesystem"),
        "--format",
        '{{index .Config.Labels "org.nachos-deploy.connection-name"}}',
    )
    assert name == "tool-filesystem_read"
    impostor = subprocess.Popen(
        [
            "docker",
            "exec",
            "-i",
            stack.container("webchat"),
            "python3",
            "-c",
            IMPOSTOR,
            "nats://bus-webchat:4222",
            name,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert impostor.stdout is not None and impostor.stderr is not None
        line = impostor.stdout.readline().strip()
        assert line == "connected", impostor.stderr.read() if impostor.poll() is not None else line
        docker("stop", "-t", "2", stack.container("filesystem"))
        deadline = time.monotonic() + 30
        while True:  # until the sidecar has seen the tool go (its connection closes with the container)
            code, out, _ = cli("status", "-c", str(stack.file), "--json")
            rows = {s["name"]: s for s in json.loads(out)["services"]}
            if code != 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert code == 1, out
        assert not rows["filesystem"]["ok"], rows["filesystem"]
        assert rows["webchat"]["ok"], rows["webchat"]
    finally:
        with contextlib.suppress(Exception):
            impostor.communicate("\n", timeout=10)
