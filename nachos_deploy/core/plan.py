"""From a validated configuration to the full list of services, with every default resolved.

Pure: no disk, clock or environment. The plan is what both the renderer and the lifecycle read, so
"which components run, in which order, under which bus connection name" is decided here once.
"""

from __future__ import annotations

import ipaddress
import json
import posixpath
import re
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import PurePath, PurePosixPath
from typing import TYPE_CHECKING, Literal

from nachos_deploy.core import (
    bus_placement,
    catalog,
    log_limits,
    permissions,
    platform_config,
    sidecar_limits,
)
from nachos_deploy.core.catalog import NOT_PLATFORM, Role
from nachos_deploy.core.config import (
    BUS_CHECK_INTERVAL,
    CHECK_INTERVAL,
    ENGINE_POOLS,
    MAX_PAYLOAD_ADVISED,
    TAKEN_NAMES_HINT,
    Component,
    DeployConfig,
    Healthcheck,
    Resources,
)
from nachos_deploy.core.errors import ConfigError
from nachos_deploy.core.permissions import Permissions
from nachos_deploy.core.platform_config import Platform
from nachos_deploy.core.subnets import Member, Subnets, allocate
from nachos_deploy.core.units import duration_seconds, format_size

if TYPE_CHECKING:  # core/ingress.py imports this module; make_plan imports it in turn when it runs
    from nachos_deploy.core.ingress import IngressPlan

_HERE = PurePath()
BUS = "bus"
VOLUME_INIT = "volume-init"  # one-shot service that makes component volumes writable by their user
VOLUME_INIT_ROOT = "/volumes"
INTERNAL_NETWORK = "nachos-internal"
EGRESS_NETWORK = "egress"
HOST_NETWORK = "host-access"
# The bus's ports are published by a forwarder, so the bus itself joins only internal networks: a
# container on a plain bridge gets a way off the machine (route and DNS forwarding) that the one
# container carrying every message must not have.
PORTS = "bus-ports"
BUS_LINK_NETWORK = "bus-link"  # internal: only the bus and its port forwarder
# A clustered bus (bus.nodes 3 or 5): node 1 keeps the service name `bus`, the others are bus-2...;
# every node answers to `bus` on nachos-internal (components and sidecars keep nats://bus:4222 and
# reach any node) and to its own name on bus-link, where the routes and the forwarder use it.
CLUSTER_NAME = "nachos"
ROUTE_PORT = 6222
ROUTE_USER = "nachos-route"
ROUTE_PASSWORD = "NACHOS_ROUTE_PASSWORD"
SERVER_NAME = "NACHOS_SERVER_NAME"  # a node's name, in its environment for the shared nats.conf
CLIENT_PORT = 4222
MONITOR_PORT = 8222
NATS_CONFIG_FILE = "nats.conf"
NATS_CONFIG_TARGET = "/etc/nats/nats.conf"
COMPOSE_FILE = "docker-compose.yml"
STACK_FILE = "docker-stack.yml"  # target: swarm, for `docker stack deploy`
BUS_STACK_FILE = "docker-stack.bus.yml"  # the bus alone: deployed and proven before the rest
# The bus, the components' sidecars and the state store: deployed once the bus is proven, before the
# components (a component whose sidecar does not listen yet exits 1 at start: Swarm would count a
# failed task; a gateway started beside its store waits out a connect timeout).
SIDECARS_STACK_FILE = "docker-stack.sidecars.yml"
INIT_NETWORK = "volume-init-link"  # Swarm has no network_mode none: the one-shot gets a network of its own
PLATFORM_CONFIG_FILE = "nachos.toml"
BUS_VOLUME = "bus-data"
GATEWAY_VOLUME = "gateway-data"
# The state store (Redis, issue 20): the gateway's rate limits and sessions. Only the gateway reaches
# it, over a network of the two alone; the default user is off, and the gateway logs in as its own
# ACL user, whose password lives in credentials/ (io/state_credentials.py) and reaches Redis only as
# its SHA-256 in an ACL file. The healthcheck logs in as a user that may only PING and list the
# clients (for `status`), whose password is the one secret inside the state's container.
STATE = "state"
STATE_NETWORK = "state-link"  # internal; a component's network ends in -link, but none is named state
STATE_VOLUME = "state-data"
STATE_PORT = 6379
STATE_DATA_DIR = "/data"
STATE_CREDENTIALS_MOUNT = "/etc/redis/credentials"
STATE_ACL_FILE = "users.acl"
STATE_HEALTH_FILE = "health"
STATE_GATEWAY_USER = "gateway"
STATE_HEALTH_USER = "nachos-health"
STATE_BACKUP_USER = "nachos-backup"  # may only SYNC (redis-cli --rdb) and count keys: `backup`
STATE_URL_VARIABLES = ("REDIS_URL", "RUNTIME_REDIS_URL")  # the gateway's rate limiter, its sessions
_STATE_CLI = (
    f'REDISCLI_AUTH="$(cat {STATE_CREDENTIALS_MOUNT}/{STATE_HEALTH_FILE})" '
    f"redis-cli --no-auth-warning --user {STATE_HEALTH_USER}"
)
STATE_HEALTH_TEST = f"{_STATE_CLI} ping | grep -qx PONG"  # an authenticated PING
STATE_CLIENTS_COMMAND = ("sh", "-c", f"{_STATE_CLI} client list")  # for `status`: who is connected
BUS_URL = f"nats://{BUS}:{CLIENT_PORT}"
LEAF_PORT = 7422
CREDENTIALS_DIR = "credentials"
SELECTION_FILE = ".selection"  # what the last `up --only` started, for `status` (not committed)
LAST_UP_FILE = ".last-up"  # what the last full `up` left running, for the next one (not committed)
DEPLOYED_FILE = ".deployed"  # what the last `up` deployed, for the reading commands (not committed)
BACKUP_MANIFEST = "manifest.json"  # the first member of a `backup` archive: what it holds, checksums
# The one-shot containers of `backup` and `restore` that read and write the gateway's SQLite database
# and the state folders run this image, for its python3 with sqlite3 (the platform's own images are
# Node). The state store's snapshot is restored with the state store's own image.
BACKUP_TOOL_IMAGE = "nachos-deploy/probe:latest"
RELEASES_FILE = ".releases"  # the last two successful deployments, for rollback (not committed)
OPERATOR_USER = "nachos-deploy"
OPERATOR_PASSWORD = "NACHOS_OPERATOR_PASSWORD"
# The host reads the hub's monitoring as this user of the system account, over the client port
# ($SYS.REQ.SERVER.<id>.CONNZ ...), so the HTTP monitoring port need not be published (issue 19,
# item 6): its password is in credentials/ like the others and `credentials rotate` renews it.
SYSTEM_ACCOUNT = "SYS"
SYSTEM_USER = "nachos-system"
SYSTEM_PASSWORD = "NACHOS_SYSTEM_PASSWORD"
# What that user may ask, of any server: reads only. A system-account user may otherwise also kick
# connections, reload the servers and put them into lame-duck mode ($SYS.REQ.SERVER.<id>.KICK ...).
SYSTEM_READS = ("CONNZ", "LEAFZ", "JSZ", "VARZ", "HEALTHZ", "ROUTEZ")
LEAF_URL = "NACHOS_LEAF_URL"
# On Compose the hub and each sidecar read their passwords from a file their config `include`s (its
# own folder credentials/<service>/, mounted read-only here), so `credentials rotate` can change them
# with a reload (SIGHUP), which re-reads files but never the environment. On Swarm the same file is a
# Swarm secret mounted at the same place: fixed for a task's life, so rotation replaces the tasks there.
# Never environment variables: whoever reads a process's environ or `docker inspect`s it reads those.
CREDENTIALS_MOUNT = "/etc/nats/credentials"
CREDENTIALS_INCLUDE = "credentials/secrets.conf"  # relative to the config file, as nats-server reads it
# TLS on the hub's client port (bus.tls): the server's certificate and key in credentials/bus-tls/
# (mounted read-only like the passwords' folder on Compose, a Swarm secret each on Swarm), signed by
# nachos-deploy's own CA, whose certificate (credentials/bus-ca.pem) the host's clients trust and
# whose key (credentials/bus-ca-key.pem, 0600) never leaves the host. The forwarder relays the TLS
# bytes as they are: it holds no key.
TLS_OWNER = "bus-tls"
TLS_MOUNT = "/etc/nats/tls"
TLS_CERT = "server.pem"
TLS_KEY = "server-key.pem"
TLS_CA = "bus-ca.pem"
TLS_CA_KEY = "bus-ca-key.pem"
# In credentials/ (not mounted): the hash of the server's files the running bus last read (io/bus_tls.py)
TLS_LOADED = "bus-tls.loaded"
TLS_HANDSHAKE_TIMEOUT = 5  # seconds; nats-server's default (2s) fails handshakes on a loaded host
SIDECAR_HEALTH_TEST = (
    "wget -qO- http://127.0.0.1:8222/leafz | grep -q '\"leafnodes\": 1'"  # joined to the hub
)
# /healthz answers ok with JetStream off, so the probe also asks /jsz for a store_dir.
BUS_HEALTH_TEST = (
    "wget -q --spider http://127.0.0.1:8222/healthz && "
    "wget -qO- http://127.0.0.1:8222/jsz | grep -q '\"store_dir\"'"
)
GATEWAY_HEALTH_URL = f"http://127.0.0.1:{catalog.GATEWAY_HEALTH_PORT}/health"
GATEWAY_HEALTH_TEST = (  # on Swarm; on Compose the gateway's check also asks the bus (BUS_CHECK)
    "CMD",
    "node",
    "-e",
    f"fetch('{GATEWAY_HEALTH_URL}').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))",
)


