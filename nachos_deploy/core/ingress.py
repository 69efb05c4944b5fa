"""The HTTPS ingress: Caddy in front of the channels that receive webhooks (issue 20, part 1).

Pure, like the rest of the plan. Whatsapp, slack in ``http`` mode and webchat are called over HTTPS by
the outside world (Meta, Slack, a browser), and nothing else of the stack may be. So the ingress:

- is the only service besides ``bus-ports`` on a published bridge, and that bridge is its own
  (``ingress-public``): sharing ``host-access`` would let it reach the bus through the forwarder;
- reaches each webhook channel over an internal network shared with that channel alone
  (``<channel>-ingress``), and nothing else: no bus, sidecar, state store or other component;
- forwards exactly the channels' own paths, answers every other path 404 itself, and refuses a body
  over the channel's limit with 413 before a byte of it reaches the channel.

What this module decides (routes, ports, names, the certificate mode) the Caddyfile template renders
(templates/Caddyfile.j2); the webhook proofs from the host (``nachos_deploy/web``) read the routes and
:meth:`IngressPlan.public_url`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import PurePath
from typing import Any

from nachos_deploy.core.catalog import Role
from nachos_deploy.core.config import DeployConfig
from nachos_deploy.core.errors import ConfigError

# core/plan.py imports this module inside make_plan only (core/plan_types.py's Plan names
# IngressPlan for type checkers alone), so importing the plan here, at the top, makes no cycle.
from nachos_deploy.core.plan import _relative
from nachos_deploy.core.plan_types import EnvVar, HealthPlan, Limits, Mount, PortPlan, ServicePlan, limits_for

NAME = "ingress"
VOLUME = "ingress-data"  # Caddy's certificates, keys and ACME account: they survive `down`
PUBLIC_NETWORK = "ingress-public"  # the published bridge of the ingress alone
NETWORK_SUFFIX = "-ingress"  # <channel>-ingress: internal, the ingress and that channel only
CADDYFILE = "Caddyfile"  # rendered into the output folder
CADDYFILE_TARGET = "/etc/caddy/Caddyfile"
DATA_DIR = "/data"  # XDG_DATA_HOME: Caddy keeps its storage in /data/caddy
TLS_DIR = "/etc/caddy/tls"  # files mode: the user's certificate and key, read-only
ACME_ROOT_TARGET = "/etc/caddy/acme-ca-root.pem"
# Inside the container: unprivileged ports (no capability needed); the host publishes them on
# ingress.http_port / ingress.https_port (80 / 443 by default).
HTTP_PORT = 8080
HTTPS_PORT = 8443
HEALTH_PORT = 8081  # loopback only: the healthcheck's own listener, never published
CHANNEL_HOLD = 4  # seconds the ingress dials a channel again while it is away (a restart), then 502
# Seconds the ingress keeps an idle connection to a channel for its next request. The channels are
# node:http servers, which close a connection idle for 5 s (keepAliveTimeout); a request the ingress
# writes onto one the channel is closing at that moment is lost (502; Caddy retries no POST). Below
# 5 s with room for a loaded host, the ingress is always the one that closes (docs/ingress.md).
CHANNEL_IDLE = 2
# Where Caddy's internal CA keeps its root certificate (tls internal), under DATA_DIR.
INTERNAL_ROOT = f"{DATA_DIR}/caddy/pki/authorities/local/root.crt"
ROOT_CERT_FILE = "ingress-root.crt"  # in the output folder, written by `up` in internal mode
DEFAULT_MEMORY = 128 * 1024**2
DEFAULT_PIDS = 256
HEALTH_TEST = ("CMD", "wget", "-q", "-O", "/dev/null", f"http://127.0.0.1:{HEALTH_PORT}/")

# The channels that receive HTTP from outside: their port inside their container (set in their
# environment, so the route and the channel cannot disagree) and the largest body each accepts.
WHATSAPP_PORT = 3002  # upstream's default WHATSAPP_HTTP_PORT
SLACK_PORT = 3005  # upstream's own compose file sets SLACK_HTTP_PORT=3005 (Bolt's default is 3000)
WEBCHAT_PORT = 8080  # upstream's generator: channels.webchat.port
WHATSAPP_PATH = "/whatsapp/webhook"
SLACK_PATH = "/slack/events"  # Bolt's events path
WEBCHAT_PATH = "/webchat"  # the UI and everything below it
WHATSAPP_MAX_BODY = 1_000_000  # the channel's own limit (it answers 413 above it)
SLACK_MAX_BODY = 1_000_000
WEBCHAT_MAX_BODY = 1_000_000
_PATH = re.compile(r"^/[A-Za-z0-9._~/-]{0,199}$")


@dataclass(frozen=True)
class WebhookRoute:
    """One path the ingress forwards, to one channel's HTTP port."""

    channel: str  # the component's name
    kind: str  # whatsapp | slack | webchat
    path: str  # exact, except webchat: the path and everything below it
    upstream_port: int  # the channel's HTTP port inside its container (in its environment too)
    max_body: int  # bytes; a larger body is refused with 413 at the ingress
    prefix: bool = False  # whether paths below ``path`` are the channel's too (webchat's UI)

    @property
    def network(self) -> str:
        return f"{self.channel}{NETWORK_SUFFIX}"

    @property
    def matchers(self) -> tuple[str, ...]:
        """Caddy path matchers: the path itself, and everything below it for a prefix route."""
        return (self.path, f"{self.path.rstrip('/')}/*") if self.prefix else (self.path,)


