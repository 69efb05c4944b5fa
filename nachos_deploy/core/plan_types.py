"""What a plan is: the frozen records :func:`nachos_deploy.core.plan.make_plan` returns and the
renderer and lifecycle read (a service, its mounts, checks and limits; a sidecar; the bus; the
whole plan). Pure data, with the documented default limits."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import TYPE_CHECKING, Literal

from nachos_deploy.core import log_limits, sidecar_limits
from nachos_deploy.core.catalog import Role
from nachos_deploy.core.config import Resources
from nachos_deploy.core.errors import ConfigError
from nachos_deploy.core.names import CREDENTIALS_DIR, TLS_CA
from nachos_deploy.core.permissions import Permissions
from nachos_deploy.core.subnets import Subnets

if TYPE_CHECKING:  # core/ingress.py imports the plan; make_plan imports it in turn when it runs
    from nachos_deploy.core.ingress import IngressPlan


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


def limits_for(resources: Resources, default: Limits | None) -> Limits:
    """The deploy file's limits, each falling back to the role's documented default."""
    default = default or Limits()
    return Limits(
        resources.memory if resources.memory is not None else default.memory,
        resources.cpus if resources.cpus is not None else default.cpus,
        resources.pids if resources.pids is not None else default.pids,
    )