@dataclass(frozen=True)
class EnvVar:
    """A literal value, or (``reference``) the name of a host variable Compose substitutes at start."""

    name: str
    value: str
    reference: bool = False
    required: bool = True


@dataclass(frozen=True)
class Mount:
    source: str  # a named volume, or a path relative to the output folder
    target: str
    read_only: bool = False
    # The deploy file's key behind a bind mount it names (a folder of the deploy's, created when
    # missing; see core/bind_sources.py); empty for volumes and the files nachos-deploy writes itself.
    key: str = ""
    # A fresh named volume is not filled from the image's folder at ``target``: Docker would also
    # give its top folder the image's owner (redis:7-alpine's /data is uid 999's), undoing volume-init.
    nocopy: bool = False

    @property
    def is_volume(self) -> bool:
        return not self.source.startswith((".", "/"))


@dataclass(frozen=True)
class HealthPlan:
    test: tuple[str, ...] | str
    interval: str
    timeout: str
    retries: int
    start_period: str | None = None
    # Whether the check asks the bus what the judge (lifecycle/observe.py) also reads there itself:
    # "only" when that is all it asks (a component's connection on /connz, the forwarder's relay),
    # so the judge takes its own fresh reading over Docker's verdict, which lags by up to an
    # interval; "also" when it asks the service's own endpoint too (the gateway's /health), so its
    # verdict counts as any check's.
    asks_bus: Literal["no", "also", "only"] = "no"


# Renders Docker's `disable: true`: the image's own check (which for the platform's images proves
# nothing, or never passes) is switched off, and the bus's /connz is the proof instead.
HEALTH_DISABLED = HealthPlan(test=("NONE",), interval="", timeout="", retries=0)


@dataclass(frozen=True)
class PreparedVolume:
    """A named volume the one-shot init service hands to the component user that writes it."""

    volume: str
    owner: str  # uid:gid
    used_by: str


@dataclass(frozen=True)
class Limits:
    memory: int | None = None
    cpus: float | None = None
    pids: int | None = None
    cpu_period: int | None = None  # µs; None: Docker's 100 ms (Swarm has no other)

    @property
    def cpu_quota(self) -> int | None:
        """``cpus`` as microseconds per ``cpu_period``: Docker refuses ``cpus`` beside a period."""
        if self.cpus is None or self.cpu_period is None:
            return None
        return round(self.cpus * self.cpu_period)


@dataclass(frozen=True)
class Hardening:
    """What every container gets unless the deploy file weakens it (``doctor`` then warns)."""

    read_only: bool = True  # root filesystem, with a tmpfs at /tmp
    no_new_privileges: bool = True
    cap_drop_all: bool = True


# Documented defaults: enough for the platform's Node processes, a ceiling for a runaway one.
DEFAULT_LIMITS = {
    Role.GATEWAY: Limits(memory=1024**3, pids=512),
    Role.LLM_PROXY: Limits(memory=512 * 1024**2, pids=256),
    Role.CHANNEL: Limits(memory=512 * 1024**2, pids=256),
    Role.TOOL: Limits(memory=1024**3, pids=512),
}
BROWSER_LIMITS = Limits(memory=2 * 1024**3, pids=1024)
STATE_PIDS = 64  # Redis runs a handful of threads, and forks once per append-only-file rewrite
BUS_LIMITS = Limits(memory=512 * 1024**2, pids=256)
# A relay process per connection (two for a cluster's failover relay), ~0.2 MiB each: see RELAYS.
PORTS_LIMITS = Limits(memory=64 * 1024**2, pids=1280)


@dataclass(frozen=True)
class PortPlan:
    host_ip: str
    published: int  # 0: the engine picks a free port
    target: int


@dataclass(frozen=True)
class ServicePlan:
    name: str
    role: Role
    image: str
    build_context: str | None = None
    build_dockerfile: str | None = None
    command: tuple[str, ...] | str | None = None
    entrypoint: tuple[str, ...] | None = None
    environment: tuple[EnvVar, ...] = ()
    networks: tuple[str, ...] = ()
    mounts: tuple[Mount, ...] = ()
    ports: tuple[PortPlan, ...] = ()
    healthcheck: HealthPlan | None = None
    user: str | None = None
    limits: Limits = Limits()
    connection_name: str | None = None  # the name it must show on the bus's /connz; None: not checked
    tool_id: str | None = None  # tools: the id in nachos.tool.<id>.request, derived from the mode
    waits_for_volumes: bool = False  # depends on the volume-init service having completed
    depends_on: tuple[tuple[str, str], ...] = ()  # (service, Compose condition)
    env_files: tuple[str, ...] = ()  # relative to the output folder; may not exist yet
    sidecar: str | None = None  # a component's bus sidecar, the only server it can reach
    leaf_name: str | None = None  # a sidecar's server name, as the hub's /leafz lists it
    permissions: Permissions | None = None  # a component's rights on the bus (with auth on)
    hardening: Hardening = Hardening()
    dns: tuple[str, ...] = ()  # resolvers the engine's DNS forwards unknown names to
    dns_options: tuple[str, ...] = ()
    aliases: tuple[tuple[str, str], ...] = ()  # (network, another name it answers to there)
    replicas: int = 1  # Swarm only: how many tasks run it
    placement: tuple[str, ...] = ()  # Swarm only: placement constraints

    def aliases_on(self, network: str) -> list[str]:
        return [alias for where, alias in self.aliases if where == network]


@dataclass(frozen=True)
class Sidecar:
    """A component's own nats-server: leaf node of the hub, on a network only the two of them share.
    The component connects anonymously and gets exactly its role's rights (``no_auth_user``); the
    sidecar reaches the hub as the component's leaf user, limited there the same way again."""

    service: ServicePlan
    component: str
    config_file: str  # rendered into the output folder
    leaf_user: str
    password_variable: str  # in the hub's credentials file
    permissions: Permissions
    limits: sidecar_limits.ServerLimits  # what its component may cost it (core/sidecar_limits.py)


@dataclass(frozen=True)
class AuditPlan:
    """The audit stream ``up`` provisions: core NATS publishes on ``nachos.audit.log`` (what the
    platform's components send) are stored too, since a stream captures its subjects."""

    stream: str
    subjects: tuple[str, ...]
    storage: str  # file | memory
    max_age: float  # seconds
    max_bytes: int
    duplicate_window: float  # seconds
    replicas: int = 1  # 3 on a cluster of 3 or more nodes


AUDIT_SUBJECTS = ("nachos.audit.>",)


@dataclass(frozen=True)
class BusTlsPlan:
    """TLS on the hub's client port. Without ``cert_file`` the certificate is nachos-deploy's own,
    made for ``names`` (and the host's name, which io/bus_tls.py adds: planning reads no host)."""

    names: tuple[str, ...]
    cert_file: str | None = None  # the user's files, absolute host paths (bus.tls.*)
    key_file: str | None = None
    ca_file: str | None = None
    host: str = "127.0.0.1"  # the address the host's own clients connect to (see bus_endpoints)

    @property
    def generated(self) -> bool:
        return self.cert_file is None

    @property
    def server_name(self) -> str:
        """The name the host's own clients check the certificate for: the address they connect to,
        or, with a user's certificate and bus.tls.names, the first of those names (a certificate made
        for a domain need not name 127.0.0.1; it must still chain to the trusted CA)."""
        if not self.generated and self.names:
            return self.names[0]
        return self.host

    def trusted_ca(self, output_dir: PurePath) -> PurePath | None:
        """The file clients must trust: nachos-deploy's CA in the output folder, the user's
        ``bus.tls.ca_file``, or None (the user's certificate chains to a CA the system trusts)."""
        if self.generated:
            return output_dir / CREDENTIALS_DIR / TLS_CA
        return PurePath(self.ca_file) if self.ca_file else None


@dataclass(frozen=True)
class BusPlan:
    service: ServicePlan
    ports: ServicePlan  # the forwarder that publishes the bus's ports on the host
    max_payload: int
    max_pending: int
    store_dir: str
    client_port: int
    monitor_port: int
    bind_address: str
    audit: AuditPlan | None = None
    peers: tuple[ServicePlan, ...] = ()  # the other nodes of a clustered bus (bus-2, bus-3, ...)
    # The forwarder publishes the HTTP monitoring ports on the host (bus.publish_monitor, or auth off).
    monitor_published: bool = True
    tls: BusTlsPlan | None = None  # TLS on the client port (bus.tls)

    @property
    def nodes(self) -> tuple[ServicePlan, ...]:
        return (self.service, *self.peers)

    @property
    def clustered(self) -> bool:
        return bool(self.peers)