@dataclass(frozen=True)
class IngressPlan:
    service: ServicePlan
    routes: tuple[WebhookRoute, ...]
    tls: str  # acme | internal | files
    domain: str | None
    host_ip: str
    http_port: int  # published on the host
    https_port: int
    root_cert_file: str | None  # internal mode: output-folder-relative file `up` writes the CA root to
    names: tuple[str, ...] = ()  # the names its certificate covers (the site addresses)
    acme_ca: str | None = None
    acme_ca_root: bool = False  # the ACME server's own root is mounted (a private CA such as Pebble)
    email: str | None = None

    @property
    def public_host(self) -> str:
        """The host a provider calls: the domain, else the address the ports are published on."""
        if self.domain:
            return self.domain
        if self.host_ip in ("0.0.0.0", "127.0.0.1", "::", "::1"):
            return "localhost"
        return f"[{self.host_ip}]" if ":" in self.host_ip else self.host_ip

    def public_url(self, route: WebhookRoute) -> str:
        port = "" if self.https_port == 443 else f":{self.https_port}"
        return f"https://{self.public_host}{port}{route.path}"

    @property
    def redirect_port(self) -> str:
        """``:PORT`` for the HTTP→HTTPS redirect when the published HTTPS port is not 443."""
        return "" if self.https_port == 443 else f":{self.https_port}"


def needs_inbound(
    name: str, role: Role, settings_env: Mapping[str, str], document: Mapping[str, Any]
) -> bool:
    """Whether a channel is called over HTTP from outside: whatsapp and webchat always, slack in
    ``http`` mode (``[channels.slack] mode``, or the platform's overlay CHANNEL_SLACK_MODE in the
    component's environment, which wins as it does in the platform's loader)."""
    if role is not Role.CHANNEL:
        return False
    if name in ("whatsapp", "webchat"):
        return True
    if name == "slack":
        return slack_mode(settings_env, document) == "http"
    return False


def slack_mode(settings_env: Mapping[str, str], document: Mapping[str, Any]) -> str:
    mode = settings_env.get("CHANNEL_SLACK_MODE") or _channel_table(document, "slack").get("mode")
    return str(mode) if mode else "socket"


