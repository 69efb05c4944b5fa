"""The bus's part of the plan: its node services (single or clustered), their checks and TLS,
and the audit stream. Pure; :func:`make_bus_plan` is called by :func:`nachos_deploy.core.plan.make_plan`."""

from __future__ import annotations

import ipaddress
import posixpath
from pathlib import PurePath

from nachos_deploy.core import bus_placement
from nachos_deploy.core.bus_nodes import bus_check_interval, node_name, node_volume, route_host
from nachos_deploy.core.catalog import Role
from nachos_deploy.core.config import DeployConfig
from nachos_deploy.core.forwarder import monitor_published, port_forwarder
from nachos_deploy.core.names import (
    BUS,
    BUS_HEALTH_TEST,
    BUS_LINK_NETWORK,
    CREDENTIALS_DIR,
    INTERNAL_NETWORK,
    NATS_CONFIG_FILE,
    NATS_CONFIG_TARGET,
    SERVER_NAME,
    TLS_CERT,
    TLS_KEY,
    TLS_MOUNT,
    TLS_OWNER,
)
from nachos_deploy.core.plan_types import (
    AUDIT_SUBJECTS,
    BUS_LIMITS,
    AuditPlan,
    BusPlan,
    BusTlsPlan,
    EnvVar,
    HealthPlan,
    Mount,
    ServicePlan,
    limits_for,
)
from nachos_deploy.core.units import duration_seconds

# Swarm kills a task whose healthcheck fails and starts another: a node of a cluster waiting for its
# peers (503 "JetStream is still recovering meta layer" until a quorum), or a bus replaying a large
# stream, would be killed over and over. On Swarm the check asks only that JetStream is on, and
# allows a start period; up's gate still proves quorum, routes and a meta leader from the host.
SWARM_BUS_HEALTH_TEST = (
    "wget -q --spider 'http://127.0.0.1:8222/healthz?js-enabled-only=true' && "
    "wget -qO- http://127.0.0.1:8222/jsz | grep -q '\"store_dir\"'"
)
SWARM_BUS_START_PERIOD = "60s"

_HERE = PurePath()


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


def make_bus_plan(config: DeployConfig, base_dir: PurePath = _HERE) -> BusPlan:
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
            limits=limits_for(bus.resources, BUS_LIMITS),
            aliases=aliases,
            # One node per machine of a swarm: see bus_placement (Compose has one machine).
            placement=(bus_placement.constraint(config.project, name),) if spread else (),
        )

    return BusPlan(
        service=node(1),
        peers=tuple(node(index) for index in range(2, bus.nodes + 1)),
        ports=port_forwarder(config),
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