@dataclass(frozen=True)
class Plan:
    project: str
    bus: BusPlan
    components: tuple[ServicePlan, ...]
    networks: tuple[tuple[str, bool], ...]  # (name, internal)
    volumes: tuple[str, ...]
    platform_config_source: str  # relative to the output folder
    generate_platform_config: bool
    prepared_volumes: tuple[PreparedVolume, ...] = ()
    warnings: tuple[str, ...] = field(default=())
    auth: bool = True
    sidecars: tuple[Sidecar, ...] = ()
    target: str = "compose"  # or "swarm": a stack file for `docker stack deploy`
    logging: log_limits.LogPlan = field(default_factory=log_limits.LogPlan)  # every service's log, bounded
    # (file name, TOML text): each platform component's own copy of nachos.toml, with no secret
    platform_files: tuple[tuple[str, str], ...] = ()
    ingress: IngressPlan | None = None  # HTTPS in front of the webhook channels (core/ingress.py)
    # Each network's own small subnet of networks.pool (core/subnets.py); None: networks.pool is
    # `docker`, and the engine picks them from its own pools.
    subnets: Subnets | None = None

    @property
    def services(self) -> tuple[ServicePlan, ...]:
        return (
            self.bus.service,
            *self.bus.peers,
            self.bus.ports,
            *(s.service for s in self.sidecars),
            *self.components,
        )

    def selected(self, only: Collection[str] = ()) -> tuple[ServicePlan, ...]:
        """The services ``up --only`` starts: the bus, its forwarder, and the named components with
        their sidecars (all when ``only`` is empty). A named sidecar or the bus alone adds nothing.
        A name this plan does not run is a ConfigError."""
        unknown = sorted(set(only) - {service.name for service in self.services})
        if unknown:
            raise ConfigError(
                f"--only names {', '.join(unknown)}, which this configuration does not run; its "
                f"services are {', '.join(s.name for s in self.services)}."
            )
        if not only:
            return self.services
        return (self.bus.service, self.bus.ports, *self.with_sidecars(self.named(only)))

    def named(self, only: Collection[str]) -> list[ServicePlan]:
        """The components ``only`` names (all when empty), with the state store when a gateway is
        among them: a gateway without its store never says it is healthy."""
        gateway = any(c.role is Role.GATEWAY and c.name in only for c in self.components)
        return [
            c for c in self.components if not only or c.name in only or (gateway and c.role is Role.STATE)
        ]

    def with_sidecars(self, components: Iterable[ServicePlan]) -> list[ServicePlan]:
        """The sidecars of ``components``, then the components: what starting them means."""
        names = {c.name for c in components}
        return [
            *(s.service for s in self.sidecars if s.component in names),
            *(c for c in self.components if c.name in names),
        ]

    def before_components(self, components: Iterable[ServicePlan]) -> list[ServicePlan]:
        """What starts once the bus is proven and must be proven before ``components`` start: their
        sidecars (a component's only way onto the bus) and the state store when it is among them
        (the gateway's sessions). A component then finds both at its first try: on Swarm a gateway
        started beside its store waited out a 2 s connect timeout and a health interval (4 s)."""
        names = {c.name for c in components}
        return [
            *(s.service for s in self.sidecars if s.component in names),
            *(c for c in self.components if c.role is Role.STATE and c.name in names),
        ]

    def required_secrets(self, names: Collection[str] | None = None) -> list[tuple[str, str]]:
        """(component, host variable) for every required secret of the named components (all when
        None); Compose would fill a missing one with an empty string, and the component then exits."""
        return [
            (service.name, var.value)
            for service in self.components
            if names is None or service.name in names
            for var in service.environment
            if var.reference and var.required
        ]

    @property
    def state(self) -> ServicePlan | None:
        """The state store, when the gateway has one (state.enabled)."""
        return next((c for c in self.components if c.role is Role.STATE), None)

    def component(self, name: str) -> ServicePlan:
        for service in self.services:
            if service.name == name:
                return service
        raise KeyError(name)


def make_plan(
    config: DeployConfig,
    platform: Platform | None = None,
    *,
    base_dir: PurePath = _HERE,
    output_dir: PurePath | None = None,
) -> Plan:
    """Resolve every default. Paths in the plan are relative to ``output_dir`` (the compose file's)."""
    platform = platform or Platform()
    output_dir = output_dir if output_dir is not None else base_dir / config.output
    warnings: list[str] = []

    names = _enabled_components(config, platform)
    channels = [name for name, role in names if role is Role.CHANNEL]
    if platform.path is not None:
        platform_source, generate = _relative(PurePath(platform.path), output_dir), False
    else:
        platform_source, generate = f"./{PLATFORM_CONFIG_FILE}", True

    components = tuple(_component(name, role, config, channels, base_dir, output_dir) for name, role in names)
    components, platform_files = _own_platform_configs(config, platform, components)
    # Imported here: core/ingress.py builds on this module's classes (see its imports).
    from nachos_deploy.core import ingress as ingress_plans

    document = (
        platform.document
        if platform.document is not None
        else platform_config.default_document(config.project)
    )
    ingress, components = ingress_plans.plan(
        config, components, document, base_dir=base_dir, output_dir=output_dir
    )
    components = _slack_http_secret(components, platform)
    if platform.secrets:
        warnings.append(platform_config.inline_secrets_warning(platform.path, platform.secrets))
    bus = _bus(config, base_dir)
    # The platform's ADR default (10MB) is above NATS's advice on purpose; warn only on a user's choice.
    if config.bus.max_payload > MAX_PAYLOAD_ADVISED and "max_payload" in config.bus.model_fields_set:
        warnings.append(
            f"bus.max_payload is {format_size(bus.max_payload)}: NATS advises 8MB at most, since large "
            "messages hold up every other client on the connection."
        )
    if config.bus.bind_address not in ("127.0.0.1", "::1"):
        guard = "only the operator password guards it" if config.bus.auth else "and it has no authentication"
        if bus.tls is not None:
            guard += " (sent over TLS, bus.tls)"
        elif not ipaddress.ip_address(config.bus.bind_address).is_loopback:
            guard += (
                ", and bus.tls.mode is off, so that password crosses the network in clear (set "
                "bus.tls.mode to auto or on)"
            )
        warnings.append(
            f"bus.bind_address is {config.bus.bind_address}: the bus ports are reachable from other "
            f"hosts, {guard}."
        )

    if platform.problems and platform.path is not None:
        warnings.append(
            f"{platform.path} would be refused by the platform's components ("
            + "; ".join(platform.problems)
            + "): they exit at start. Fix it as the platform's configuration reference says."
        )
    if platform.docker_subagents and any(c.role is Role.GATEWAY for c in components):
        warnings.append(platform_config.docker_subagents_warning(platform.path))
    planned = {service.name for service in components}
    for name, settings in config.components.items():
        if name in planned:
            warnings.extend(permissions.grant_warnings(name, settings.permissions))
    for service in components:
        known = catalog.known(service.name, service.role)
        if not known.upstream_image and not _settings(config, service.name).image:
            warnings.append(
                f"components.{service.name}: the Nachos platform publishes no {service.name} image; "
                f"{service.image} must be one you built (set components.{service.name}.image)."
            )
    warnings.extend(_host_path_warnings(config, base_dir))
    state = _state(config, components, warnings)
    prepared, unprepared = _prepared_volumes(
        (*components, *((state,) if state else ()), *((ingress.service,) if ingress else ()))
    )
    warnings.extend(unprepared)
    preparing = {p.used_by for p in prepared}
    components = tuple(replace(c, waits_for_volumes=c.name in preparing) for c in components)

    warnings.extend(_target_warnings(config))
    if not config.bus.auth:
        warnings.append(
            "bus.auth is false: the bus accepts anyone, so any process on this host and any container "
            "on nachos-internal can read every message and publish as any component. Use it only to debug."
        )
    sidecars, components = _wire(config, components, channels)
    starved = (sidecar_limits.starved_warning(s.component, s.limits.cpus) for s in sidecars)
    warnings.extend(warning for warning in starved if warning is not None)
    if state is not None:
        components = _with_state(components, replace(state, waits_for_volumes=True))
    if ingress is not None:  # after the webhook channels; reaches none of the bus set
        edge = replace(
            ingress.service,
            waits_for_volumes=True,
            depends_on=((VOLUME_INIT, "service_completed_successfully"),),
        )
        ingress = replace(ingress, service=edge)
        components = (*components, edge)
    if config.bus.auth or bus.clustered:  # passwords (and routes) come from credentials/
        bus = replace(
            bus,
            service=_with_credentials(config, bus.service, BUS),
            peers=tuple(_with_credentials(config, peer, BUS) for peer in bus.peers),
        )

    network_names = {INTERNAL_NETWORK: True, BUS_LINK_NETWORK: True, HOST_NETWORK: False}
    if state is not None:
        network_names[STATE_NETWORK] = True
    if ingress is not None:
        network_names[ingress_plans.PUBLIC_NETWORK] = False
        network_names.update((route.network, True) for route in ingress.routes)
    for sidecar in sidecars:
        network_names[sidecar.service.networks[-1]] = True
    for service in components:
        for network in service.networks:
            network_names.setdefault(network, False)
    volumes = {node_volume(index) for index in range(1, config.bus.nodes + 1)}
    for service in components:
        volumes.update(mount.source for mount in service.mounts if mount.is_volume)
    finished = _with_subnets(
        config,
        _with_unique_names(
            Plan(
                project=config.project,
                bus=bus,
                components=components,
                networks=tuple(network_names.items()),
                volumes=tuple(sorted(volumes)),
                platform_config_source=platform_source,
                generate_platform_config=generate and any(c.role not in NOT_PLATFORM for c in components),
                platform_files=platform_files,
                prepared_volumes=prepared,
                warnings=tuple(warnings),
                auth=config.bus.auth,
                sidecars=tuple(sidecars),
                target=config.target,
                logging=log_limits.plan(config.logging),
                ingress=ingress,
            )
        ),
    )
    # Imported here, as core/ingress.py is: it builds on this module's classes. Done last, over
    # every service with a check (core/check_density.py: the stack's checks within a budget).
    from nachos_deploy.core import check_density

    return check_density.spread(config, finished)


