"""The ingress's ACME mode for real, offline: Let's Encrypt's test CA, Pebble (Debian's package, built
into an image by scripts/build-images.sh), on the ingress's own bridge. The ingress asks it for a
certificate for its domain, Pebble validates over HTTP-01 by calling the domain (the ingress's alias
on that bridge) on the ingress's HTTP port, and the ingress then serves the issued certificate.

The bridge is made before `up` (with Compose's labels, so Compose takes it as the project's own) so
that Pebble listens before the ingress's first request: Caddy waits a minute before its first retry.
"""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from cryptography import x509

from nachos_deploy.core.ingress import HTTP_PORT, PUBLIC_NETWORK, WHATSAPP_PATH
from tests import certificates
from tests.commands import docker, nachos
from tests.ports import free_port

PEBBLE = "nachos-deploy/pebble:latest"
PYTHON = "nachos-deploy/python:3.11"
DOMAIN = "hooks.example.com"
SECRETS = {"WHATSAPP_TOKEN": "t", "WHATSAPP_PHONE_NUMBER_ID": "1", "WHATSAPP_VERIFY_TOKEN": "v"}
CHANNEL = """
import http.server, os, urllib.parse
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        answer = query.get("hub.challenge", "channel").encode()
        self.send_response(200)
        self.send_header("content-length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
    def log_message(self, *args): pass
http.server.ThreadingHTTPServer(("0.0.0.0", int(os.environ["WHATSAPP_HTTP_PORT"])), H).serve_forever()
"""


