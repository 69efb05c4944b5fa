"""`up` has a running bus re-read a TLS certificate made again while nothing else changed.

nats-server reads its certificate only when it starts or reloads, and a bus whose rendered files did
not change is left running; so `up` sends the running nodes a SIGHUP when the server's files are not
those the bus last read (lifecycle/bus_tls_reload.py). Over the fake target: the reload is asked for
exactly when the certificate was made again (near its end, in this `up` or by a `render` before it),
and never otherwise. On the engine: after the certificate is made again, a TLS client sees the new
certificate's serial from the same container, and the up took the fast path (nothing restarted).
"""

from __future__ import annotations

import datetime
import json
import socket
import ssl
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from nachos_deploy.core.names import TLS_CA, TLS_CA_KEY, TLS_CERT, TLS_KEY, TLS_OWNER
from nachos_deploy.interfaces import api
from nachos_deploy.io import bus_tls
from nachos_deploy.io.stack import prepare
from nachos_deploy.lifecycle import up as algorithm
from tests import certificates
from tests.certificates import Issued
from tests.commands import compose_down, container, docker, nachos
from tests.fake_target import FakeTarget
from tests.natsserver import NatsServer, start_nats_server

MAX_PAYLOAD = 10485760  # the plan's default, which the gate checks on /varz
NEAR_ITS_END = datetime.timedelta(days=bus_tls.SERVER_DAYS + 1)  # every certificate is "near its end"


@pytest.fixture
def hub(tmp_path: Path) -> Iterator[NatsServer]:
    config = f"max_payload: {MAX_PAYLOAD}\nleafnodes {{ listen: 127.0.0.1:-1 }}\n"
    with start_nats_server(tmp_path / "hub", config_text=config) as server:
        yield server


@pytest.fixture
def target(hub: NatsServer, tmp_path: Path) -> Iterator[FakeTarget]:
    document = {"bus": {"auth": False, "tls": {"mode": "on"}}}
    stack = prepare(None, cwd=tmp_path, environ={}, document=document, output=tmp_path / "out")
    fake = FakeTarget(stack, hub, tmp_path / "servers")
    fake.online |= {"gateway", "llm-proxy"}
    try:
        yield fake
    finally:
        fake.close()


def up(target: FakeTarget) -> list[tuple[str, ...]]:
    """One `up`; the calls it made to the target."""
    before = len(target.calls)
    algorithm.up_on(target, timeout=15)
    return target.calls[before:]


def reloads(calls: list[tuple[str, ...]]) -> list[tuple[str, ...]]:
    return [call for call in calls if call[0] == "reload"]


def test_up_reloads_the_running_bus_exactly_when_its_certificate_was_made_again(
    target: FakeTarget, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = target.stack.output_dir / "credentials" / TLS_OWNER / TLS_CERT
    assert reloads(up(target)) == []  # the first up: no bus ran, it reads the files as it starts
    first = served.read_bytes()
    assert reloads(up(target)) == []  # the same files: nothing to re-read

    with monkeypatch.context() as near:  # up makes it again (near its end)
        near.setattr(bus_tls, "RENEW_BEFORE", NEAR_ITS_END)
        calls = up(target)
    assert served.read_bytes() != first
    assert reloads(calls) == [("reload", "bus")]
    names = [call[0] for call in calls]
    assert names.index("reload") < names.index("start_bus")  # before anything starts or is proven

    assert reloads(up(target)) == []  # read once: the next up leaves it alone

    with monkeypatch.context() as near:  # `render` makes it again: the next up still reloads
        near.setattr(bus_tls, "RENEW_BEFORE", NEAR_ITS_END)
        api.write_files(target.stack)
    assert reloads(up(target)) == [("reload", "bus")]

    target.now.pop("bus")  # a bus that is not running reads the files when it starts
    with monkeypatch.context() as near:
        near.setattr(bus_tls, "RENEW_BEFORE", NEAR_ITS_END)
        assert reloads(up(target)) == []
    assert reloads(up(target)) == []


# -- on the engine ---------------------------------------------------------------------------------


def serial_served(url: str) -> int:
    """The serial of the certificate the bus serves at ``url`` (TLS handshake first, as the host's
    clients do; nothing is checked, only read)."""
    parts = urllib.parse.urlsplit(url)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with (
        socket.create_connection((parts.hostname, parts.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname=parts.hostname) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


def own_ca(credentials: Path) -> Issued:
    key = serialization.load_pem_private_key((credentials / TLS_CA_KEY).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return Issued(x509.load_pem_x509_certificate((credentials / TLS_CA).read_bytes()), key)


@pytest.mark.engine
def test_a_certificate_made_again_is_served_by_the_running_bus(engine: str, tmp_path: Path) -> None:
    project = f"h20tlsr-{uuid.uuid4().hex[:6]}"
    document = {
        "project": project,
        "output": "rendered",
        "bus": {"client_port": 0, "monitor_port": 0, "healthcheck_interval": "500ms", "tls": {"mode": "on"}},
        "components": {"gateway": {"enabled": False}, "llm-proxy": {"enabled": False}},
        "state": {"enabled": False},
    }
    (tmp_path / "nachos-deploy.yaml").write_text(yaml.safe_dump(document))
    try:
        first = nachos(tmp_path, "up", "--json", timeout=240)
        assert first.returncode == 0, first.stdout + first.stderr
        url = json.loads(first.stdout)["nats_url"]
        bus = container(project, "bus")
        credentials = tmp_path / "rendered" / "credentials"
        served = credentials / TLS_OWNER / TLS_CERT
        original = x509.load_pem_x509_certificate(served.read_bytes()).serial_number
        assert serial_served(url) == original
        started = docker("inspect", "-f", "{{.State.StartedAt}}", bus)
        # The certificate nears its end (10 days left: up makes a new one 30 days before); the
        # rendered files stay as they are, so this up takes the fast path and recreates nothing.
        tls = prepare(tmp_path / "nachos-deploy.yaml", cwd=tmp_path, environ={}).plan.bus.tls
        assert tls is not None
        ending = certificates.issue(own_ca(credentials), sorted(bus_tls.wanted_names(tls)), days=10)
        ending.write(served, credentials / TLS_OWNER / TLS_KEY)
        again = nachos(tmp_path, "up", "--json", timeout=240)
        assert again.returncode == 0, again.stdout + again.stderr
        remade = x509.load_pem_x509_certificate(served.read_bytes()).serial_number
        assert remade not in (original, ending.cert.serial_number)  # up made a new one
        # the same container, never restarted, serves it (a reload is done within milliseconds of
        # the signal; the poll only spares a loaded machine's scheduler)
        assert container(project, "bus") == bus
        assert docker("inspect", "-f", "{{.State.StartedAt}}", bus) == started
        deadline = time.monotonic() + 3
        while serial_served(url) != remade and time.monotonic() < deadline:
            time.sleep(0.1)
        assert serial_served(url) == remade
    finally:
        compose_down(project)