def _state(
    config: DeployConfig, components: Sequence[ServicePlan], warnings: list[str]
) -> ServicePlan | None:
    """The state store's service, when it runs: by default whenever a gateway does."""
    gateway = any(c.role is Role.GATEWAY for c in components)
    if config.state.enabled is False:
        return None
    if not gateway:
        if config.state.enabled:
            warnings.append("state.enabled is true, but no gateway runs: the state store is not started.")
        return None
    maxmemory = config.state.maxmemory
    command = (
        "redis-server",
        *("--port", str(STATE_PORT), "--dir", STATE_DATA_DIR),
        # Every write in the append-only file, flushed each second; no RDB snapshots besides it.
        *("--appendonly", "yes", "--appendfsync", "everysec", "--save", ""),
        # Full is an error to the writer, never a session dropped without a word.
        *("--maxmemory", str(maxmemory), "--maxmemory-policy", "noeviction"),
        *("--aclfile", f"{STATE_CREDENTIALS_MOUNT}/{STATE_ACL_FILE}"),
        # Nobody logs in without a password (the default user is off), so no protected mode, which
        # would refuse the gateway's connections from another address.
        *("--protected-mode", "no"),
    )
    # The append-only-file rewrite forks: its copy-on-write pages can take as much again.
    default = Limits(memory=2 * maxmemory + 32 * 1024 * 1024, pids=STATE_PIDS)
    if config.target == "swarm":
        acl = f"./{CREDENTIALS_DIR}/{STATE}"
        credentials = tuple(
            Mount(f"{acl}/{name}", f"{STATE_CREDENTIALS_MOUNT}/{name}", read_only=True)
            for name in (STATE_ACL_FILE, STATE_HEALTH_FILE)
        )
    else:  # the folder: a rotated file is there at the next start
        credentials = (Mount(f"./{CREDENTIALS_DIR}/{STATE}", STATE_CREDENTIALS_MOUNT, read_only=True),)
    return ServicePlan(
        name=STATE,
        role=Role.STATE,
        image=config.state.image,
        command=command,
        networks=(STATE_NETWORK,),
        mounts=(Mount(STATE_VOLUME, STATE_DATA_DIR, nocopy=True), *credentials),
        healthcheck=HealthPlan(("CMD-SHELL", STATE_HEALTH_TEST), "1s", "2s", 3),
        user=config.run_as.state,
        limits=_limits(config.state.resources, default),
        placement=tuple(config.state.placement),
    )


def _with_state(components: tuple[ServicePlan, ...], state: ServicePlan) -> tuple[ServicePlan, ...]:
    """``state`` placed before the first gateway, and every gateway given its network, its URLs
    (the env file io/state_credentials.py writes) and a start that waits for an authenticated PING."""
    state = replace(state, depends_on=((VOLUME_INIT, "service_completed_successfully"),))
    placed: list[ServicePlan] = []
    for component in components:
        if component.role is Role.GATEWAY:
            if state not in placed:
                placed.append(state)
            env_file = platform_config.secrets_env_file(component.name)
            component = replace(
                component,
                # The env file's URLs, not the host's ${RUNTIME_REDIS_URL:-}, which would win over it.
                environment=tuple(v for v in component.environment if v.name not in STATE_URL_VARIABLES),
                networks=(*component.networks, STATE_NETWORK),
                depends_on=(*component.depends_on, (STATE, "service_healthy")),
                env_files=component.env_files
                if env_file in component.env_files
                else (*component.env_files, env_file),
            )
        placed.append(component)
    return tuple(placed)


def platform_copy(component: str) -> str:
    """The file name of ``component``'s own copy of nachos.toml in the output folder."""
    return f"nachos-{component}.toml"


PLATFORM_COPY_HEADER = (
    "Rendered by nachos-deploy; edit the deploy file and run `nachos-deploy render` instead.\n"
    "What {component} reads of {source}, mounted into {component} alone; secrets are not written\n"
    "here: they reach the one component that reads them as environment variables."
)


def _own_platform_configs(
    config: DeployConfig, platform: Platform, components: tuple[ServicePlan, ...]
) -> tuple[tuple[ServicePlan, ...], tuple[tuple[str, str], ...]]:
    """Each platform component's own copy of nachos.toml, and the way its secrets reach it.

    One file mounted into every component let the filesystem tool and webchat read the whatsapp
    channel's token (issue 19, item 4). Now each reads a copy holding only its sections, with no
    secret in any copy. A secret written in nachos.toml reaches its one reader as the platform's
    overlay variable (CHANNEL_WHATSAPP_TOKEN, ...) from a private env file in credentials/; else
    the reader gets its overlay variables from the host's environment (``${VAR:-}``), which is
    where the warning tells the user to move them. The overlay matters, not only the channel's own
    WHATSAPP_TOKEN: the platform's loader refuses a file with an enabled channel and no token, and
    the channel then runs without its webhook path and DM policy."""
    document = (
        platform.document
        if platform.document is not None
        else platform_config.default_document(config.project)
    )
    source = str(platform.path.name) if platform.path is not None else "the default platform configuration"
    inline = {(s.component, s.variable) for s in platform.secrets}
    files: list[tuple[str, str]] = []
    planned: list[ServicePlan] = []
    for service in components:
        if service.role in NOT_PLATFORM:  # they read no nachos.toml
            planned.append(service)
            continue
        own = platform_config.component_document(document, service.name, str(service.role))
        header = PLATFORM_COPY_HEADER.format(component=service.name, source=source)
        files.append((platform_copy(service.name), platform_config.toml_text(own, header)))
        # A channel's own variable is required from the host unless nachos.toml holds its value.
        env = [
            replace(var, required=False)
            if var.reference and (service.name, platform_config.OWN_VARIABLES.get(var.name)) in inline
            else var
            for var in service.environment
        ]
        present = {var.name for var in env}
        for path, variable in platform_config.OVERLAY_SECRETS.items():
            reader = platform_config.secret_reader(path)
            if reader != service.name or variable in present or (reader, variable) in inline:
                continue
            env.append(EnvVar(variable, variable, reference=True, required=False))
        env_files = service.env_files
        if any(component == service.name for component, _ in inline):
            env_files = (*env_files, platform_config.secrets_env_file(service.name))
        planned.append(replace(service, environment=tuple(env), env_files=env_files))
    return tuple(planned), tuple(files)


def _with_subnets(config: DeployConfig, plan: Plan) -> Plan:
    """Each network's subnet, from what the finished plan puts on it (docs/networks.md): done last,
    so that every network a part of the plan added is counted, with every service on it."""
    if config.networks.pool == ENGINE_POOLS:
        return plan
    swarm = config.target == "swarm"
    members: dict[str, list[Member]] = {name: [] for name, _ in plan.networks}
    for service in plan.services:
        for network in service.networks:
            members.setdefault(network, []).append(Member(service.name, service.replicas))
    if swarm and plan.prepared_volumes:  # Swarm's volume-init has a network of its own
        members[INIT_NETWORK] = [Member(VOLUME_INIT)]
    subnets = allocate(
        config.project, config.networks.pool, members, swarm=swarm, growing=[INTERNAL_NETWORK, EGRESS_NETWORK]
    )
    return replace(plan, subnets=subnets)


def _slack_http_secret(components: tuple[ServicePlan, ...], platform: Platform) -> tuple[ServicePlan, ...]:
    """Slack in ``http`` mode (CHANNEL_SLACK_MODE=http, which the ingress's wiring sets) verifies every
    request with SLACK_SIGNING_SECRET, and Bolt refuses to start without it: required then, by name,
    at `validate` and `up`, unless nachos.toml holds it (it reaches the channel from credentials/)."""
    inline = {(s.component, s.variable) for s in platform.secrets}
    wired = []
    for service in components:
        modes = [
            var.value for var in service.environment if var.name == "CHANNEL_SLACK_MODE" and not var.reference
        ]
        if (
            service.name == "slack"
            and modes == ["http"]
            and ("slack", "CHANNEL_SLACK_SIGNING_SECRET") not in inline
        ):
            service = replace(
                service,
                environment=tuple(
                    replace(var, required=True)
                    if var.name == "SLACK_SIGNING_SECRET" and var.reference
                    else var
                    for var in service.environment
                ),
            )
        wired.append(service)
    return tuple(wired)


def _with_unique_names(plan: Plan) -> Plan:
    """The last guard before a file is written: two services of one name render two equal keys, and
    Compose keeps the last without a word, so one of them would never run. Validation refuses the
    names that would do this (config.name_taken); this catches any way round it."""
    names = Counter(s.name for s in plan.services)
    names[VOLUME_INIT] += 1  # rendered when a volume needs preparing
    twice = sorted(name for name, count in names.items() if count > 1)
    if twice:
        raise ConfigError(
            f"Invalid configuration: the stack would hold two services named {', '.join(twice)}; "
            f"{TAKEN_NAMES_HINT}. Rename the component that takes the name."
        )
    return plan


def _target_warnings(config: DeployConfig) -> list[str]:
    """What a stack file cannot carry over from the Compose layout, said once at render and up."""
    if config.target == "swarm":
        monitoring = " and the monitoring port is open" if monitor_published(config) else ""
        return [
            "target is swarm: Swarm publishes the bus's ports on every interface of the node running "
            f"{PORTS} (it has no host IP; bus.bind_address applies to Compose only), so the client port "
            f"is guarded by the operator password alone{monitoring}"
            + ("" if bus_tls_on(config) else ", sent in clear (bus.tls.mode is off)")
            + ": firewall them. "
            "Swarm also ignores no-new-privileges."
        ]
    placed = sorted(name for name, settings in config.components.items() if settings.placement)
    if placed:
        return [f"placement of {', '.join(placed)} applies to target: swarm only; Compose ignores it."]
    return []


