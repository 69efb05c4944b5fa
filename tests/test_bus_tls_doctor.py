"""What `doctor` says of the bus's TLS files (bus.tls): its `bus tls` check, without an engine.

The certificates are made here (tests/certificates.py), or by nachos-deploy's own CA and then
replaced here by ones that are near their end, lack a name or have another key. A user's files that
`up` refuses, or that clients trusting bus.tls.ca_file would refuse, fail; what works today but not
for long warns; nachos-deploy's own files out of date warn with `up` as the fix.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from nachos_deploy.core.names import TLS_CA, TLS_CA_KEY, TLS_CERT, TLS_KEY, TLS_OWNER
from nachos_deploy.interfaces.cli import app
from nachos_deploy.io import bus_tls, bus_tls_check
from nachos_deploy.io.stack import Stack, prepare
from nachos_deploy.lifecycle import doctor
from tests import certificates
from tests.certificates import Issued


def deploy(folder: Path, tls: dict[str, Any]) -> Path:
    document = {
        "project": "h20tlsdoc",
        "output": "rendered",
        "bus": {"client_port": 0, "monitor_port": 0, "tls": {"mode": "on", **tls}},
        "components": {"gateway": {"enabled": False}, "llm-proxy": {"enabled": False}},
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nachos-deploy.yaml").write_text(yaml.safe_dump(document))
    return folder / "nachos-deploy.yaml"


def stack_of(folder: Path, **tls: Any) -> Stack:
    return prepare(deploy(folder, tls), cwd=folder, environ={})


def found(stack: Stack) -> list[doctor.Check]:
    return [check for check in doctor._bus_tls(stack) if check.name == "bus tls"]


def levels(stack: Stack) -> list[str]:
    return [check.level for check in found(stack)]


def said(stack: Stack) -> str:
    return " ".join(" ".join(f"{c.detail} {c.fix}" for c in found(stack)).split())


def own_ca(stack: Stack) -> Issued:
    """nachos-deploy's CA of this output folder, to sign replacements of its server certificate."""
    credentials = stack.output_dir / "credentials"
    key = serialization.load_pem_private_key((credentials / TLS_CA_KEY).read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return Issued(x509.load_pem_x509_certificate((credentials / TLS_CA).read_bytes()), key)


def test_nothing_is_said_when_tls_is_off(tmp_path: Path) -> None:
    stack = prepare(deploy(tmp_path, {"mode": "off"}), cwd=tmp_path, environ={})
    assert doctor._bus_tls(stack) == []


def test_nachos_deploys_own_files_pass_and_warn_when_up_must_make_them_again(tmp_path: Path) -> None:
    stack = stack_of(tmp_path, names=["bus.example.net"])
    assert levels(stack) == ["pass"] and "not made yet" in said(stack)
    bus_tls.ensure(stack.output_dir, stack.plan)
    assert levels(stack) == ["pass"]
    assert "bus.example.net" in said(stack) and socket.gethostname().lower() in said(stack)
    server = stack.output_dir / "credentials" / TLS_OWNER
    wanted = sorted(bus_tls.wanted_names(stack.plan.bus.tls))  # type: ignore[arg-type]

    certificates.issue(own_ca(stack), wanted, days=10).write(server / TLS_CERT, server / TLS_KEY)
    assert levels(stack) == ["warn"]
    assert "ends on" in said(stack) and "in 9 days" in said(stack) and "nachos-deploy up" in said(stack)

    certificates.issue(own_ca(stack), wanted, days=-1, issued_days_ago=30).write(
        server / TLS_CERT, server / TLS_KEY
    )
    assert levels(stack) == ["warn"] and "expired on" in said(stack)

    fewer = [name for name in wanted if name != "bus.example.net"]
    certificates.issue(own_ca(stack), fewer, days=300).write(server / TLS_CERT, server / TLS_KEY)
    assert levels(stack) == ["warn"] and "but clients use" in said(stack) and "bus.example.net" in said(stack)

    other = certificates.issue(own_ca(stack), wanted, days=300)
    certificates.issue(own_ca(stack), wanted, days=300).write(server / TLS_CERT)
    (server / TLS_KEY).write_bytes(other.key_pem)
    assert levels(stack) == ["warn"] and f"{TLS_KEY} is not its key" in said(stack)

    stranger = certificates.authority("someone else's CA")
    certificates.issue(stranger, wanted, days=300).write(server / TLS_CERT, server / TLS_KEY)
    assert levels(stack) == ["warn"] and "not signed by the CA" in said(stack)

    bus_tls.ensure(stack.output_dir, stack.plan)  # what the next up does
    assert levels(stack) == ["pass"]

    (stack.output_dir / "credentials" / TLS_CA).write_text("not a certificate")
    assert levels(stack) == ["warn"] and "makes a new CA" in said(stack)


def users_files(folder: Path, *, days: int = 300, sans: tuple[str, ...] = ("bus.example.net",)) -> Issued:
    """A user's CA (ca.pem) and a server certificate it signs (bus.pem, bus-key.pem)."""
    ca = certificates.authority("users CA", days=365)
    ca.write(folder / "ca.pem")
    certificates.issue(ca, sans, days=days, issued_days_ago=10).write(
        folder / "bus.pem", folder / "bus-key.pem"
    )
    return ca


USERS = {"cert_file": "bus.pem", "key_file": "bus-key.pem", "ca_file": "ca.pem"}


def test_a_users_files_fail_as_up_would_refuse_them_and_warn_before_they_end(tmp_path: Path) -> None:
    users_files(tmp_path)
    stack = stack_of(tmp_path, names=["bus.example.net"], **USERS)
    assert levels(stack) == ["pass"]
    assert "matches its key" in said(stack) and "signed by a CA in" in said(stack)

    users_files(tmp_path, days=10)
    assert levels(stack) == ["warn"] and "in 9 days" in said(stack) and "bus.tls.cert_file" in said(stack)

    users_files(tmp_path)
    named = stack_of(tmp_path, names=["bus.example.net", "nats.example.net"], **USERS)
    assert levels(named) == ["warn"] and "not for nats.example.net (bus.tls.names)" in said(named)

    users_files(tmp_path)
    certificates.authority("another CA", days=365).write(tmp_path / "ca.pem")  # clients trust the wrong CA
    assert levels(stack) == ["fail"] and "is not signed by a CA in bus.tls.ca_file" in said(stack)

    users_files(tmp_path)
    (tmp_path / "bus-key.pem").write_bytes(certificates.issue(None, ["x"]).key_pem)
    assert (
        levels(stack) == ["fail"] and "bus.tls.key_file" in said(stack) and "is not the key of" in said(stack)
    )

    users_files(tmp_path)
    bus_tls.ensure(stack.output_dir, stack.plan)  # up copies them into credentials/bus-tls/
    assert levels(stack) == ["pass"]
    users_files(tmp_path)  # renewed since: the bus still serves the copy
    assert levels(stack) == ["warn"] and "the bus serves the copy the last `up` made" in said(stack)


def test_doctor_json_lists_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-docker.sock")  # no engine: fast
    users_files(tmp_path, days=10)
    file = deploy(tmp_path, {"names": ["bus.example.net"], **USERS})
    result = CliRunner().invoke(app, ["doctor", "-c", str(file), "--json"])
    listed = [c for c in json.loads(result.stdout)["checks"] if c["name"] == "bus tls"]
    assert [c["level"] for c in listed] == ["warn"], result.stdout
    assert "ends on" in listed[0]["detail"] and listed[0]["fix"]
    assert bus_tls_check.EXPIRY_WARNING.days == 30
