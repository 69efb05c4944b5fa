"""What `doctor`, `validate` and `up` say about the webhook channels before anything starts (issue 20):
the ingress's ports, its domain, whatsapp without its app secret, slack's http mode without its
signing secret."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from nachos_deploy.core.errors import ConfigError
from nachos_deploy.io.stack import Stack, prepare
from nachos_deploy.lifecycle import doctor
from tests.ports import free_port as closed_port

WHATSAPP = {"WHATSAPP_TOKEN": "t", "WHATSAPP_PHONE_NUMBER_ID": "1", "WHATSAPP_VERIFY_TOKEN": "v"}


def stack_of(tmp_path: Path, environ: dict[str, str], **document: Any) -> Stack:
    base: dict[str, Any] = {"project": "h20w-doctor", "state": {"enabled": False}}
    return prepare(document={**base, **document}, output=tmp_path / "out", cwd=tmp_path, environ=environ)


def checks(stack: Stack, environ: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, doctor.Check]:
    for name in ("WHATSAPP_APP_SECRET", "CHANNEL_WHATSAPP_APP_SECRET", "SLACK_SIGNING_SECRET"):
        monkeypatch.delenv(name, raising=False)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    found = [*doctor._ports(stack, engine_up=False), *doctor._webhooks(stack, engine_up=False)]
    return {check.name: check for check in found}


def test_whatsapp_without_an_app_secret_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ports = {"http_port": closed_port(), "https_port": closed_port()}
    stack = stack_of(tmp_path, WHATSAPP, components={"whatsapp": {"enabled": True}}, ingress=ports)
    found = checks(stack, WHATSAPP, monkeypatch)
    assert found["whatsapp webhook"].level == "warn"
    assert "anyone who knows its URL can inject messages" in found["whatsapp webhook"].detail
    assert "WHATSAPP_APP_SECRET" in found["whatsapp webhook"].fix
    assert found["ingress.https_port"].level == "pass" and found["ingress.http_port"].level == "pass"
    signed = checks(stack, {**WHATSAPP, "CHANNEL_WHATSAPP_APP_SECRET": "s"}, monkeypatch)
    assert signed["whatsapp webhook"].level == "pass"


def test_an_ingress_port_taken_by_another_program_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ingress = {"http_port": closed_port(), "https_port": port}
        stack = stack_of(tmp_path, WHATSAPP, components={"whatsapp": {"enabled": True}}, ingress=ingress)
        found = checks(stack, WHATSAPP, monkeypatch)["ingress.https_port"]
    assert (found.level, found.detail) == ("fail", f"127.0.0.1:{port} is in use by another program: the "
                                            "ingress cannot publish it")  # fmt: skip
    assert "--set ingress.https_port=PORT" in found.fix


def test_a_domain_that_does_not_resolve_fails_with_acme(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ingress = {
        "domain": "hooks.nachos-deploy.invalid",
        "http_port": closed_port(),
        "https_port": closed_port(),
    }
    stack = stack_of(tmp_path, WHATSAPP, components={"whatsapp": {"enabled": True}}, ingress=ingress)
    found = checks(stack, WHATSAPP, monkeypatch)["ingress.domain"]
    assert found.level == "fail" and "hooks.nachos-deploy.invalid does not resolve" in found.detail
    assert doctor._domain("localhost", "acme").level == "pass"  # what /etc/hosts resolves: no network
    late = doctor._domain("hooks.nachos-deploy.invalid", "files")
    assert late.level == "warn" and "providers cannot call it" in late.detail


def test_slack_http_mode_needs_its_signing_secret_by_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    slack = {"slack": {"enabled": True, "environment": {"CHANNEL_SLACK_MODE": "http"}}}
    environ = {"SLACK_BOT_TOKEN": "b"}
    ports = {"http_port": closed_port(), "https_port": closed_port()}
    stack = stack_of(tmp_path, environ, components=slack, ingress=ports)
    found = checks(stack, environ, monkeypatch)["slack webhook"]
    assert found.level == "fail" and "SLACK_SIGNING_SECRET is not set" in found.detail
    with pytest.raises(
        ConfigError, match=r"slack needs SLACK_SIGNING_SECRET \(or CHANNEL_SLACK_SIGNING_SECRET\)"
    ):
        stack.require_secrets()
    given = {**environ, "SLACK_SIGNING_SECRET": "s"}
    stack = stack_of(tmp_path, given, components=slack, ingress=ports)
    stack.require_secrets()
    assert checks(stack, given, monkeypatch)["slack webhook"].level == "pass"
    # socket mode (the default) takes no inbound call and needs no signing secret
    socket_mode = stack_of(tmp_path, environ, components={"slack": {"enabled": True}})
    socket_mode.require_secrets()
    assert "slack webhook" not in checks(socket_mode, environ, monkeypatch)