def _host_path_warnings(config: DeployConfig, base_dir: PurePath) -> list[str]:
    """Bind mounts of host folders outside the deploy folder: allowed, but said out loud."""
    warnings = []
    for name, settings in config.components.items():
        for item in settings.volumes:
            source, _, rest = item.partition(":")
            if not source.startswith((".", "/")):
                continue  # a named volume
            host = posixpath.normpath(posixpath.join(PurePath(base_dir).as_posix(), source))
            inside = posixpath.normpath(PurePath(base_dir).as_posix())
            if host != inside and not host.startswith(inside.rstrip("/") + "/"):
                mode = "read-only" if rest.endswith(":ro") else "read-write"
                warnings.append(
                    f"components.{name}.volumes: {host} on the host, outside the deploy folder, is "
                    f"mounted {mode} into {name}."
                )
    return warnings


def _wire(
    config: DeployConfig, components: tuple[ServicePlan, ...], channels: list[str]
) -> tuple[list[Sidecar], tuple[ServicePlan, ...]]:
    """Connect each component to the bus: through its own sidecar when the bus requires
    authentication (the platform's components cannot authenticate), else to the hub directly."""
    tool_ids = [c.tool_id for c in components if c.tool_id]
    sidecars: list[Sidecar] = []
    wired: list[ServicePlan] = []
    for component in components:
        depends = [(BUS, "service_healthy")]
        if component.waits_for_volumes:
            depends.append((VOLUME_INIT, "service_completed_successfully"))
        if config.bus.auth:
            sidecar = _sidecar(config, component, channels, tool_ids, len(components))
            sidecars.append(sidecar)
            depends[0] = (sidecar.service.name, "service_healthy")
            url = f"nats://{sidecar.service.name}:{CLIENT_PORT}"
            environment = tuple(
                replace(var, value=url) if var.name in ("NATS_URL", "NATS_SERVERS") else var
                for var in component.environment
            )
            networks = tuple(
                sidecar.service.networks[-1] if n == INTERNAL_NETWORK else n for n in component.networks
            )
            component = replace(
                component,
                environment=environment,
                networks=networks,
                sidecar=sidecar.service.name,
                permissions=sidecar.permissions,
            )
        component = replace(component, depends_on=tuple(depends))
        wired.append(_with_bus_check(config, component))
    return sidecars, tuple(wired)


# Compose alone (`docker compose up --wait`, `docker compose ps`) must judge a component as `status`
# does: on the bus under its connection name. Its check asks the only server it can reach (its
# sidecar; with bus.auth off, the bus's nodes) for /connz and looks for that name: the platform's
# images have `node` (the probe image a stand-in, images/probe/node). Every 2 s, as the gateway's own
# check (a `node` start costs tens of milliseconds of CPU); Docker's first run comes one interval
# after the start (start_interval needs Engine 25). Swarm keeps no such check: it kills a task whose
# check fails, and a bus outage would then replace every component.
BUS_CHECK_TIMING = ("2s", "3s", 3, "30s")  # interval, timeout, retries, start period


def bus_check_script(name: str, servers: Sequence[str], own: Sequence[str] = ()) -> str:
    """``node -e`` JavaScript: exit 0 when every URL of ``own`` answers 2xx and one of ``servers``
    lists a connection named ``name`` on /connz (nats-server's /connz has no filter by name)."""
    urls = [f"http://{host}:{MONITOR_PORT}/connz?limit=1024" for host in servers]
    return (
        f"const name = {json.dumps(name)}, own = {json.dumps(list(own))}, bus = {json.dumps(urls)}; "
        "Promise.all(own.map(u => fetch(u)"
        ".then(r => { if (!r.ok) throw new Error(u + ' answered ' + r.status); })))"
        ".then(() => Promise.all(bus.map(u => fetch(u).then(r => r.json())"
        ".then(j => (j.connections || []).some(c => c.name === name), () => false))))"
        ".then(on => { if (on.includes(true)) process.exit(0); "
        "console.error(name + ' is not connected to ' + bus.join(' or ')); process.exit(1); }, "
        "e => { console.error(String(e)); process.exit(1); })"
    )


def _with_bus_check(config: DeployConfig, component: ServicePlan) -> ServicePlan:
    """A platform component with nachos-deploy's default check gets the check above (the gateway's
    ``GET /health`` stays part of its own); one whose check the deploy file sets or turns off, an
    extra, one with no connection name, or any on Swarm keeps what it has."""
    name = component.connection_name
    if (
        config.target == "swarm"
        or name is None
        or component.role is Role.EXTRA
        or _settings(config, component.name).healthcheck is not None
    ):
        return component
    nodes = [node_name(index) for index in range(1, config.bus.nodes + 1)]
    servers = [component.sidecar] if component.sidecar else nodes
    own = [GATEWAY_HEALTH_URL] if component.role is Role.GATEWAY else []
    test = ("CMD", "node", "-e", bus_check_script(name, servers, own))
    check = HealthPlan(test, *BUS_CHECK_TIMING, asks_bus="also" if own else "only")
    return replace(component, healthcheck=check)


def _sidecar(
    config: DeployConfig, component: ServicePlan, channels: list[str], tool_ids: list[str], leaves: int
) -> Sidecar:
    settings = _settings(config, component.name).permissions
    rights = permissions.for_component(
        component.name,
        component.role,
        channels=channels,
        tool_ids=tool_ids,
        tool_id=component.tool_id,
        extra=permissions.Permissions(
            publish=tuple(settings.publish),
            subscribe=tuple(settings.subscribe),
            answers=tuple(settings.respond),
            requests=tuple(settings.request),
        ),
    )
    name = f"{BUS}-{component.name}"
    config_file = f"sidecar-{component.name}.conf"
    bounds = sidecar_limits.for_component(config, component.name, component.role)
    if _settings(config, component.name).sidecar.max_subscriptions is None:  # a value set is kept
        bounds = sidecar_limits.room_for_leaves(bounds, leaves)
    service = ServicePlan(
        name=name,
        role=Role.SIDECAR,
        image=config.bus.image,
        command=("--config", NATS_CONFIG_TARGET),
        environment=(EnvVar("GOMEMLIMIT", bounds.go_memory_limit),),
        networks=(INTERNAL_NETWORK, f"{component.name}-link"),
        mounts=(Mount(f"./{config_file}", NATS_CONFIG_TARGET, read_only=True),),
        healthcheck=HealthPlan(("CMD-SHELL", SIDECAR_HEALTH_TEST), bus_check_interval(config), "2s", 3),
        depends_on=((BUS, "service_healthy"),),
        leaf_name=name,
        user=config.run_as.sidecars,
        limits=Limits(memory=bounds.memory, cpus=bounds.cpus, pids=bounds.pids, cpu_period=bounds.cpu_period),
        # While the hub is away its name is unknown: the lookup of `bus` must fail within a second
        # (not the resolver's ten), so the sidecar's next try comes as soon as the hub is back.
        dns=(NO_RESOLVER,),
        dns_options=FAST_FAILING_LOOKUPS,
    )
    service = _with_credentials(config, service, name)
    variable = "NACHOS_LEAF_" + component.name.upper().replace("-", "_") + "_PASSWORD"
    return Sidecar(service, component.name, config_file, f"leaf-{component.name}", variable, rights, bounds)


def secret_version_variable(owner: str) -> str:
    """The host variable that names the current version of ``owner``'s Swarm secret (the hash of its
    file, set by the Swarm target at each deploy): a Swarm secret cannot change, so a rotated file
    must be a secret of another name, which the stack file cannot know when it is rendered."""
    return "NACHOS_SECRETS_" + re.sub(r"[^A-Z0-9]", "_", owner.upper())


def _with_credentials(config: DeployConfig, service: ServicePlan, owner: str) -> ServicePlan:
    """``service`` given the credentials of ``owner`` (the hub's, shared by its nodes, or a sidecar's
    own), as a file its config ``include``s, never as environment variables (which anyone who may
    read the process's environ or `docker inspect` it reads too): its folder mounted read-only on
    Compose (a rotation reaches the server by a reload), the file as a Swarm secret on Swarm (a
    bind mount would need the folder on every node)."""
    if config.target == "swarm":
        name = PurePosixPath(CREDENTIALS_INCLUDE).name
        secret = Mount(f"./{CREDENTIALS_DIR}/{owner}/{name}", f"{CREDENTIALS_MOUNT}/{name}", read_only=True)
        return replace(service, mounts=(*service.mounts, secret))
    folder = Mount(f"./{CREDENTIALS_DIR}/{owner}", CREDENTIALS_MOUNT, read_only=True)
    return replace(service, mounts=(*service.mounts, folder))


def _settings(config: DeployConfig, name: str) -> Component:
    """The deploy file's settings of a component, or the defaults: made only when missing, since
    building a model costs more than the rest of planning a component."""
    settings = config.components.get(name)
    return settings if settings is not None else Component()


