"""The HTTPS ingress on a real engine (issue 20, part 1): Caddy in front of a webhook channel.

The whatsapp channel here is a small HTTP server that logs every request it gets, so that what the
ingress forwards, and what it must not, is seen from the channel's side: the route answered by the
channel, an unknown path 404 at the ingress with nothing in the channel's log, a body over the
channel's limit 413 with nothing of it in the log, TLS below 1.2 refused, and the ingress unable to
reach the bus, a sidecar or another component. Then `down` and `up` again: the certificates kept.
"""

from __future__ import annotations

import http.client
import json
import re
import socket
import ssl
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from nachos_deploy.core.ingress import CHANNEL_IDLE, ROOT_CERT_FILE, WHATSAPP_MAX_BODY, WHATSAPP_PATH
from tests.commands import container, docker, nachos
from tests.ports import free_port
from tests.probe_module import KEEP_ALIVE_TIMEOUT

PYTHON = "nachos-deploy/python:3.11"
SECRETS = {"WHATSAPP_TOKEN": "t", "WHATSAPP_PHONE_NUMBER_ID": "1", "WHATSAPP_VERIFY_TOKEN": "v"}
# The channel: logs method, path, body size and the ingress's port of every request; answers Meta's
# handshake (which `up` proves) as whatsapp does, and anything else 200 with the path it got. It keeps
# a connection for the next request and closes it once idle for 5 s, as node:http (the real
# channel's server) does by default.
CHANNEL = f"""
import http.server, os, urllib.parse
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = {KEEP_ALIVE_TIMEOUT}
    def handle_one(self):
        size = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(size) if size else b""
        print("GOT", self.command, self.path, len(body), "from", self.client_address[1], flush=True)
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        answer = ("channel " + self.path).encode()
        if query.get("hub.verify_token") == os.environ["WHATSAPP_VERIFY_TOKEN"]:
            answer = query.get("hub.challenge", "").encode()
        self.send_response(200)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
    do_GET = do_POST = handle_one
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["WHATSAPP_HTTP_PORT"])), H).serve_forever()
"""
# Another component beside it, serving HTTP too: the ingress must not reach it.
OTHER = (
    "import http.server as h\n"
    "h.ThreadingHTTPServer(('0.0.0.0', 8000), h.SimpleHTTPRequestHandler).serve_forever()"
)


@dataclass
class Stack:
    folder: Path
    project: str
    http_port: int
    https_port: int

    @property
    def root(self) -> Path:
        return self.folder / ".nachos" / ROOT_CERT_FILE

    def container(self, service: str) -> str:
        return container(self.project, service)

    def channel_log(self) -> str:
        return docker("logs", self.container("whatsapp"))

    def logs(self) -> str:
        """The ingress's and the channel's last lines, both streams: why a route answered otherwise
        (Caddy logs a failed proxying at its WARN level and above, on stderr)."""
        parts = []
        for service in ("ingress", "whatsapp"):
            done = subprocess.run(
                ["docker", "logs", "--tail", "40", self.container(service)],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=60,
            )
            parts.append(f"--- {service}:\n{done.stdout}")
        return "\n".join(parts)

    def https(self, method: str, path: str, body: bytes | Iterable[bytes] | None = None) -> tuple[int, bytes]:
        context = ssl.create_default_context(cafile=str(self.root))
        connection = http.client.HTTPSConnection("localhost", self.https_port, context=context, timeout=30)
        try:
            connection.request(method, path, body=body, encode_chunked=not isinstance(body, bytes | None))
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def _document(project: str, http_port: int, https_port: int) -> dict[str, object]:
    quiet = {"egress": False, "connection_name": False, "healthcheck": False}
    return {
        "project": project,
        "bus": {"client_port": 0, "monitor_port": 0, "healthcheck_interval": "500ms"},
        "ingress": {"http_port": http_port, "https_port": https_port},
        "components": {
            "gateway": {"enabled": False},
            "llm-proxy": {"enabled": False},
            "whatsapp": {"enabled": True, "image": PYTHON, "command": ["python3", "-c", CHANNEL], **quiet},
            "other": {"image": PYTHON, "command": ["python3", "-c", OTHER], **quiet},
        },
    }