def _pebble_tls(folder: Path) -> Path:
    """A CA and Pebble's own HTTPS certificate (for the name `pebble`): what Caddy must trust to talk
    ACME to it (ingress.acme_ca_root). Returns the CA's file."""
    ca = certificates.authority("nachos-deploy test Pebble CA")
    pebble = folder / "pebble"
    pebble.mkdir()
    certificates.issue(ca, ["pebble"]).write(pebble / "cert.pem", pebble / "key.pem")
    config = {
        "pebble": {
            "listenAddress": "0.0.0.0:14000",
            "managementListenAddress": "0.0.0.0:15000",
            "certificate": "/etc/pebble/cert.pem",
            "privateKey": "/etc/pebble/key.pem",
            "httpPort": HTTP_PORT,  # HTTP-01: the ingress's HTTP port on its bridge (published: http_port)
            "tlsPort": 5001,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (pebble / "pebble-config.json").write_text(json.dumps(config))
    for path in pebble.iterdir():
        path.chmod(0o644)
    root = folder / "pebble-ca.pem"
    root.write_bytes(ca.cert_pem)
    return root


@dataclass
class Acme:
    folder: Path
    project: str
    https_port: int
    pebble: str
    issuing_root: Path  # Pebble's own root, which signs what it issues


@pytest.fixture
def acme(engine: str, tmp_path: Path) -> Iterator[Acme]:
    project = f"h20a-{uuid.uuid4().hex[:8]}"
    http_port, https_port = free_port(), free_port()
    _pebble_tls(tmp_path)
    quiet = {"egress": False, "connection_name": False, "healthcheck": False}
    document = {
        "project": project,
        "bus": {"client_port": 0, "monitor_port": 0, "healthcheck_interval": "500ms"},
        "ingress": {
            "domain": DOMAIN,
            "acme_ca": "https://pebble:14000/dir",
            "acme_ca_root": "./pebble-ca.pem",
            "email": "ops@example.com",
            "host_ip": "127.0.0.1",
            "http_port": http_port,
            "https_port": https_port,
        },
        "components": {
            "gateway": {"enabled": False},
            "llm-proxy": {"enabled": False},
            "whatsapp": {"enabled": True, "image": PYTHON, "command": ["python3", "-c", CHANNEL], **quiet},
        },
    }
    (tmp_path / "nachos-deploy.yaml").write_text(yaml.safe_dump(document))
    network = f"{project}_{PUBLIC_NETWORK}"
    pebble = f"{project}-pebble"
    try:
        done = nachos(tmp_path, "render", timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        rendered = yaml.safe_load((tmp_path / ".nachos" / "docker-compose.yml").read_text())
        planned = rendered["networks"][PUBLIC_NETWORK]
        subnets = [f"--subnet={c['subnet']}" for c in planned.get("ipam", {}).get("config", [])]
        docker(
            "network", "create", *subnets,
            "--label", f"com.docker.compose.project={project}",
            "--label", f"com.docker.compose.network={PUBLIC_NETWORK}",
            "--label", "com.docker.compose.version=2.0.0",
            network,
        )  # fmt: skip
        docker(
            "run", "-d", "--name", pebble, "--network", network, "--network-alias", "pebble",
            "--user", "61090:61090", "--read-only", "--cap-drop", "ALL",
            "-e", "PEBBLE_VA_NOSLEEP=1", "-e", "PEBBLE_WFE_NONCEREJECT=0",
            "-v", f"{tmp_path / 'pebble'}:/etc/pebble:ro", "-p", "127.0.0.1::15000",
            PEBBLE, "-config", "/etc/pebble/pebble-config.json",
        )  # fmt: skip
        management = int(docker("port", pebble, "15000/tcp").splitlines()[0].rsplit(":", 1)[1])
        issuing_root = tmp_path / "pebble-issuing-root.pem"
        issuing_root.write_bytes(_pebble_root(management))
        # The host trusts Pebble's root as it would Let's Encrypt's: `up` proves the route over it.
        done = nachos(
            tmp_path, "up", "--json", "--timeout", "90", timeout=200,
            env={**SECRETS, "SSL_CERT_FILE": str(issuing_root)},
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr + docker("logs", pebble)
        yield Acme(tmp_path, project, https_port, pebble, issuing_root)
    finally:
        removed = nachos(tmp_path, "down", "--volumes", "--yes", timeout=200, env=SECRETS)
        subprocess.run(["docker", "rm", "-f", pebble], capture_output=True, timeout=60)
        subprocess.run(["docker", "network", "rm", network], capture_output=True, timeout=60)
        assert removed.returncode == 0, removed.stdout + removed.stderr


def _pebble_root(port: int) -> bytes:
    """The root Pebble signs with (made at its start), from its management port."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # Pebble's HTTPS is the test CA's; only the answer matters
    for _ in range(100):
        try:
            with urllib.request.urlopen(
                f"https://127.0.0.1:{port}/roots/0", context=context, timeout=5
            ) as answer:
                body: bytes = answer.read()
                return body
        except OSError:
            time.sleep(0.1)
    raise AssertionError("Pebble's management port never answered")


def test_a_certificate_is_issued_over_http_01_and_served_for_the_domain(acme: Acme) -> None:
    context = ssl.create_default_context(cafile=str(acme.issuing_root))
    with (
        socket.create_connection(("127.0.0.1", acme.https_port), timeout=30) as raw,
        context.wrap_socket(raw, server_hostname=DOMAIN) as tls,  # verified: chain and name
    ):
        served = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True) or b"")
        tls.sendall(f"GET {WHATSAPP_PATH}?hub.challenge=ok HTTP/1.1\r\nHost: {DOMAIN}\r\n\r\n".encode())
        answer = tls.recv(4096)
    names = served.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == [DOMAIN]
    assert "Pebble" in served.issuer.rfc4514_string()
    assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"ok")
    # Pebble validated the order over HTTP-01 (the only challenge the ingress answers).
    log = docker("logs", acme.pebble)
    assert (
        f"Attempting to validate w/ HTTP: http://{DOMAIN}:{HTTP_PORT}/.well-known/acme-challenge/" in log
    ), log
    assert "set VALID by completed challenge" in log and "Issued certificate" in log, log