def _enabled_components(config: DeployConfig, platform: Platform) -> list[tuple[str, Role]]:
    """Enabled components in start order: gateway, llm-proxy, channels, tools, then extras."""
    candidates: dict[str, Role] = {name: known.role for name, known in catalog.KNOWN.items()}
    for name in platform.channels:
        candidates.setdefault(name, Role.CHANNEL)
    for name in platform.tools:
        candidates.setdefault(name, Role.TOOL)
    for name, component in config.components.items():
        if component.role is not None:
            candidates[name] = Role(component.role)
        else:
            candidates.setdefault(name, Role.EXTRA)

    def enabled(name: str, role: Role) -> bool:
        explicit = _settings(config, name).enabled
        if explicit is not None:
            return explicit
        if role is Role.CHANNEL and name in platform.channels:
            return platform.channels[name]
        if role is Role.TOOL and name in platform.tools:
            return platform.tools[name]
        if name in catalog.KNOWN:
            return catalog.KNOWN[name].enabled
        return True  # an extra the user wrote down runs unless disabled

    order = list(Role)
    chosen = [(name, role) for name, role in candidates.items() if enabled(name, role)]
    return sorted(chosen, key=lambda item: order.index(item[1]))  # stable: catalog, then file order


def _component(
    name: str,
    role: Role,
    config: DeployConfig,
    channels: list[str],
    base_dir: PurePath,
    output_dir: PurePath,
) -> ServicePlan:
    settings = _settings(config, name)
    known = catalog.known(name, role)
    connection_name: str | None = known.connection_name
    tool_id: str | None = None
    literal = {**dict(known.environment), **settings.environment}
    if role is Role.TOOL:
        try:
            tool_id = catalog.tool_id(name, literal)
        except ValueError as exc:
            raise ConfigError(
                f"Invalid configuration: components.{name}.environment: {exc}. The tool's id, and so "
                "its request subject, follows it; choose one of those values."
            ) from None
        connection_name = f"tool-{tool_id}"  # upstream names the connection tool-<TOOL_ID>
    if settings.connection_name is False:
        connection_name = None
    elif settings.connection_name is not None:
        connection_name = settings.connection_name

    env: dict[str, EnvVar] = {}

    def put(key: str, value: str, *, reference: bool = False, required: bool = True) -> None:
        env[key] = EnvVar(key, value, reference, required)

    put("NATS_URL", BUS_URL)
    put("NATS_SERVERS", BUS_URL)  # upstream's gateway reads only this one, the others only NATS_URL
    put("NACHOS_COMPONENT", name)
    put("NACHOS_ROLE", str(role))
    if connection_name:
        put("NACHOS_CONNECTION_NAME", connection_name)
    mounts: list[Mount] = []
    if role is not Role.EXTRA:
        put("NACHOS_CONFIG_PATH", catalog.PLATFORM_CONFIG_PATH)
        put("NACHOS_CONFIG", catalog.PLATFORM_CONFIG_PATH)
        # Its own copy, holding only what it reads (see _own_platform_configs).
        mounts.append(Mount(f"./{platform_copy(name)}", catalog.PLATFORM_CONFIG_PATH, read_only=True))
    if tool_id is not None:
        put("TOOL_ID", tool_id)
    if role in KEEPS_STATE:
        put("RUNTIME_STATE_DIR", catalog.STATE_DIR)
    for key, value in known.environment:
        put(key, value)
    if role is Role.GATEWAY and channels:
        put("GATEWAY_CHANNELS", ",".join(channels))
    for secret in known.secrets:
        put(secret.name, secret.name, reference=True, required=secret.required)
    for key, source in settings.secrets.items():
        put(key, source, reference=True)
    for key, value in settings.environment.items():
        put(key, value)

    if role is Role.GATEWAY:
        mounts.append(Mount(GATEWAY_VOLUME, catalog.GATEWAY_DATA_DIR))
    if role in KEEPS_STATE and not _mounted_at(settings.volumes, catalog.STATE_DIR):
        mounts.append(Mount(state_volume(name), catalog.STATE_DIR))
    if name == "filesystem" and not settings.volumes:
        # Only the read mode may have the workspace read-only: the others exist to change it.
        read_only = literal.get("TOOL_MODE", "read") == "read"
        workspace = _relative(base_dir / "workspace", output_dir)
        key = f"components.{name}.volumes (unset: ./workspace)"
        mounts.append(Mount(workspace, catalog.WORKSPACE_DIR, read_only, key=key))
    for item in settings.volumes:
        source, target, *mode = item.split(":")
        if source.startswith("."):
            source = _relative(base_dir / source, output_dir)
        mounts.append(Mount(source, target, read_only=mode == ["ro"], key=f"components.{name}.volumes"))

    egress = settings.egress if settings.egress is not None else known.egress
    networks = [INTERNAL_NETWORK, *([EGRESS_NETWORK] if egress else []), *settings.networks]
    # Only on internal networks, a component can resolve nothing but the stack's names, and the
    # engine answers no lookup of a name it does not know (measured: 10 s to fail). Its sidecar,
    # stopped, is such a name: one that fails within a second lets the component's next try at it
    # come on time (the platform's clients try every 2 s; a try stuck in a lookup misses the next).
    isolated = not egress and not settings.networks

    healthcheck = _healthcheck(settings, role)

    build_context = build_dockerfile = None
    image = settings.image or f"{config.images.prefix}{known.image_name}:{config.images.tag}"
    if settings.build is not None:
        build_context = _relative(base_dir / settings.build.context, output_dir)
        build_dockerfile = settings.build.dockerfile

    command = settings.command
    return ServicePlan(
        name=name,
        role=role,
        image=image,
        build_context=build_context,
        build_dockerfile=build_dockerfile,
        command=tuple(command) if isinstance(command, list) else command,
        environment=tuple(env.values()),
        networks=tuple(dict.fromkeys(networks)),
        mounts=tuple(mounts),
        healthcheck=healthcheck,
        user=settings.user if settings.user is not None else _default_user(config, role),
        limits=_limits(settings.resources, BROWSER_LIMITS if name == "browser" else DEFAULT_LIMITS.get(role)),
        connection_name=connection_name,
        tool_id=tool_id,
        hardening=Hardening(read_only=settings.read_only),
        replicas=settings.replicas,
        placement=tuple(settings.placement),
        dns=(NO_RESOLVER,) if isolated else (),
        dns_options=FAST_FAILING_LOOKUPS if isolated else (),
    )


# The components that write under runtime.state_dir (upstream-components.md, "State the components
# keep"): the gateway (identity/, memory/) and the channels (pairing/<channel>.json).
KEEPS_STATE = (Role.GATEWAY, Role.CHANNEL)


def state_volume(component: str) -> str:
    """The named volume at a component's RUNTIME_STATE_DIR: its own, so no other component reads a
    channel's pairing list or the gateway's memory; kept by ``down``, removed by ``down --volumes``."""
    return f"{component}-state"


def _mounted_at(volumes: Sequence[str], target: str) -> bool:
    """Whether the deploy file's ``components.<name>.volumes`` already mounts something at ``target``
    (then that is the state folder, and no volume of nachos-deploy's goes there too)."""
    return any(item.split(":")[1:2] == [target] for item in volumes)


def _limits(resources: Resources, default: Limits | None) -> Limits:
    """The deploy file's limits, each falling back to the role's documented default."""
    default = default or Limits()
    return Limits(
        resources.memory if resources.memory is not None else default.memory,
        resources.cpus if resources.cpus is not None else default.cpus,
        resources.pids if resources.pids is not None else default.pids,
    )


def _healthcheck(settings: Component, role: Role) -> HealthPlan | None:
    """nachos-deploy owns the check of every platform component: the images' own checks prove
    nothing (`node -e process.exit(0)` every 30 s, which also delays the first verdict by 30 s) or
    never pass (the filesystem tool probes a port it does not serve). The gateway serves a real
    `GET /health`; for the others the bus's /connz is the proof. An extra keeps its image's check."""
    if isinstance(settings.healthcheck, Healthcheck):
        check = settings.healthcheck
        test = tuple(check.test) if isinstance(check.test, list) else check.test
        interval = check.interval or CHECK_INTERVAL
        return HealthPlan(test, interval, check.timeout, check.retries, check.start_period)
    if settings.healthcheck is False:
        return HEALTH_DISABLED
    if role is Role.GATEWAY:
        return HealthPlan(GATEWAY_HEALTH_TEST, "2s", "3s", 3, "30s")
    if role is Role.EXTRA:
        return None
    return HEALTH_DISABLED


_NUMERIC_USER = re.compile(r"^\d+(:\d+)?$")


def _prepared_volumes(
    components: Sequence[ServicePlan],
) -> tuple[tuple[PreparedVolume, ...], list[str]]:
    """Writable named volumes of components with a known numeric user. Docker creates a fresh named
    volume owned by root, and an image without the folder gives the component no say in that, so
    the gateway (run_as.components) cannot create its database there without this."""
    prepared: dict[str, PreparedVolume] = {}
    warnings = []
    for service in components:
        for mount in service.mounts:
            if not mount.is_volume or mount.read_only or service.user is None:
                continue
            if not _NUMERIC_USER.match(service.user):
                warnings.append(
                    f"components.{service.name}.user is {service.user!r}: volume {mount.source} cannot be "
                    "made writable for a user name; give uid:gid (e.g. 61000:61000)."
                )
                continue
            uid, _, gid = service.user.partition(":")
            owner = f"{uid}:{gid or uid}"
            prepared.setdefault(mount.source, PreparedVolume(mount.source, owner, service.name))
    return tuple(prepared[name] for name in sorted(prepared)), warnings


def _default_user(config: DeployConfig, role: Role) -> str | None:
    """The platform's images are built to run as 1001, an ordinary uid on a host, whose account could
    then read the components' secrets from /proc; their files are readable by anyone, so they run
    under run_as.components instead (docs/security.md#user-ids). An extra keeps its image's user."""
    return None if role is Role.EXTRA else config.run_as.components


def node_name(index: int) -> str:
    """Service name of a bus node: ``bus`` for the first (single-node stacks are unchanged)."""
    return BUS if index == 1 else f"{BUS}-{index}"


