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
from collections.abc import Sequence
from dataclasses import replace
from pathlib import PurePath, PurePosixPath
from typing import TYPE_CHECKING

from nachos_deploy.core import (
    catalog,
    log_limits,
    permissions,
    platform_config,
    sidecar_limits,
)
from nachos_deploy.core.bus_nodes import bus_check_interval, node_name, node_volume
from nachos_deploy.core.bus_plan import bus_tls_on, make_bus_plan
from nachos_deploy.core.catalog import NOT_PLATFORM, Role
from nachos_deploy.core.config import (
    CHECK_INTERVAL,
    ENGINE_POOLS,
    MAX_PAYLOAD_ADVISED,
    TAKEN_NAMES_HINT,
    Component,
    DeployConfig,
    Healthcheck,
)
from nachos_deploy.core.errors import ConfigError
from nachos_deploy.core.forwarder import FAST_FAILING_LOOKUPS, NO_RESOLVER, monitor_published
from nachos_deploy.core.names import (
    BUS,
    BUS_LINK_NETWORK,
    BUS_URL,
    CLIENT_PORT,
    CREDENTIALS_DIR,
    CREDENTIALS_INCLUDE,
    CREDENTIALS_MOUNT,
    EGRESS_NETWORK,
    GATEWAY_HEALTH_TEST,
    GATEWAY_HEALTH_URL,
    GATEWAY_VOLUME,
    HOST_NETWORK,
    INIT_NETWORK,
    INTERNAL_NETWORK,
    MONITOR_PORT,
    NATS_CONFIG_TARGET,
    PLATFORM_CONFIG_FILE,
    PORTS,
    SIDECAR_HEALTH_TEST,
    STATE,
    STATE_ACL_FILE,
    STATE_CREDENTIALS_MOUNT,
    STATE_DATA_DIR,
    STATE_HEALTH_FILE,
    STATE_HEALTH_TEST,
    STATE_NETWORK,
    STATE_PORT,
    STATE_URL_VARIABLES,
    STATE_VOLUME,
    VOLUME_INIT,
)
from nachos_deploy.core.plan_types import (
    BROWSER_LIMITS,
    DEFAULT_LIMITS,
    HEALTH_DISABLED,
    STATE_PIDS,
    EnvVar,
    Hardening,
    HealthPlan,
    Limits,
    Mount,
    Plan,
    PreparedVolume,
    ServicePlan,
    Sidecar,
    limits_for,
)
from nachos_deploy.core.platform_config import Platform
from nachos_deploy.core.subnets import Member, allocate
from nachos_deploy.core.units import format_size

if TYPE_CHECKING:  # core/ingress.py imports this module; make_plan imports it in turn when it runs
    pass

_HERE = PurePath()


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
    bus = make_bus_plan(config, base_dir)
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
    checks = sidecar_limits.checks_a_second(config)
    starved = (sidecar_limits.starved_warning(s.component, s.limits.cpus, checks) for s in sidecars)
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
        # `backup`'s `redis-cli --rdb` is the only replica it ever has: the snapshot starts at once,
        # not after the 5 s Redis otherwise waits for more replicas to share one transfer.
        *("--repl-diskless-sync-delay", "0"),
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
        limits=limits_for(config.state.resources, default),
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
        limits=limits_for(
            settings.resources, BROWSER_LIMITS if name == "browser" else DEFAULT_LIMITS.get(role)
        ),
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


def _relative(path: PurePath, start: PurePath) -> str:
    """A POSIX path from the output folder to ``path``, so rendered files do not embed a home folder."""
    relative = posixpath.relpath(PurePath(path).as_posix(), PurePath(start).as_posix())
    return relative if relative.startswith(".") else f"./{relative}"