def _channel_table(document: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    channels = document.get("channels")
    table = channels.get(name) if isinstance(channels, Mapping) else None
    return table if isinstance(table, Mapping) else {}


def _port(settings_env: Mapping[str, str], variable: str, default: int, name: str) -> int:
    value = settings_env.get(variable)
    if value is None:
        return default
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise ConfigError(
            f"Invalid configuration: components.{name}.environment.{variable} is {value!r}; the "
            "ingress forwards to that port, so it must be a port number from 1 to 65535 (or leave it "
            f"out: {default})."
        )
    return int(value)


def route_for(name: str, settings_env: Mapping[str, str], document: Mapping[str, Any]) -> WebhookRoute:
    """The route of one webhook channel, from its settings and nachos.toml."""
    if name == "whatsapp":
        where = "components.whatsapp.environment.CHANNEL_WHATSAPP_WEBHOOK_PATH"
        path = settings_env.get("CHANNEL_WHATSAPP_WEBHOOK_PATH")
        if path is None:
            configured = _channel_table(document, "whatsapp").get("webhook_path")
            path = str(configured) if configured is not None else WHATSAPP_PATH
            where = "channels.whatsapp.webhook_path in nachos.toml"
        _check_path(path, where)
        port = _port(settings_env, "WHATSAPP_HTTP_PORT", WHATSAPP_PORT, name)
        return WebhookRoute(name, "whatsapp", path, port, WHATSAPP_MAX_BODY)
    if name == "slack":
        port = _port(settings_env, "SLACK_HTTP_PORT", SLACK_PORT, name)
        return WebhookRoute(name, "slack", SLACK_PATH, port, SLACK_MAX_BODY)
    port = _port(settings_env, "CHANNEL_WEBCHAT_PORT", WEBCHAT_PORT, name)
    return WebhookRoute(name, "webchat", WEBCHAT_PATH, port, WEBCHAT_MAX_BODY, prefix=True)


def route_environment(route: WebhookRoute) -> tuple[tuple[str, str], ...]:
    """What a webhook channel is told explicitly, so that it listens where the route points."""
    if route.kind == "whatsapp":
        return (
            ("WHATSAPP_HTTP_PORT", str(route.upstream_port)),
            ("CHANNEL_WHATSAPP_WEBHOOK_PATH", route.path),
        )
    if route.kind == "slack":
        return (("SLACK_HTTP_PORT", str(route.upstream_port)), ("CHANNEL_SLACK_MODE", "http"))
    return (("CHANNEL_WEBCHAT_PORT", str(route.upstream_port)),)


def _check_path(path: str, where: str) -> None:
    if not _PATH.match(path) or "//" in path or "/../" in f"{path}/" or "/./" in f"{path}/":
        raise ConfigError(
            f"Invalid configuration: {where} is {path!r}; a webhook path must start with '/' and hold "
            "only letters, digits and '.', '_', '~', '-', '/' (no '//', '.' or '..' segment, at most "
            f"200 characters), e.g. {WHATSAPP_PATH}."
        )


def check_collisions(routes: Sequence[WebhookRoute]) -> None:
    """Two channels cannot share a path: the ingress would hand one channel's webhooks to the other."""
    for index, route in enumerate(routes):
        for other in routes[index + 1 :]:
            if _overlaps(route, other) or _overlaps(other, route):
                raise ConfigError(
                    f"Invalid configuration: the webhook paths of {route.channel} ({_shown(route)}) and "
                    f"{other.channel} ({_shown(other)}) collide: the ingress could not tell whose "
                    "webhooks a request carries. Give whatsapp another path "
                    "(channels.whatsapp.webhook_path in nachos.toml, or "
                    "components.whatsapp.environment.CHANNEL_WHATSAPP_WEBHOOK_PATH)."
                )


def _shown(route: WebhookRoute) -> str:
    return f"{route.path} and below" if route.prefix else route.path


def _overlaps(route: WebhookRoute, other: WebhookRoute) -> bool:
    if route.path.rstrip("/") == other.path.rstrip("/"):
        return True
    return route.prefix and other.path.startswith(route.path.rstrip("/") + "/")


def enabled(config: DeployConfig, routes: Sequence[WebhookRoute]) -> bool:
    """``ingress.enabled``: auto means on when an enabled channel needs inbound HTTP."""
    setting = config.ingress.enabled
    return bool(routes) if setting == "auto" else bool(setting)


def tls_mode(config: DeployConfig) -> str:
    ingress = config.ingress
    if ingress.tls is not None:
        return ingress.tls
    return "acme" if ingress.domain else "internal"


def host_ip(config: DeployConfig) -> str:
    """Published on every interface with a domain (a provider must reach it), on loopback without
    one (internal mode: a laptop or CI), unless ingress.host_ip says otherwise."""
    if config.ingress.host_ip is not None:
        return config.ingress.host_ip
    return "0.0.0.0" if config.ingress.domain else "127.0.0.1"


def names(config: DeployConfig) -> tuple[str, ...]:
    """The names the certificate is for: the domain, else localhost and the loopback address (and
    the published address, when it is a specific one), which internal mode can sign for."""
    if config.ingress.domain:
        return (config.ingress.domain,)
    found = ["localhost", "127.0.0.1"]
    address = host_ip(config)
    if address not in ("0.0.0.0", "::", *found):
        found.append(address)
    return tuple(found)


def with_environment(channel: ServicePlan, route: WebhookRoute) -> ServicePlan:
    """A webhook channel with its port and path in its environment (what the deploy file sets wins)."""
    given = {var.name for var in channel.environment}
    extra = tuple(EnvVar(key, value) for key, value in route_environment(route) if key not in given)
    return replace(channel, environment=(*channel.environment, *extra))


def with_network(channel: ServicePlan, route: WebhookRoute) -> ServicePlan:
    """A webhook channel on the network it shares with the ingress alone (its other networks stay)."""
    return replace(channel, networks=tuple(dict.fromkeys((*channel.networks, route.network))))


def plan(
    config: DeployConfig,
    components: Sequence[ServicePlan],
    document: Mapping[str, Any],
    *,
    base_dir: PurePath,
    output_dir: PurePath,
) -> tuple[IngressPlan | None, tuple[ServicePlan, ...]]:
    """The ingress (None when off) and the components with the webhook channels wired to it. A
    channel needing inbound HTTP gets its port and path in its environment even with the ingress
    off (a proxy of the user's own then knows where to send)."""
    routes: list[WebhookRoute] = []
    wired: list[ServicePlan] = []
    for component in components:
        settings = config.components.get(component.name)
        env = dict(settings.environment) if settings is not None else {}
        if component.name in ("whatsapp", "slack", "webchat") and needs_inbound(
            component.name, component.role, env, document
        ):
            route = route_for(component.name, env, document)
            routes.append(route)
            component = with_environment(component, route)
        wired.append(component)
    check_collisions(routes)
    if not enabled(config, routes):
        return None, tuple(wired)
    if not routes:
        raise ConfigError(
            "Invalid configuration: ingress.enabled is true, but no enabled channel receives webhooks "
            '(whatsapp, slack with mode = "http", webchat): the ingress would have nothing to forward. '
            "Enable such a channel, or set ingress.enabled to auto or false."
        )
    by_name = {route.channel: route for route in routes}
    wired = [with_network(c, by_name[c.name]) if c.name in by_name else c for c in wired]
    ingress = _ingress(config, tuple(routes), base_dir=base_dir, output_dir=output_dir)
    return ingress, tuple(wired)


def _ingress(
    config: DeployConfig, routes: tuple[WebhookRoute, ...], *, base_dir: PurePath, output_dir: PurePath
) -> IngressPlan:
    settings = config.ingress
    mode = tls_mode(config)
    address = host_ip(config)
    mounts = [Mount(f"./{CADDYFILE}", CADDYFILE_TARGET, read_only=True), Mount(VOLUME, DATA_DIR)]

    def user_file(path: str, target: str, key: str) -> Mount:
        return Mount(_relative(base_dir / path, output_dir), target, read_only=True, key=key)

    if mode == "files" and settings.cert_file and settings.key_file:
        mounts.append(user_file(settings.cert_file, f"{TLS_DIR}/cert.pem", "ingress.cert_file"))
        mounts.append(user_file(settings.key_file, f"{TLS_DIR}/key.pem", "ingress.key_file"))
    if mode == "acme" and settings.acme_ca_root:
        mounts.append(user_file(settings.acme_ca_root, ACME_ROOT_TARGET, "ingress.acme_ca_root"))
    aliases: tuple[tuple[str, str], ...] = ()
    if settings.domain:
        # Its own name on its bridge: a container there (an ACME test server) reaches it by it.
        aliases = ((PUBLIC_NETWORK, settings.domain),)
    service = ServicePlan(
        name=NAME,
        role=Role.INGRESS,
        image=settings.image,
        command=("caddy", "run", "--config", CADDYFILE_TARGET, "--adapter", "caddyfile"),
        environment=(
            EnvVar("XDG_DATA_HOME", DATA_DIR),
            EnvVar("XDG_CONFIG_HOME", "/tmp/caddy-config"),  # nothing is kept there (persist_config off)
        ),
        networks=(PUBLIC_NETWORK, *(route.network for route in routes)),
        mounts=tuple(mounts),
        ports=(
            PortPlan(address, settings.http_port, HTTP_PORT),
            PortPlan(address, settings.https_port, HTTPS_PORT),
        ),
        healthcheck=HealthPlan(HEALTH_TEST, "2s", "2s", 3),
        user=config.run_as.ingress,
        limits=limits_for(settings.resources, Limits(memory=DEFAULT_MEMORY, pids=DEFAULT_PIDS)),
        placement=tuple(settings.placement),
        aliases=aliases,
    )
    return IngressPlan(
        service=service,
        routes=routes,
        tls=mode,
        domain=settings.domain,
        host_ip=address,
        http_port=settings.http_port,
        https_port=settings.https_port,
        root_cert_file=ROOT_CERT_FILE if mode == "internal" else None,
        names=names(config),
        acme_ca=settings.acme_ca,
        acme_ca_root=mode == "acme" and settings.acme_ca_root is not None,
        email=settings.email,
    )
