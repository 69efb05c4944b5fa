"""TLS on the bus's client port (issue 20, item 4), on the real engine and the real nats-server image.

With bus.tls on, the hub's client port speaks only TLS with a certificate from nachos-deploy's own CA
(credentials/bus-ca.pem): a client trusting that CA logs in and round-trips; one that does not trust
it is refused (certificate verify failed); one that does not speak TLS gets no session. bus-ports is a
TCP relay, so it carries the encrypted bytes as they are: a packet capture on its bridges while a
client logs in with the operator's password never holds that password (and the same capture does
hold a plaintext client's bytes, so it would see a password sent in clear). A rotation serves a new
key from the same CA; a user's own certificate for a domain serves the bus through the Python API.
Without an engine: the rendering, the CA, the checks of a user's files, the outputs, which CA a
tls:// URL is checked against, and that the host's clients send no password to a server that does
not do TLS. The Swarm case is in tests/test_swarm.py (it needs that module's swarm).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import ssl
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml
from cryptography import x509

from nachos_deploy.bus import natsclient, sysrequest, trust
from nachos_deploy.bus.monitor import BusUnavailable
from nachos_deploy.core.errors import ConfigError
from nachos_deploy.core.names import BUS_STACK_FILE, TLS_CA, TLS_CA_KEY, TLS_CERT, TLS_KEY, TLS_OWNER
from nachos_deploy.core.results import Endpoints
from nachos_deploy.interfaces import api, outputs
from nachos_deploy.io import bus_tls
from nachos_deploy.io.stack import prepare
from tests import certificates
from tests.certificates import Issued
from tests.commands import compose_down, container, docker, nachos

ETH_P_ALL = 0x0003


def _deploy(folder: Path, bus: dict[str, Any], project: str = "h20tls") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    document = {
        "project": project,
        "output": "rendered",
        "bus": {"client_port": 0, "monitor_port": 0, "healthcheck_interval": "500ms", **bus},
        "components": {"gateway": {"enabled": False}, "llm-proxy": {"enabled": False}},
    }
    (folder / "nachos-deploy.yaml").write_text(yaml.safe_dump(document))
    return folder / "nachos-deploy.yaml"


# -- without an engine ---------------------------------------------------------------------------


def test_tls_is_on_when_the_port_leaves_the_machine_and_renders_on_the_client_port_only(
    tmp_path: Path,
) -> None:
    loopback = prepare(_deploy(tmp_path / "a", {}), cwd=tmp_path, environ={})
    assert loopback.plan.bus.tls is None and "tls {" not in loopback.files["nats.conf"]
    exposed = prepare(_deploy(tmp_path / "b", {"bind_address": "0.0.0.0"}), cwd=tmp_path, environ={})
    tls = exposed.plan.bus.tls
    assert tls is not None and {"localhost", "127.0.0.1"} <= set(tls.names)
    conf = exposed.files["nats.conf"]
    block = conf[conf.index("tls {") : conf.index("}", conf.index("tls {"))]
    assert 'cert_file: "/etc/nats/tls/server.pem"' in block and 'min_version: "1.2"' in block
    # The leaf port (sidecars) and the monitoring port stay as they were: only the client port.
    assert "leafnodes {\n  port: 7422\n  # " in conf and "tls" not in conf[conf.index("leafnodes") :]
    compose = yaml.safe_load(exposed.files["docker-compose.yml"])["services"]
    mounts = [m["target"] if isinstance(m, dict) else m.split(":")[1] for m in compose["bus"]["volumes"]]
    assert "/etc/nats/tls" in mounts
    forwarder = yaml.safe_load(exposed.files["docker-compose.yml"])["services"]["bus-ports"]
    assert not any("tls" in str(m) for m in forwarder.get("volumes", []))  # it never gets the key
    off = prepare(
        _deploy(tmp_path / "c", {"bind_address": "0.0.0.0", "tls": {"mode": False}}), cwd=tmp_path, environ={}
    )
    assert off.plan.bus.tls is None
    assert any("crosses the network in clear" in w for w in off.warnings)


def test_the_swarm_stack_carries_the_certificate_and_key_as_secrets(tmp_path: Path) -> None:
    path = _deploy(tmp_path, {})
    document = yaml.safe_load(path.read_text())
    path.write_text(yaml.safe_dump({**document, "target": "swarm"}))
    stack = prepare(path, cwd=tmp_path, environ={})
    assert stack.plan.bus.tls is not None  # Swarm publishes on every interface: auto means on
    bus_file = yaml.safe_load(stack.files[BUS_STACK_FILE])
    targets = {s["target"] for s in bus_file["services"]["bus"]["secrets"]}
    assert {"/etc/nats/tls/server.pem", "/etc/nats/tls/server-key.pem"} <= targets
    assert "bus-tls-server-key" in bus_file["secrets"] and "bus-tls-server" in bus_file["secrets"]


def test_own_ca_signs_a_server_certificate_for_the_names_and_keeps_it(tmp_path: Path) -> None:
    stack = prepare(
        _deploy(tmp_path, {"tls": {"mode": "on", "names": ["bus.example.net", "10.1.2.3"]}}),
        cwd=tmp_path,
        environ={},
    )
    ca = bus_tls.ensure(stack.output_dir, stack.plan)
    credentials = stack.output_dir / "credentials"
    assert ca == credentials / TLS_CA
    assert (credentials / TLS_CA_KEY).stat().st_mode & 0o777 == 0o600
    cert_path = credentials / TLS_OWNER / TLS_CERT
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    names = set(sans.get_values_for_type(x509.DNSName)) | {
        str(i) for i in sans.get_values_for_type(x509.IPAddress)
    }
    assert {"localhost", "127.0.0.1", "bus.example.net", "10.1.2.3", socket.gethostname()} <= names
    cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca.read_bytes()))
    before = cert_path.read_bytes()
    bus_tls.ensure(stack.output_dir, stack.plan)
    assert cert_path.read_bytes() == before  # a second up changes nothing (no reload)
    bus_tls.ensure(stack.output_dir, stack.plan, rotate=True)
    assert cert_path.read_bytes() != before  # a rotation makes a new key under the same CA
    assert (credentials / TLS_CA).read_bytes() == ca.read_bytes()


def users_ca(folder: Path) -> tuple[Path, Issued]:
    """A CA of the user's own (as a company's would be), its certificate written to ``ca.pem``."""
    ca = certificates.authority("users CA", days=365)
    ca.write(folder / "ca.pem")
    return folder / "ca.pem", ca


def issue(
    folder: Path,
    ca: tuple[Path, Issued],
    *,
    days: int,
    name: str = "bus",
    sans: tuple[str, ...] = ("bus.example.net",),
) -> tuple[Path, Path]:
    """A server certificate signed by ``ca`` for the DNS names ``sans``, ending in ``days``."""
    issued = certificates.issue(ca[1], sans, days=days, issued_days_ago=400)
    issued.write(folder / f"{name}.pem", folder / f"{name}-key.pem")
    return folder / f"{name}.pem", folder / f"{name}-key.pem"


def test_a_users_files_are_checked_readable_matching_valid_and_named(tmp_path: Path) -> None:
    ca = users_ca(tmp_path / "certs")
    good_cert, good_key = issue(tmp_path / "certs", ca, days=30)
    issue(tmp_path / "certs", ca, days=30, name="other")
    issue(tmp_path / "certs", ca, days=-1, name="old")
    named: dict[str, object] = {"names": ["bus.example.net"]}
    cases: dict[str, tuple[dict[str, object], str]] = {
        "mismatch": (
            {"cert_file": "certs/bus.pem", "key_file": "certs/other-key.pem", **named},
            "is not the key of",
        ),
        "expired": ({"cert_file": "certs/old.pem", "key_file": "certs/old-key.pem", **named}, "expired on"),
        "missing": (
            {"cert_file": "certs/nope.pem", "key_file": "certs/bus-key.pem", **named},
            "cannot be read",
        ),
        # the host's clients connect to 127.0.0.1, which this certificate does not name
        "unnamed": ({"cert_file": "certs/bus.pem", "key_file": "certs/bus-key.pem"}, "not for 127.0.0.1"),
    }
    for label, (files, message) in cases.items():
        stack = prepare(_deploy(tmp_path, {"tls": {"mode": "on", **files}}), cwd=tmp_path, environ={})
        with pytest.raises(ConfigError) as raised:
            bus_tls.ensure(stack.output_dir, stack.plan)
        assert message in str(raised.value) and "bus.tls." in str(raised.value), label
    files = {"cert_file": "certs/bus.pem", "key_file": "certs/bus-key.pem", "ca_file": "certs/ca.pem"}
    stack = prepare(_deploy(tmp_path, {"tls": {"mode": "on", **files, **named}}), cwd=tmp_path, environ={})
    assert bus_tls.ensure(stack.output_dir, stack.plan) == tmp_path / "certs" / "ca.pem"
    copied = stack.output_dir / "credentials" / TLS_OWNER
    assert (copied / TLS_CERT).read_bytes() == good_cert.read_bytes()
    assert (copied / TLS_KEY).read_bytes() == good_key.read_bytes()


def test_validate_names_the_key_and_the_file_of_a_bad_certificate(tmp_path: Path) -> None:
    ca = users_ca(tmp_path / "certs")
    issue(tmp_path / "certs", ca, days=30)
    issue(tmp_path / "certs", ca, days=30, name="other")
    files = {"cert_file": "certs/bus.pem", "key_file": "certs/other-key.pem", "names": ["bus.example.net"]}
    _deploy(tmp_path, {"tls": {"mode": "on", **files}})
    done = nachos(tmp_path, "validate", timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    said = " ".join((done.stdout + done.stderr).split())
    assert "bus.tls.key_file" in said and "other-key.pem" in said and "Traceback" not in said


# -- on the engine -------------------------------------------------------------------------------


class Capture:
    """Every frame on some interfaces, read with a raw AF_PACKET socket (root), until stopped."""

    def __init__(self, interfaces: list[str]) -> None:
        self.data = bytearray()
        self._stop = threading.Event()
        self._sockets = []
        for name in interfaces:
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(ETH_P_ALL))
            sock.bind((name, 0))
            sock.settimeout(0.1)
            self._sockets.append(sock)
        self._threads = [threading.Thread(target=self._read, args=(s,), daemon=True) for s in self._sockets]
        for thread in self._threads:
            thread.start()

    def _read(self, sock: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                frame = sock.recv(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.data += frame

    def stop(self) -> bytes:
        time.sleep(0.3)  # the last frames are on their way
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=2)
        for sock in self._sockets:
            sock.close()
        return bytes(self.data)


def forwarder_bridges(project: str) -> list[str]:
    """The Linux bridges of the networks bus-ports is on (host side and the bus's side)."""
    inspected = json.loads(docker("inspect", container(project, "bus-ports")))[0]
    bridges = []
    for network in inspected["NetworkSettings"]["Networks"].values():
        details = json.loads(docker("network", "inspect", network["NetworkID"]))[0]
        name = details.get("Options", {}).get("com.docker.network.bridge.name")
        bridges.append(name or f"br-{details['Id'][:12]}")
    return bridges


@pytest.fixture(scope="module")
def tls_stack(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("bus-tls")
    project = f"h20tls-{uuid.uuid4().hex[:6]}"
    _deploy(folder, {"tls": {"mode": "on"}}, project)
    try:
        up = nachos(folder, "up", "--json", timeout=240)
        assert up.returncode == 0, up.stdout + up.stderr
        yield {**json.loads(up.stdout), "folder": folder, "project": project}
    finally:
        compose_down(project)


async def _round_trip(url: str, tls: ssl.SSLContext | None, name: str | None = None) -> bytes:
    client = await nats.connect(
        url,
        tls=tls,
        tls_hostname=name,
        allow_reconnect=False,
        connect_timeout=10,
        max_reconnect_attempts=1,
    )
    try:
        subject = f"h20.tls.{secrets.token_hex(4)}"

        async def echo(msg: Any) -> None:
            await msg.respond(msg.data)

        await client.subscribe(subject, cb=echo)
        return bytes((await client.request(subject, b"over tls", timeout=5)).data)
    finally:
        await client.close()


@pytest.mark.engine
def test_a_client_trusting_the_ca_round_trips_and_one_without_it_is_refused(
    tls_stack: dict[str, Any],
) -> None:
    url, ca_file = tls_stack["nats_url"], tls_stack["ca_file"]
    assert url.startswith("tls://nachos-deploy:") and Path(ca_file).is_file()
    trusted = ssl.create_default_context(cafile=ca_file)
    assert asyncio.run(_round_trip(url, trusted)) == b"over tls"
    with pytest.raises(Exception) as refused:
        asyncio.run(_round_trip(url, ssl.create_default_context()))
    assert "CERTIFICATE_VERIFY_FAILED" in repr(refused.value) or "certificate verify failed" in repr(
        refused.value
    )
    # status reads monitoring over the same TLS port as the system user, and says where the CA is
    status = nachos(tls_stack["folder"], "status", "--json", timeout=120)
    assert status.returncode == 0, status.stdout + status.stderr
    assert json.loads(status.stdout)["ca_file"] == ca_file
    env = nachos(tls_stack["folder"], "env", timeout=60)
    assert f"NATS_CA_FILE={ca_file}" in env.stdout and "NATS_URL=tls://" in env.stdout


@pytest.mark.engine
def test_the_forwarder_carries_no_password_and_refuses_plaintext(tls_stack: dict[str, Any]) -> None:
    url, ca_file = tls_stack["nats_url"], tls_stack.get("ca_file")
    parts = urllib.parse.urlsplit(url)
    password = urllib.parse.unquote(parts.password or "").encode()
    assert len(password) > 20
    decoy = f"decoy-{secrets.token_hex(12)}".encode()
    capture = Capture(forwarder_bridges(tls_stack["project"]))
    try:
        # A plaintext client: it gets the INFO (in clear, before any TLS) and sends a CONNECT with a
        # decoy password; it must get no session.
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as plain:
            info = json.loads(plain.recv(4096).removeprefix(b"INFO ").split(b"\r\n")[0])
            plain.sendall(
                b'CONNECT {"user":"nachos-deploy","pass":"' + decoy + b'","verbose":false}\r\nPING\r\n'
            )
            answered = b""
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                got = plain.recv(4096)
                if not got:
                    break
                answered += got
        # The operator logs in with the real password, over TLS.
        trusted = ssl.create_default_context(cafile=ca_file) if ca_file else None
        assert asyncio.run(_round_trip(url, trusted)) == b"over tls"
    finally:
        seen = capture.stop()
    # The capture sees plaintext on these bridges (the decoy went through the relay), and TLS records
    # (0x16 0x03: a handshake), but never the operator's password.
    assert decoy in seen, "the capture did not see the relay's traffic"
    assert password not in seen, "the operator's password crossed the forwarder in clear"
    assert b"\x16\x03" in seen
    # The plaintext client was told TLS is required and got neither +OK nor PONG: the server closed.
    assert info["tls_required"] is True
    assert b"PONG" not in answered and b"+OK" not in answered and b"-ERR" not in answered


def test_the_outputs_give_the_tls_url_and_the_ca_file(tmp_path: Path) -> None:
    endpoints = Endpoints(
        "tls://nachos-deploy:secret@127.0.0.1:4222", "tls://sys:x@127.0.0.1:4222", ca_file="/ca.pem"
    )
    variables = outputs.values(endpoints, "p")
    assert variables == {"NATS_URL": endpoints.nats_url, "NATS_CA_FILE": "/ca.pem", "NACHOS_PROJECT": "p"}
    assert endpoints.as_json()["tls"] is True and endpoints.as_json()["ca_file"] == "/ca.pem"
    step, env = tmp_path / "output", tmp_path / "env"
    outputs.append_github(variables, {"GITHUB_OUTPUT": str(step), "GITHUB_ENV": str(env)})
    assert "ca_file=/ca.pem\n" in step.read_text() and "NATS_CA_FILE=/ca.pem\n" in env.read_text()
    plain = Endpoints("nats://nachos-deploy:secret@127.0.0.1:4222", "nats://sys:x@127.0.0.1:4222")
    assert "NATS_CA_FILE" not in outputs.values(plain, "p") and plain.as_json()["tls"] is False
    plain_step = tmp_path / "plain-output"
    outputs.append_github(outputs.values(plain, "p"), {"GITHUB_OUTPUT": str(plain_step)})
    assert "ca_file=\n" in plain_step.read_text()  # declared by action.yml, so written, empty


def server_certificate(url: str) -> bytes:
    """The DER certificate the bus serves at ``url`` (after NATS's INFO, as a client upgrades)."""
    parts = urllib.parse.urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as raw:
        line = b""
        while not line.endswith(b"\n"):  # the INFO line alone: what follows is the TLS handshake
            line += raw.recv(1)
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with context.wrap_socket(raw, server_hostname=parts.hostname) as tls:
            return tls.getpeercert(binary_form=True) or b""


@pytest.mark.engine
def test_a_rotation_serves_a_new_key_from_the_same_ca(tls_stack: dict[str, Any]) -> None:
    # Last in this file: it changes the passwords the other tests read from the fixture.
    before = server_certificate(tls_stack["nats_url"])
    rotated = nachos(tls_stack["folder"], "credentials", "rotate", timeout=240)
    assert rotated.returncode == 0, rotated.stdout + rotated.stderr
    env = dict(
        line.split("=", 1)
        for line in nachos(tls_stack["folder"], "env", timeout=60).stdout.splitlines()
        if "=" in line
    )
    assert server_certificate(env["NATS_URL"]) != before  # the reload read the new files
    assert env["NATS_CA_FILE"] == tls_stack["ca_file"]  # clients keep their trust file
    trusted = ssl.create_default_context(cafile=env["NATS_CA_FILE"])
    assert asyncio.run(_round_trip(env["NATS_URL"], trusted)) == b"over tls"


class DowngradingServer:
    """Something at the bus's address that says it does not require TLS (a bus with TLS off, or
    someone in between): it sends a plain INFO at once and keeps every byte a client sends it."""

    def __init__(self) -> None:
        self.received = bytearray()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self._listener.settimeout(0.2)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(0.5)
                info = {
                    "server_id": "NFAKE",
                    "tls_required": False,
                    "auth_required": True,
                    "max_payload": 1024,
                }
                conn.sendall(b"INFO " + json.dumps(info).encode() + b"\r\n")
                try:
                    while got := conn.recv(4096):
                        self.received += got
                except OSError:
                    pass

    def close(self) -> None:
        self._listener.close()


def test_the_hosts_clients_never_send_the_password_to_a_server_that_does_not_do_tls(tmp_path: Path) -> None:
    # The host's clients of a tls:// URL do the TLS handshake before anything else, so a server that
    # answers with a plain INFO (nats-py would otherwise send its CONNECT in clear) gets no password.
    server = DowngradingServer()
    secret = f"n{secrets.token_hex(16)}"
    url = f"tls://nachos-deploy:{secret}@127.0.0.1:{server.port}"
    try:
        with pytest.raises(BusUnavailable):
            natsclient.login_refusal(url, timeout=3)
        with pytest.raises(sysrequest.SysRequestError):
            sysrequest.request(url.replace("nachos-deploy", "nachos-system"), "/varz", 3)
    finally:
        time.sleep(0.3)
        server.close()
    assert secret.encode() not in server.received
    assert server.received.startswith(b"\x16\x03")  # each began with a TLS ClientHello


@pytest.mark.engine
def test_a_users_certificate_for_a_domain_serves_the_bus(tmp_path: Path) -> None:
    # Through the Python API (what the pytest fixtures yield): the user's CA and a certificate for
    # bus.example.net alone; the host's clients connect to 127.0.0.1 and check the certificate for
    # the first of bus.tls.names, against the user's CA, which the RunningStack hands on.
    ca = users_ca(tmp_path / "certs")
    cert, key = issue(tmp_path / "certs", ca, days=30)
    tls = {"mode": "on", "names": ["bus.example.net"], "cert_file": str(cert), "key_file": str(key)}
    document = {
        "project": f"h20tlsu-{uuid.uuid4().hex[:6]}",
        "bus": {"client_port": 0, "monitor_port": 0, "tls": {**tls, "ca_file": str(ca[0])}},
        "components": {"gateway": {"enabled": False}, "llm-proxy": {"enabled": False}},
    }
    with api.start(document) as stack:
        assert stack.nats_url.startswith("tls://") and stack.ca_file == str(ca[0])
        assert stack.env["NATS_CA_FILE"] == stack.ca_file
        trusted = ssl.create_default_context(cafile=stack.ca_file)
        assert asyncio.run(_round_trip(stack.nats_url, trusted, "bus.example.net")) == b"over tls"


def test_which_ca_a_tls_url_is_checked_against(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Registered for the address (a stack's endpoints), else $NATS_CA_FILE (what `env` writes, for
    # `bench --url`), else the system's CAs; a nats:// URL gets no TLS at all.
    registered, _ = users_ca(tmp_path / "one")
    from_env, _ = users_ca(tmp_path / "two")
    url = "tls://u:p@127.0.0.1:1"

    def subjects(context: ssl.SSLContext | None) -> list[object]:
        assert context is not None
        return [cert["subject"] for cert in context.get_ca_certs()]

    monkeypatch.delenv("NATS_CA_FILE", raising=False)
    assert trust.context("nats://u:p@127.0.0.1:1") is None
    assert not any("users CA" in str(s) for s in subjects(trust.context(url)))
    monkeypatch.setenv("NATS_CA_FILE", str(from_env))
    assert any("users CA" in str(s) for s in subjects(trust.context(url)))
    trust.trust(url, str(registered), "bus.example.net")
    try:
        context = trust.context(url)
        assert context is not None and context is trust.context(url)  # loaded once
        assert trust.server_name(url) == "bus.example.net"
        # the registered CA wins over $NATS_CA_FILE (same subject, another certificate)
        assert context.get_ca_certs() == ssl.create_default_context(cafile=registered).get_ca_certs()
    finally:
        trust.trust(url, None)
    assert trust.server_name(url) == "127.0.0.1"