def is_bus_node(name: str) -> bool:
    """``bus`` or ``bus-<n>`` (a component's name starts with a letter, so no sidecar is named so)."""
    return name == BUS or (name.startswith(f"{BUS}-") and name[len(BUS) + 1 :].isdigit())


def route_host(index: int) -> str:
    """The name one node answers to on bus-link (``bus`` means every live node, on both networks)."""
    return f"{BUS}-{index}"


def leaf_remotes(nodes: int) -> tuple[tuple[str, str], ...]:
    """A sidecar's leaf remote: (variable in its credentials holding the URL with its password, the
    host that URL names), for `bus` alone, or for each node of a cluster by its own name (the first
    variable keeps the single bus's name). Under `bus` alone a sidecar that lost its node redialled a
    random address of `bus`, and in a node's replacement that was once the replaced node's own (the
    engine still gave it out): the dial hung for nats-server's fixed leaf dial timeout, 1.3 s, with
    the component's interest gone from the bus (docs/bus-upgrade.md). With each node named,
    nats-server tries the next name in its list after the one it lost."""
    if nodes == 1:
        return ((LEAF_URL, BUS),)
    return tuple((LEAF_URL if i == 1 else f"{LEAF_URL}_{i}", route_host(i)) for i in range(1, nodes + 1))


def route_variable(index: int) -> str:
    """Variable in credentials/bus.env holding the route URL (with the route password) to a node."""
    return f"NACHOS_ROUTE_{index}"


def node_volume(index: int) -> str:
    return BUS_VOLUME if index == 1 else f"{BUS_VOLUME}-{index}"


def forwarded_ports(index: int) -> tuple[int, int]:
    """The forwarder's listening (client, monitor) ports: 4222/8222 (``index`` 0) for the bus as a
    whole, whichever node answers; 4222+k/8222+k for node k of a cluster alone."""
    return CLIENT_PORT + index, MONITOR_PORT + index


# Swarm kills a task whose healthcheck fails and starts another: a node of a cluster waiting for its
# peers (503 "JetStream is still recovering meta layer" until a quorum), or a bus replaying a large
# stream, would be killed over and over. On Swarm the check asks only that JetStream is on, and
# allows a start period; up's gate still proves quorum, routes and a meta leader from the host.
SWARM_BUS_HEALTH_TEST = (
    "wget -q --spider 'http://127.0.0.1:8222/healthz?js-enabled-only=true' && "
    "wget -qO- http://127.0.0.1:8222/jsz | grep -q '\"store_dir\"'"
)
SWARM_BUS_START_PERIOD = "60s"


def bus_check_interval(config: DeployConfig) -> str:
    """The bus's, its forwarder's and the sidecars' check interval before check_density stretches
    it (a value the deploy file sets is not stretched)."""
    return config.bus.healthcheck_interval or BUS_CHECK_INTERVAL


def _bus_health(config: DeployConfig) -> HealthPlan:
    interval = bus_check_interval(config)
    if config.target == "swarm":
        return HealthPlan(("CMD-SHELL", SWARM_BUS_HEALTH_TEST), interval, "2s", 3, SWARM_BUS_START_PERIOD)
    return HealthPlan(("CMD-SHELL", BUS_HEALTH_TEST), interval, "2s", 3)


def bus_tls_on(config: DeployConfig) -> bool:
    """Whether the hub's client port speaks TLS: bus.tls.mode, where ``auto`` means "when the port
    leaves the machine": a bind address other than loopback, or any Swarm (it publishes on every
    interface of the node, whatever the bind address says)."""
    mode = config.bus.tls.mode
    if mode != "auto":
        return mode == "on"
    if config.target == "swarm":
        return True
    return not ipaddress.ip_address(config.bus.bind_address).is_loopback


def _bus_tls(config: DeployConfig, base_dir: PurePath) -> BusTlsPlan | None:
    """The TLS plan: the names the generated certificate covers (those clients use: the bind address,
    loopback, then bus.tls.names), or the user's files resolved from the deploy file's folder."""
    if not bus_tls_on(config):
        return None
    tls = config.bus.tls
    names: list[str] = []
    address = config.bus.bind_address
    for name in (
        *(() if ipaddress.ip_address(address).is_unspecified else (address,)),
        "localhost",
        "127.0.0.1",
        "::1",
        *tls.names,
    ):
        if name not in names:
            names.append(name)

    def host_path(path: str | None) -> str | None:
        if path is None:
            return None
        return posixpath.normpath(posixpath.join(PurePath(base_dir).as_posix(), path))

    if tls.cert_file is not None:
        names = list(tls.names)  # a user's certificate: only the names the user says clients check
    unspecified = ipaddress.ip_address(address)
    host = ("127.0.0.1" if unspecified.version == 4 else "::1") if unspecified.is_unspecified else address
    return BusTlsPlan(
        tuple(names), host_path(tls.cert_file), host_path(tls.key_file), host_path(tls.ca_file), host
    )


def _tls_mounts(config: DeployConfig) -> tuple[Mount, ...]:
    """The server's certificate and key: the folder on Compose (read-only, as the passwords'), a Swarm
    secret each on Swarm (a bind mount would need the folder on every node)."""
    if not bus_tls_on(config):
        return ()
    folder = f"./{CREDENTIALS_DIR}/{TLS_OWNER}"
    if config.target == "swarm":
        return tuple(
            Mount(f"{folder}/{name}", f"{TLS_MOUNT}/{name}", read_only=True) for name in (TLS_CERT, TLS_KEY)
        )
    return (Mount(folder, TLS_MOUNT, read_only=True),)


def _bus(config: DeployConfig, base_dir: PurePath = _HERE) -> BusPlan:
    bus = config.bus
    clustered = bus.nodes > 1
    spread = clustered and config.target == "swarm"

    def node(index: int) -> ServicePlan:
        name = node_name(index)
        command: tuple[str, ...] = ("--config", NATS_CONFIG_TARGET, "--js", "--store_dir", bus.store_dir)
        aliases: tuple[tuple[str, str], ...] = ()
        environment: tuple[EnvVar, ...] = ()
        if clustered:
            command += ("--server_name", name)
            # Also in the config (by this variable): a reload re-reads the file and, without a name
            # there, a node of a JetStream cluster refuses it (`credentials rotate` reloads).
            environment = (EnvVar(SERVER_NAME, name),)
            aliases = ((BUS_LINK_NETWORK, route_host(index)),)
            if index > 1:  # `bus` means any node, on both networks (the first answers by its name)
                aliases = ((INTERNAL_NETWORK, BUS), (BUS_LINK_NETWORK, BUS), *aliases)
            else:  # and by `bus-1` where the sidecars are, which name each node (leaf_remotes)
                aliases = ((INTERNAL_NETWORK, route_host(index)), *aliases)
        return ServicePlan(
            name=name,
            role=Role.EXTRA,
            image=bus.image,
            command=command,
            environment=environment,
            networks=(INTERNAL_NETWORK, BUS_LINK_NETWORK),
            mounts=(
                Mount(f"./{NATS_CONFIG_FILE}", NATS_CONFIG_TARGET, read_only=True),
                Mount(node_volume(index), bus.store_dir),
                *_tls_mounts(config),
            ),
            healthcheck=_bus_health(config),
            limits=_limits(bus.resources, BUS_LIMITS),
            aliases=aliases,
            # One node per machine of a swarm: see bus_placement (Compose has one machine).
            placement=(bus_placement.constraint(config.project, name),) if spread else (),
        )

    return BusPlan(
        service=node(1),
        peers=tuple(node(index) for index in range(2, bus.nodes + 1)),
        ports=_port_forwarder(config),
        max_payload=bus.max_payload,
        max_pending=bus.max_pending,
        store_dir=bus.store_dir,
        client_port=bus.client_port,
        monitor_port=bus.monitor_port,
        bind_address=bus.bind_address,
        monitor_published=monitor_published(config),
        tls=_bus_tls(config, base_dir),
        audit=AuditPlan(
            bus.audit.stream,
            AUDIT_SUBJECTS,
            bus.audit.storage,
            duration_seconds(bus.audit.max_age),
            bus.audit.max_bytes,
            duration_seconds(bus.audit.duplicate_window),
            replicas=min(3, bus.nodes),
        )
        if bus.audit.enabled
        else None,
    )


# Two socat listeners, one relay process per connection (`fork`), each looking `bus` up when its
# connection comes; if either listener stops, the container exits and its restart policy brings it
# back. TCP_NODELAY (`nodelay`) on both sides: a relay that writes a message in two parts otherwise
# holds the second back until the first is acknowledged, which the receiver delays by some 40 ms
# (Nagle's algorithm against delayed ACKs), and large reads (`-b`) keep big messages to few parts.
# A relay takes about 0.2 MiB, plus its read buffer once a big message went through it: with at
# most RELAYS client and MONITOR_RELAYS monitor connections at once (later ones wait to be
# accepted), the forwarder stays within PORTS_LIMITS (an out-of-memory kill could hit a listener).
# socat is in the offline nats:alpine stand-in (scripts/build-images.sh); an image without it (the
# upstream nats:alpine) gets busybox `nc`, which sets no TCP_NODELAY and reads little at a time (1 KiB
# in Debian's busybox): a message larger than that then waits those 40 ms, each way
# (benchmarks/forwarder.py measures both).
# A relay whose connection to the bus gets no answer gives up after RELAY_CONNECT_TIMEOUT seconds:
# without it, a connect to an address no container holds any more (a bus recreated under a running
# forwarder) waits out the kernel's SYN retries, about two minutes, and MONITOR_RELAYS such relays
# keep every later monitoring request waiting (seen: `up` polling /healthz timed out for 90 s with
# the bus healthy). A healthy bus on the same bridge answers in well under a millisecond.
RELAY_BUFFER = 128 * 1024
# Enough slots that a local user holding connections open cannot keep the host's own reads out
# (issue 19, item 6: with 8 monitoring slots, held connections made `status` fail in 2 runs of 4):
# tests/test_monitor_access.py holds more than the old 48 while `status` runs. A relay with no
# traffic either way for RELAY_IDLE seconds ends (socat -T): a NATS client exchanges PING/PONG with
# the server every 2 minutes, so only a dead or stalled connection is that quiet; an HTTP monitoring
# request takes milliseconds, so a held monitoring slot is freed after MONITOR_RELAY_IDLE.
RELAYS = 128
MONITOR_RELAYS = 16
RELAY_IDLE = 300
MONITOR_RELAY_IDLE = 10
RELAY_CONNECT_TIMEOUT = 1


