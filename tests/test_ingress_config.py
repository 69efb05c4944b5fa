"""The ingress's configuration, plan and rendering (issue 20, part 1), without an engine: when it is on,
what it routes, the errors for bad input, the Caddyfile, and the check of the user's certificate files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nachos_deploy.core.catalog import Role
from nachos_deploy.core.errors import ConfigError, ExitCode
from nachos_deploy.core.ingress import CHANNEL_HOLD, CHANNEL_IDLE, IngressPlan
from nachos_deploy.io.ingress_tls import check_files
from nachos_deploy.io.stack import Stack, prepare
from nachos_deploy.web import webhooks
from tests import certificates
from tests.probe_module import KEEP_ALIVE_TIMEOUT

WEBHOOK_TOML = """
[nachos]
name = "t"
version = "1.0"
[llm]
provider = "anthropic"
model = "m"
[security]
mode = "standard"
{channels}
"""


def stack(tmp_path: Path, document: dict[str, object], channels: str = "") -> Stack:
    (tmp_path / "nachos-deploy.yaml").write_text(yaml.safe_dump(document))
    if channels:
        (tmp_path / "nachos.toml").write_text(WEBHOOK_TOML.format(channels=channels))
    return prepare(tmp_path / "nachos-deploy.yaml", cwd=tmp_path, environ={})


def refused(tmp_path: Path, document: dict[str, object], channels: str = "") -> str:
    with pytest.raises(ConfigError) as caught:
        stack(tmp_path, document, channels)
    assert caught.value.exit_code == ExitCode.CONFIG
    message = str(caught.value)
    assert "\n" not in message.strip()  # one paragraph
    return message


WHATSAPP = {"components": {"whatsapp": {"enabled": True}}}


def ingress_of(tmp_path: Path, document: dict[str, object], channels: str = "") -> IngressPlan:
    plan = stack(tmp_path, document, channels).plan
    assert plan.ingress is not None
    return plan.ingress


def test_off_without_a_webhook_channel_and_on_with_one(tmp_path: Path) -> None:
    assert stack(tmp_path, {}).plan.ingress is None
    ingress = ingress_of(tmp_path, WHATSAPP)
    assert (ingress.tls, ingress.domain, ingress.host_ip) == ("internal", None, "127.0.0.1")
    assert (ingress.http_port, ingress.https_port, ingress.root_cert_file) == (80, 443, "ingress-root.crt")
    [route] = ingress.routes
    assert (route.channel, route.path, route.upstream_port, route.max_body) == (
        "whatsapp",
        "/whatsapp/webhook",
        3002,
        1_000_000,
    )
    assert ingress.public_url(route) == "https://localhost/whatsapp/webhook"
    assert stack(tmp_path, {**WHATSAPP, "ingress": {"enabled": False}}).plan.ingress is None


def test_slack_needs_the_ingress_only_in_http_mode(tmp_path: Path) -> None:
    slack = {"components": {"slack": {"enabled": True}}}
    assert stack(tmp_path, slack).plan.ingress is None  # socket mode, the default
    ingress = ingress_of(tmp_path, slack, '[channels.slack]\nmode = "http"\n')
    assert [(r.channel, r.path, r.upstream_port) for r in ingress.routes] == [
        ("slack", "/slack/events", 3005)
    ]
    env = {
        v.name: v.value
        for v in stack(tmp_path, slack, '[channels.slack]\nmode = "http"\n')
        .plan.component("slack")
        .environment
    }
    assert env["SLACK_HTTP_PORT"] == "3005"


def test_the_plan_places_and_wires_the_ingress(tmp_path: Path) -> None:
    plan = stack(tmp_path, {**WHATSAPP, "ingress": {"domain": "hooks.example.com"}}).plan
    assert plan.ingress is not None
    names = [c.name for c in plan.components]
    assert names[-1] == "ingress" and names.index("whatsapp") < names.index("ingress")
    ingress = plan.component("ingress")
    assert ingress.role is Role.INGRESS and ingress.sidecar is None and ingress.connection_name is None
    assert ingress.networks == ("ingress-public", "whatsapp-ingress")
    assert ingress.user == "61003:61003" and ingress.hardening.read_only and ingress.limits.memory
    assert [(p.host_ip, p.published, p.target) for p in ingress.ports] == [
        ("0.0.0.0", 80, 8080),
        ("0.0.0.0", 443, 8443),
    ]
    whatsapp = plan.component("whatsapp")
    assert "whatsapp-ingress" in whatsapp.networks and "whatsapp-link" in whatsapp.networks
    env = {v.name: v.value for v in whatsapp.environment}
    assert (env["WHATSAPP_HTTP_PORT"], env["CHANNEL_WHATSAPP_WEBHOOK_PATH"]) == ("3002", "/whatsapp/webhook")
    assert dict(plan.networks)["whatsapp-ingress"] is True and dict(plan.networks)["ingress-public"] is False
    # No other service on either of its networks, and it is on no network of the bus set.
    for service in plan.services:
        if service.name not in ("ingress", "whatsapp"):
            assert not {"ingress-public", "whatsapp-ingress"} & set(service.networks), service.name
    assert "ingress-data" in plan.volumes
    assert plan.ingress.tls == "acme" and plan.ingress.public_url(plan.ingress.routes[0]) == (
        "https://hooks.example.com/whatsapp/webhook"
    )


def test_the_caddyfile_routes_only_the_channels_paths(tmp_path: Path) -> None:
    files = stack(tmp_path, {**WHATSAPP, "ingress": {"https_port": 8443}}).files
    caddyfile = files["Caddyfile"]
    assert "admin off" in caddyfile and "protocols tls1.2 tls1.3" in caddyfile
    assert "@whatsapp path /whatsapp/webhook\n" in caddyfile
    assert "reverse_proxy whatsapp:3002" in caddyfile and caddyfile.count("reverse_proxy") == 1
    assert "max_size 1000000" in caddyfile and "respond @oversized 413" in caddyfile
    assert "redir https://{host}:8443{uri} 308" in caddyfile
    assert caddyfile.rstrip().endswith("handle {\n\t\trespond 404\n\t}\n}")
    assert "org.nachos-deploy.config-hash" in files["docker-compose.yml"].split("  ingress:")[1]


def test_a_channel_away_is_held_for_less_than_a_routes_proof_waits(tmp_path: Path) -> None:
    """The ingress dials a channel that is away again for CHANNEL_HOLD, then answers 502; `up` and
    `status` wait longer for one call, so they name such a channel by that 502, not a timeout."""
    caddyfile = stack(tmp_path, WHATSAPP).files["Caddyfile"]
    assert f"lb_try_duration {CHANNEL_HOLD}s\n\t\t\tlb_try_interval 250ms" in caddyfile
    assert 0 < CHANNEL_HOLD < webhooks.ATTEMPT_TIMEOUT


def test_every_route_drops_an_idle_connection_before_its_channel_does(tmp_path: Path) -> None:
    """A request written onto a connection the channel is closing is lost (a 502 Caddy does not retry
    for a POST): the ingress closes idle connections first (the engine test: tests/test_ingress.py)."""
    channels = '[channels.slack]\nmode = "http"\n'
    document = {"components": {name: {"enabled": True} for name in ("whatsapp", "slack", "webchat")}}
    caddyfile = stack(tmp_path, document, channels).files["Caddyfile"]
    routes = caddyfile.split("reverse_proxy ")[1:]
    assert len(routes) == 3
    for route in routes:
        assert f"transport http {{\n\t\t\t\tkeepalive {CHANNEL_IDLE}s\n\t\t\t}}" in route.split("\n\t\t}")[0]
    assert 0 < CHANNEL_IDLE <= KEEP_ALIVE_TIMEOUT - 2  # room for a loaded host's late timer


def test_whatsapp_webhook_path_comes_from_nachos_toml(tmp_path: Path) -> None:
    channels = '[channels.whatsapp]\nwebhook_path = "/hooks/wa"\n'
    ingress = ingress_of(tmp_path, WHATSAPP, channels)
    assert ingress.routes[0].path == "/hooks/wa"


@pytest.mark.parametrize(
    ("ingress", "expected"),
    [
        ({"domain": "Hooks.Example.com"}, "ingress.domain: must be a fully qualified domain name"),
        ({"domain": "https://hooks.example.com"}, "ingress.domain: must be a fully qualified domain name"),
        ({"domain": "10.0.0.1"}, "ingress.domain: must be a fully qualified domain name"),
        ({"domain": "h.example.com", "email": "ops.example.com"}, "ingress.email: must be an email address"),
        ({"tls": "files"}, "tls is files but cert_file and key_file are not both set"),
        ({"tls": "files", "cert_file": "c.pem"}, "tls is files but cert_file and key_file are not both set"),
        ({"tls": "acme"}, "tls is acme but domain is not set"),
        ({"cert_file": "c.pem", "key_file": "k.pem"}, "used by tls: files only"),
        ({"email": "a@b.c"}, "used by tls: acme only"),
        (
            {"domain": "h.example.com", "acme_ca": "http://ca/dir"},
            "ingress.acme_ca: must be an ACME directory URL",
        ),
        ({"http_port": 8443, "https_port": 8443}, "http_port and https_port must differ"),
        ({"https_port": 0}, "ingress.https_port: must be a port number from 1 to 65535"),
        ({"enabled": "sometimes"}, "ingress.enabled: must be auto"),
        ({"host_ip": "localhost"}, "ingress.host_ip: must be an IP address"),
    ],
)
def test_bad_ingress_settings_are_refused_by_key(
    tmp_path: Path, ingress: dict[str, object], expected: str
) -> None:
    assert expected in refused(tmp_path, {**WHATSAPP, "ingress": ingress})


def test_colliding_webhook_paths_are_refused(tmp_path: Path) -> None:
    document = {"components": {"whatsapp": {"enabled": True}, "webchat": {"enabled": True}}}
    message = refused(tmp_path, document, '[channels.whatsapp]\nwebhook_path = "/webchat/hook"\n')
    assert "webhook paths of webchat (/webchat and below) and whatsapp (/webchat/hook) collide" in message
    assert "channels.whatsapp.webhook_path" in message


def test_a_bad_webhook_path_is_refused(tmp_path: Path) -> None:
    message = refused(tmp_path, WHATSAPP, '[channels.whatsapp]\nwebhook_path = "/a/../b"\n')
    assert "channels.whatsapp.webhook_path in nachos.toml is '/a/../b'" in message


def test_enabled_without_a_webhook_channel_is_refused(tmp_path: Path) -> None:
    assert "no enabled channel receives webhooks" in refused(tmp_path, {"ingress": {"enabled": True}})


def test_its_names_are_reserved(tmp_path: Path) -> None:
    assert "components.ingress" in refused(tmp_path, {"components": {"ingress": {"image": "x"}}})
    message = refused(tmp_path, {"components": {"x": {"image": "x", "networks": ["whatsapp-ingress"]}}})
    assert "nachos-deploy's own" in message


def _files(tmp_path: Path, name: str, *, days: int = 30, other_key: bool = False) -> tuple[Path, Path]:
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    certificates.issue(None, [name], days=days, issued_days_ago=60).write(cert_file, key_file)
    if other_key:
        key_file.write_bytes(certificates.issue(None, [name]).key_pem)
    return cert_file, key_file


FILES = {
    **WHATSAPP,
    "ingress": {
        "domain": "hooks.example.com",
        "tls": "files",
        "cert_file": "cert.pem",
        "key_file": "key.pem",
    },
}


def test_the_users_certificate_files_are_checked(tmp_path: Path) -> None:
    ingress = ingress_of(tmp_path, FILES)
    mounts = {m.target: m.source for m in stack(tmp_path, FILES).plan.component("ingress").mounts}
    assert mounts["/etc/caddy/tls/cert.pem"] == "../cert.pem"
    cert, key = _files(tmp_path, "hooks.example.com")
    assert "matches its key" in check_files(ingress, cert, key)
    with pytest.raises(ConfigError, match="cannot be read"):
        check_files(ingress, tmp_path / "missing.pem", key)
    cert, key = _files(tmp_path, "hooks.example.com", other_key=True)
    with pytest.raises(ConfigError, match=r"ingress.key_file .* is not the key of the certificate"):
        check_files(ingress, cert, key)
    cert, key = _files(tmp_path, "hooks.example.com", days=-1)
    with pytest.raises(ConfigError, match=r"ingress.cert_file .* expired on"):
        check_files(ingress, cert, key)
    cert, key = _files(tmp_path, "other.example.com")
    with pytest.raises(ConfigError, match=r"is for other.example.com, not for hooks.example.com"):
        check_files(ingress, cert, key)