@pytest.fixture(scope="module")
def stack(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("ingress")
    project = f"h20i-{uuid.uuid4().hex[:8]}"
    http_port, https_port = free_port(), free_port()
    (folder / "nachos-deploy.yaml").write_text(yaml.safe_dump(_document(project, http_port, https_port)))
    try:
        done = nachos(folder, "up", "--json", "--timeout", "120", timeout=200, env=SECRETS)
        assert done.returncode == 0, done.stdout + done.stderr
        yield Stack(folder, project, http_port, https_port)
    finally:
        removed = nachos(folder, "down", "--volumes", "--yes", timeout=200, env=SECRETS)
        assert removed.returncode == 0, removed.stdout + removed.stderr


def test_the_route_reaches_the_channel_over_https_with_the_written_root(stack: Stack) -> None:
    assert stack.root.read_text().startswith("-----BEGIN CERTIFICATE-----")
    status, body = stack.https("GET", f"{WHATSAPP_PATH}?hub.mode=subscribe&hub.challenge=42")
    expected = f"channel {WHATSAPP_PATH}?hub.mode=subscribe&hub.challenge=42".encode()
    assert (status, body) == (200, expected), stack.logs()
    assert f"GOT GET {WHATSAPP_PATH}?hub.mode=subscribe" in stack.channel_log()
    # An unchanged up reads the root again only when the file has gone (it is the same container's).
    written = stack.root.read_text()
    stack.root.unlink()
    done = nachos(stack.folder, "up", "--json", "--timeout", "60", timeout=200, env=SECRETS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert json.loads(done.stdout)["unchanged"] is True
    assert stack.root.read_text() == written


def test_any_other_path_is_404_at_the_ingress_and_never_forwarded(stack: Stack) -> None:
    marker = uuid.uuid4().hex
    for path in (f"/{marker}", f"{WHATSAPP_PATH}/{marker}", f"/whatsapp/{marker}", f"/?{marker}"):
        status, _ = stack.https("GET", path)
        assert status == 404, path
        status, _ = stack.https("POST", path, b"{}")
        assert status == 404, path
    assert marker not in stack.channel_log()


def test_a_body_over_the_channels_limit_is_413_and_never_reaches_it(stack: Stack) -> None:
    status, _ = stack.https("POST", f"{WHATSAPP_PATH}?fits", b"x" * WHATSAPP_MAX_BODY)
    assert status == 200, stack.logs()
    status, _ = stack.https("POST", f"{WHATSAPP_PATH}?too-big", b"x" * (WHATSAPP_MAX_BODY + 1))
    assert status == 413
    # A body of no announced length (chunked) cannot be refused before it is read: it is refused.
    status, _ = stack.https("POST", f"{WHATSAPP_PATH}?chunked", iter([b"x" * 10]))
    assert status == 411
    log = stack.channel_log()
    assert f"GOT POST {WHATSAPP_PATH}?fits {WHATSAPP_MAX_BODY}" in log
    assert "too-big" not in log
    assert "chunked" not in log


def test_the_ingress_closes_an_idle_connection_to_its_channel_before_the_channel_does(stack: Stack) -> None:
    """The channel closes a connection idle for 5 s. A POST the ingress wrote onto one just as the
    channel closed it was lost, 502 (Caddy retries no POST; reproduced with pauses of 5.000-5.002 s
    between two requests, docs/ingress.md). So the ingress keeps an idle connection to a channel for
    CHANNEL_IDLE s only: a request after a longer pause comes on a new connection, one right after
    the last on the same (the ingress does keep them, which is what could race)."""

    def port_of(tag: str) -> str:
        status, _ = stack.https("POST", f"{WHATSAPP_PATH}?{tag}", b"{}")
        assert status == 200, stack.logs()
        found = re.findall(rf"GOT POST {re.escape(WHATSAPP_PATH)}\?{tag} 2 from (\d+)", stack.channel_log())
        assert len(found) == 1, stack.channel_log()
        return found[0]

    marker = uuid.uuid4().hex[:8]
    first = port_of(f"idle-{marker}-1")
    time.sleep(CHANNEL_IDLE + 1)  # longer than the ingress keeps it, shorter than the channel's 5 s
    second = port_of(f"idle-{marker}-2")
    third = port_of(f"idle-{marker}-3")
    assert second != first, "the ingress sent a request onto a connection idle past CHANNEL_IDLE"
    assert third == second, "the ingress keeps no connection to the channel: this test would see nothing"


def test_a_request_while_its_channel_restarts_is_held_until_it_is_back(stack: Stack) -> None:
    """A channel restarting (an upgrade replaces it, a heal restarts it) is away for a second or two:
    the ingress dials it again until it is back, so the provider's call is answered, not refused
    with 502. The request comes while the channel is stopped, which then starts."""
    channel = stack.container("whatsapp")  # ps -q: only a running container is found
    docker("stop", "-t", "1", channel)
    answers: list[tuple[int, bytes]] = []
    sender = threading.Thread(
        target=lambda: answers.append(stack.https("POST", f"{WHATSAPP_PATH}?held", b"{}"))
    )
    try:
        sender.start()
        time.sleep(0.3)  # the request is at the ingress while the channel is stopped
        started = time.monotonic()
        docker("start", channel)
        sender.join(30)
    finally:
        docker("start", channel)  # the next tests need it, whatever happened here
    assert [status for status, _ in answers] == [200], f"{answers}\n{stack.logs()}"
    assert f"GOT POST {WHATSAPP_PATH}?held 2" in stack.channel_log()
    print(f"answered {time.monotonic() - started:.2f} s after the channel's start")


def test_a_channel_that_stays_away_is_named_by_status_from_the_ingress_502(stack: Stack) -> None:
    """The ingress waits a while for a channel that is away (above), and then answers 502: within the
    time `status` gives a route's proof, so `status` names the route by that answer, not a timeout."""
    channel = stack.container("whatsapp")
    docker("stop", "-t", "1", channel)
    try:
        started = time.monotonic()
        done = nachos(stack.folder, "status", "--json", timeout=120, env=SECRETS)
        took = time.monotonic() - started
    finally:
        docker("start", channel)
        # Back for the next tests: the ingress holds this call until the channel answers.
        assert stack.https("GET", f"{WHATSAPP_PATH}?back")[0] == 200
    problems = json.loads(done.stdout)["problems"]
    assert done.returncode != 0, done.stdout + done.stderr
    assert any("the ingress got no answer from whatsapp (HTTP 502)" in p for p in problems), problems
    print(f"status took {took:.2f} s with the channel stopped")


def test_http_redirects_to_the_published_https_port(stack: Stack) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", stack.http_port, timeout=30)
    try:
        connection.request("GET", WHATSAPP_PATH, headers={"Host": "localhost"})
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert response.status == 308
    assert response.getheader("location") == f"https://localhost:{stack.https_port}{WHATSAPP_PATH}"


def _handshake(port: int, version: ssl.TLSVersion) -> str:
    """The negotiated protocol, or the alert the server answered with."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer the old protocols at all
    with warnings.catch_warnings():  # Python deprecates the old versions: that is what is tested
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = context.maximum_version = version
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:
        try:
            with context.wrap_socket(raw, server_hostname="localhost") as tls:
                return str(tls.version())
        except ssl.SSLError as exc:
            return exc.reason or str(exc)


def test_tls_below_1_2_is_refused_by_the_ingress(stack: Stack) -> None:
    assert _handshake(stack.https_port, ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert _handshake(stack.https_port, ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        # The server's alert: this client did offer the version (not "no protocols available").
        assert _handshake(stack.https_port, old) == "TLSV1_ALERT_PROTOCOL_VERSION"


def _addresses(name: str) -> list[str]:
    inspected = json.loads(docker("inspect", name))[0]
    return [n["IPAddress"] for n in inspected["NetworkSettings"]["Networks"].values() if n["IPAddress"]]


def _reached(ingress: str, targets: list[tuple[str, int]]) -> set[tuple[str, int]]:
    """Which ``address:port`` answer a connection from inside the ingress with any byte (a NATS
    server sends its INFO, an HTTP server its answer to the request sent): busybox nc, all at once;
    addresses, not names, which the static busybox cannot look up. A port that is filtered or refused
    answers nothing."""
    request = "printf 'GET / HTTP/1.0\\r\\n\\r\\n'"
    first_byte = "2>/dev/null | head -c 1 | wc -c"
    jobs = " ".join(
        f"( echo {address}:{port}:$({request} | timeout 8 nc {address} {port} {first_byte}) ) &"
        for address, port in targets
    )
    done = subprocess.run(
        ["docker", "exec", ingress, "sh", "-c", f"{jobs} wait"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    answered = set()
    for line in done.stdout.split():
        address, port, count = line.rsplit(":", 2)
        if count.strip() != "0":
            answered.add((address, int(port)))
    assert len(done.stdout.split()) == len(targets), done.stdout + done.stderr
    return answered


def test_the_ingress_reaches_its_channel_and_nothing_else(stack: Stack) -> None:
    ingress = stack.container("ingress")
    networks = json.loads(docker("inspect", ingress))[0]["NetworkSettings"]["Networks"]
    assert sorted(name.removeprefix(f"{stack.project}_") for name in networks) == [
        "ingress-public",
        "whatsapp-ingress",
    ]
    channel = json.loads(docker("inspect", stack.container("whatsapp")))[0]["NetworkSettings"]["Networks"]
    control = (channel[f"{stack.project}_whatsapp-ingress"]["IPAddress"], 3002)
    forbidden = {
        (address, port): service
        for service, ports in (
            ("bus", (4222, 8222)),
            ("bus-ports", (4222,)),
            ("bus-whatsapp", (4222, 8222)),
            ("bus-other", (4222,)),
            ("other", (8000,)),
            ("whatsapp", (3002,)),  # its other addresses: only the shared network leads to it
        )
        for address in _addresses(stack.container(service))
        if (address, 3002) != control
        for port in ports
    }
    reached = _reached(ingress, [control, *forbidden])
    assert control in reached  # the check can see a connection
    assert not {forbidden[target] for target in reached - {control}}, (
        f"the ingress ({_addresses(ingress)}) reaches {sorted(reached - {control})}"
    )
    # The only services on the ingress's bridge and on its network to the channel.
    for network, members in (("ingress-public", ["ingress"]), ("whatsapp-ingress", ["ingress", "whatsapp"])):
        inspected = json.loads(docker("network", "inspect", f"{stack.project}_{network}"))[0]
        assert inspected["Internal"] is (network != "ingress-public")
        assert sorted(c["Name"].split("-")[-2] for c in inspected["Containers"].values()) == members


def test_the_ingress_is_hardened(stack: Stack) -> None:
    inspected = json.loads(docker("inspect", stack.container("ingress")))[0]
    host = inspected["HostConfig"]
    assert inspected["Config"]["User"] == "61003:61003"
    assert host["ReadonlyRootfs"] is True
    assert host["CapDrop"] == ["ALL"]
    assert "no-new-privileges:true" in host["SecurityOpt"]
    assert host["Memory"] > 0 and host["PidsLimit"] > 0
    assert host["LogConfig"]["Config"]  # bounded


def test_certificates_survive_down_and_up(stack: Stack) -> None:
    before = stack.root.read_text()
    served = _served_certificate(stack.https_port)
    done = nachos(stack.folder, "down", timeout=200, env=SECRETS)
    assert done.returncode == 0, done.stdout + done.stderr
    started = time.monotonic()
    done = nachos(stack.folder, "up", "--json", "--timeout", "120", timeout=200, env=SECRETS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert time.monotonic() - started < 120
    assert stack.root.read_text() == before
    assert _served_certificate(stack.https_port) == served
    assert stack.https("GET", WHATSAPP_PATH)[0] == 200


def _served_certificate(port: int) -> bytes:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with (
        socket.create_connection(("127.0.0.1", port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        certificate = tls.getpeercert(binary_form=True)
    assert certificate is not None
    return certificate