def _idle(target: int) -> int:
    return MONITOR_RELAY_IDLE if target == MONITOR_PORT else RELAY_IDLE


def _socat(port: int, relays: int, host: str = BUS, target: int | None = None) -> str:
    listen = f"TCP4-LISTEN:{port},fork,reuseaddr,nodelay,max-children={relays}"
    connect = f"TCP4:{host}:{target or port},nodelay,connect-timeout={RELAY_CONNECT_TIMEOUT}"
    return f"socat -T {_idle(target or port)} -b {RELAY_BUFFER} {listen} {connect}"


# A clustered bus's own ports (the host's NATS_URL) must outlive any one node, for every client,
# which has that one URL (nats-py and most clients take no comma-separated list from NATS_URL). So
# each connection to them goes to the first node that accepts a connection now: a small script
# (written to the forwarder's /tmp at start) tries `bus`, which every live node answers to, then
# each node by its own name, and relays to the first that accepts. `bus` alone would not do: the
# engine's DNS still lists a killed node for a moment after its connections closed, a client redials
# at once, and a default nats-py client that gets no INFO waits 2 s before it tries its only URL
# again. The nodes by name come second because the lookup of a name the engine no longer knows (a
# dead node's) takes a second (FAST_FAILING_LOOKUPS). The test connection carries no byte of the
# client's, so the client only ever talks to the node it is relayed to; a live node on the same
# bridge accepts in well under a millisecond, hence the short wait for one that does not.
RELAY_SCRIPT = "/tmp/nachos-relay"
RELAY_TRY_TIMEOUT = 0.25
# The relay goes to the address the test connection reached, read from socat's own log line
# ("opening connection to AF=2 <address>:<port>"), not to the name again: `bus` has an address per
# node and the engine's DNS gives them in a random order, with a killed node's still among them for
# a moment, so a second lookup could hand the client to the dead node the test had just passed
# over (seen: a client relayed to a refused address, back only after nats-py's 2 s redial wait).
# A socat that words its log otherwise leaves the address empty, and the relay uses the name.
_TRIED_ADDRESS = r"s/.* opening connection to AF=2 \([0-9.]*\):.*/\1/p"


def failover_socat(port: int, relays: int, hosts: Sequence[str], target: int) -> str:
    listen = f"TCP4-LISTEN:{port},fork,reuseaddr,nodelay,max-children={relays}"
    return f"socat {listen} 'EXEC:sh {RELAY_SCRIPT} {target} {_idle(target)} {' '.join(hosts)},nofork'"


def relay_script() -> str:
    """``sh RELAY_SCRIPT PORT IDLE HOST...``: the client's connection (stdin/stdout, from socat's
    ``nofork``) relayed to PORT of the first HOST that accepts a connection, until IDLE quiet seconds."""
    return (
        "p=$1; t=$2; shift 2; for h; do "
        f"if a=$(socat -d -d -u OPEN:/dev/null TCP4:$h:$p,connect-timeout={RELAY_TRY_TIMEOUT} 2>&1); then "
        f'ip=$(printf "%s\\n" "$a" | sed -n "{_TRIED_ADDRESS}" | tail -n 1); '
        f"exec socat -T $t -b {RELAY_BUFFER} STDIO "
        f"TCP4:${{ip:-$h}}:$p,nodelay,connect-timeout={RELAY_CONNECT_TIMEOUT}; fi; "
        'echo "nachos-deploy: $h does not accept a connection on port $p, trying the next node" >&2; '
        'done; echo "nachos-deploy: no bus node accepts a connection on port $p" >&2; exit 1'
    )


def _is_monitor_port(port: int) -> bool:
    """Whether a forwarder port relays a node's HTTP monitoring (8222, 8222+k), not its clients."""
    return any(port == forwarded_ports(index)[1] for index in range(0, 6))


def forwarder_script(nodes: int = 1) -> str:
    """The forwarder's shell script: the bus on 4222/8222, and for a cluster node k alone on
    4222+k/8222+k (through `bus-k`), so the host can watch each node. A cluster's 4222/8222 go to
    whichever node accepts (above), so the host's URLs outlive any one node."""
    socat, nc = [], []
    hosts = [route_host(index) for index in range(1, nodes + 1)] if nodes > 1 else []
    for index in range(0, nodes + 1 if hosts else 1):
        host = route_host(index) if index else BUS
        client, monitor = forwarded_ports(index)
        if index == 0 and hosts:
            socat += [
                failover_socat(client, RELAYS, [BUS, *hosts], CLIENT_PORT),
                failover_socat(monitor, MONITOR_RELAYS, [BUS, *hosts], MONITOR_PORT),
            ]
        else:
            socat += [
                _socat(client, RELAYS, host, CLIENT_PORT),
                _socat(monitor, MONITOR_RELAYS, host, MONITOR_PORT),
            ]
        # busybox nc cannot try one node after another: it has `bus` alone.
        nc += [
            f"nc -ll -p {client} -e nc {host} {CLIENT_PORT}",
            f"nc -ll -p {monitor} -e nc {host} {MONITOR_PORT}",
        ]
    relay = f"printf '%s\\n' '{relay_script()}' > {RELAY_SCRIPT}; " if hosts else ""
    return (
        f"if command -v socat >/dev/null; then {relay}{' & '.join(socat)} & "
        "else echo 'nachos-deploy: no socat in the bus image: relaying with busybox nc, which holds "
        "messages over about 1 KiB back for some 40 ms each way' >&2; "
        f"{' & '.join(nc)} & "
        "fi; wait -n; echo 'nachos-deploy: a bus port forwarder stopped' >&2; exit 1"
    )


# Nothing answers DNS there: when the bus is gone, the lookup of `bus` fails in the container
# instead of being forwarded to the host's resolvers (and off the machine); after one second, not
# the resolver's default ten, so relays waiting for it do not pile up.
NO_RESOLVER = "127.0.0.1"
FAST_FAILING_LOOKUPS = ("timeout:1", "attempts:1")


# The forwarder reaches the bus when a request through its monitoring relay is answered: what the
# host's proof of the bus goes through. On Swarm none (a failing check there would get the task
# killed while the bus is away, and with it the published ports): `up` proves it from the host.
FORWARDER_HEALTH_TEST = f"wget -q --spider http://127.0.0.1:{MONITOR_PORT}/healthz"


def _forwarder_check(config: DeployConfig) -> HealthPlan:
    if config.target == "swarm":
        return HEALTH_DISABLED
    test = ("CMD-SHELL", FORWARDER_HEALTH_TEST)
    return HealthPlan(test, bus_check_interval(config), "2s", 3, asks_bus="only")


def monitor_published(config: DeployConfig) -> bool:
    """Whether the host gets the HTTP monitoring ports: when asked, or on a bus without logins, whose
    client port already lets anyone see everything (and which has no system user to read it with)."""
    return config.bus.publish_monitor or not config.bus.auth


def _port_forwarder(config: DeployConfig) -> ServicePlan:
    """The only container on a plain bridge: it holds the host ports and relays them to the bus."""
    bus = config.bus
    return ServicePlan(
        name=PORTS,
        role=Role.EXTRA,
        image=bus.image,
        entrypoint=("sh", "-c", forwarder_script(bus.nodes)),
        networks=(HOST_NETWORK, BUS_LINK_NETWORK),
        # The monitoring ports stay open inside (the forwarder's own healthcheck asks its 8222) and
        # reach the host only when published (see monitor_published).
        ports=tuple(
            port
            for port in (
                PortPlan(bus.bind_address, bus.client_port, CLIENT_PORT),
                PortPlan(bus.bind_address, bus.monitor_port, MONITOR_PORT),
                *(  # each node of a cluster alone: engine-picked host ports
                    PortPlan(bus.bind_address, 0, port)
                    for index in range(1, bus.nodes + 1 if bus.nodes > 1 else 1)
                    for port in forwarded_ports(index)
                ),
            )
            if monitor_published(config) or not _is_monitor_port(port.target)
        ),
        healthcheck=_forwarder_check(config),
        user=config.run_as.forwarder,
        limits=PORTS_LIMITS,
        dns=(NO_RESOLVER,),
        dns_options=FAST_FAILING_LOOKUPS,
    )


def _relative(path: PurePath, start: PurePath) -> str:
    """A POSIX path from the output folder to ``path``, so rendered files do not embed a home folder."""
    relative = posixpath.relpath(PurePath(path).as_posix(), PurePath(start).as_posix())
    return relative if relative.startswith(".") else f"./{relative}"
