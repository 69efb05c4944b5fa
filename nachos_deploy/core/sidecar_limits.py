"""What one component may cost its bus sidecar: the nats-server limits and the container's memory.

Pure. A compromised channel once flooded its own inbound subject (issue 19, attack 3): its sidecar
buffered up to ``max_pending`` (64 MB) per slow reader inside a 64 MiB container, and so did the
gateway's sidecar, which carries every channel's inbound messages to the gateway: both were killed
for memory, again and again, and the gateway's requests failed. The limits below fit each sidecar's
memory and its component's role: a message larger than the role needs is refused, a connection,
subscription or byte count beyond it is refused or cut off, and the CPU a flooding component's
sidecar gets caps how fast it can push messages at the rest of the bus (measured in
docs/benchmarks.md#a-channel-flooding-the-bus: nats-server has no rate limit of its own, and in
every flood it cut off the reader that fell behind, the gateway's own connection, never the leaf
connections that carried the flood).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from nachos_deploy.core.bus_nodes import bus_check_interval
from nachos_deploy.core.catalog import Role
from nachos_deploy.core.config import DeployConfig, SidecarLimits
from nachos_deploy.core.errors import ConfigError
from nachos_deploy.core.units import duration_seconds, format_size

KB = 1024
MB = 1024 * KB
MIN_PENDING = 4 * MB  # room for a burst of ordinary messages before a slow reader is cut off
MIN_MEMORY = 32 * MB  # an idle sidecar takes 5 MiB; a flooded one with 4 MB pending peaked at 23 MiB
PENDING_PER_PAYLOAD = 2  # a reader may fall one largest message behind and still take the next
MEMORY_PER_PENDING = 4  # the pending bytes, what is being read, and Go's garbage collector's headroom
PIDS = 64
# Docker enforces `cpus` as a quota per CFS period, 100 ms unless told otherwise, and a health
# check is an exec whose processes run in the container's cgroup: runc's set-up, sh, wget and
# nats-server answering /leafz. Measured: about 15-17 ms of CPU per check on a quiet host (a
# `docker exec` of `true` alone 13.8 ms), and 22-30 ms for `true` on the same kind of machine while
# its hypervisor was busy (steal time 5-30 %). At `cpus: 0.03` and Docker's period (3 ms per 100 ms)
# every check left the sidecar throttled for about 0.4 s of each second, and a message arriving then
# waited for the next period: one in fifteen reached the gateway ~100 ms late (docs/webhooks.md).
# The period is stretched until its quota holds one check with room to spare, at most to the
# kernel's 1 s: the same share of a core, spent in larger slices. That room was 30 ms until the busy
# hypervisor: an idle channel sidecar at 30 ms per 1 s period was then throttled in 5 of 20 periods,
# at 40 ms in 1 of 60, at 50 ms in none of 60 (docs/security.md#limits-of-a-sidecar).
HEALTH_CHECK_CPU_US = 50_000
DEFAULT_CPU_PERIOD_US = 100_000
MAX_CPU_PERIOD_US = 1_000_000


@dataclass(frozen=True)
class RoleDefaults:
    """``max_payload`` None: the bus's own (``bus.max_payload``)."""

    max_payload: int | None
    max_connections: int
    max_subscriptions: int
    cpus: float | None


# The platform's components each open one connection (the gateway a second one after a reconnect)
# and subscribe to a few subjects (the gateway to about 20); 8 connections and these subscriptions
# leave room for reconnects and an upgrade. Channels publish chat messages (the whatsapp webhook
# takes bodies up to 1,000,000 bytes) and tools answer with one reply per request: 1 MB each. The
# gateway and llm-proxy carry the model's context, so they keep the bus's size (10 MB by default).
# CPU caps a flood, and nothing else in nats-server does: it has no rate limit, and what it cut off
# was the gateway's connection, never a leaf connection (above). Measured on a 2-core machine
# (docs/benchmarks.md#a-channel-flooding-the-bus), 16-byte messages from inside a channel for 30 s:
# its sidecar at 0.1 CPU passed about 110,000 a second to the gateway, which was cut off as a slow
# consumer; at 0.05 about 43,000, every request answered on a quiet machine but only a third
# under a load average of 20; at 0.03 about 27,000, every request answered; at 0.02 or less the
# sidecar's own health check (an exec each second) no longer fit and it turned unhealthy. 0.03 was
# the channel's cap until a busy hypervisor made each check cost up to twice as much (above): an
# idle channel sidecar was then throttled in a quarter of its periods, its messages held up to the
# rest of the second, so a channel now gets 0.05, room for one check in each 1 s period. A chat
# channel needs a few messages a second; the cap costs its sidecar about a second more to become
# healthy at start. A tool can only answer the requests it gets (one reply each) and llm-proxy
# streams the model's tokens: theirs are looser. The gateway's sidecar carries what every other
# component sends the gateway, so it has none.
ROLE_DEFAULTS = {
    Role.GATEWAY: RoleDefaults(None, 8, 256, None),
    Role.LLM_PROXY: RoleDefaults(None, 8, 64, 0.25),
    Role.CHANNEL: RoleDefaults(1 * MB, 8, 64, 0.05),
    Role.TOOL: RoleDefaults(1 * MB, 8, 64, 0.05),
    Role.EXTRA: RoleDefaults(None, 8, 256, 0.25),
}


@dataclass(frozen=True)
class ServerLimits:
    """One sidecar's nats-server limits and its container's memory and CPU."""

    max_payload: int
    max_pending: int
    max_connections: int
    max_subscriptions: int
    memory: int
    cpus: float | None
    pids: int = PIDS

    @property
    def cpu_period(self) -> int | None:
        """The CFS period in microseconds (Compose's ``cpu_period``), or None for Docker's 100 ms."""
        return cpu_period_for(self.cpus)

    @property
    def go_memory_limit(self) -> str:
        """GOMEMLIMIT: nats-server's garbage collector works harder as the heap nears three quarters
        of the container's memory, rather than letting it grow into the kernel's OOM kill."""
        return f"{self.memory * 3 // 4 // MB}MiB"


def cpu_period_for(cpus: float | None) -> int | None:
    """The shortest CFS period (µs, whole milliseconds) whose quota at ``cpus`` holds one health
    check (``HEALTH_CHECK_CPU_US``), at most 1 s; None when Docker's 100 ms already does, or no cap."""
    if cpus is None or cpus * DEFAULT_CPU_PERIOD_US >= HEALTH_CHECK_CPU_US:
        return None
    milliseconds = math.ceil(round(HEALTH_CHECK_CPU_US / 1000 / cpus, 6))  # 0.03 gives 1000, not 1001
    return min(MAX_CPU_PERIOD_US, milliseconds * 1000)


def starved_warning(component: str, cpus: float | None, checks: float = 1.0) -> str | None:
    """A warning when ``cpus`` leaves less than its health checks' CPU with room in a second
    (``checks`` a second; the defaults never do): an idle sidecar is then throttled, its messages
    held up to the rest of the second, and at 0.02 CPU a flooded sidecar's own check no longer fit
    and it turned unhealthy."""
    needed = checks * HEALTH_CHECK_CPU_US / MAX_CPU_PERIOD_US
    if cpus is None or cpus >= needed - 1e-9:
        return None
    return (
        f"components.{component}.sidecar.cpus is {cpus:g}: {cpus * 1000:g} ms of CPU a second, less than "
        f"its own health checks need with room ({needed * 1000:g} ms for {checks:g} a second; each is an "
        "exec costing 15-30 ms), so the sidecar is throttled even idle, holding its messages up to a "
        "second, and may turn unhealthy whenever its component is busy. "
        f"Set components.{component}.sidecar.cpus to at least {needed:g}."
    )


def for_component(config: DeployConfig, name: str, role: Role) -> ServerLimits:
    """The limits of ``name``'s sidecar: the deploy file's ``components.<name>.sidecar``, each unset
    key from the role's defaults. ConfigError when they contradict each other or the bus."""
    settings = config.components[name].sidecar if name in config.components else SidecarLimits()
    defaults = ROLE_DEFAULTS.get(role, ROLE_DEFAULTS[Role.EXTRA])
    key = f"components.{name}.sidecar"
    bus_payload = config.bus.max_payload
    payload = settings.max_payload
    if payload is None:
        payload = min(defaults.max_payload or bus_payload, bus_payload)
    elif payload > bus_payload:
        raise ConfigError(
            f"Invalid configuration: {key}.max_payload is {format_size(payload)}, above bus.max_payload "
            f"({format_size(bus_payload)}), which the bus would refuse anyway; lower {key}.max_payload "
            "or raise bus.max_payload."
        )
    pending = settings.max_pending
    if pending is None:
        pending = max(MIN_PENDING, PENDING_PER_PAYLOAD * payload)
    elif pending < payload:
        raise ConfigError(
            f"Invalid configuration: {key}.max_pending ({format_size(pending)}) is below its max_payload "
            f"({format_size(payload)}): nats-server refuses to start so. Raise {key}.max_pending to at "
            f"least {format_size(payload)}, or lower {key}.max_payload."
        )
    memory = settings.memory
    if memory is None:
        memory = max(MIN_MEMORY, MEMORY_PER_PENDING * pending)
    elif memory < 2 * pending:
        raise ConfigError(
            f"Invalid configuration: {key}.memory ({format_size(memory)}) is less than twice its "
            f"max_pending ({format_size(pending)}): a slow reader's pending bytes alone would get the "
            f"sidecar killed for memory before nats-server cuts the reader off. Raise {key}.memory to "
            f"{format_size(MEMORY_PER_PENDING * pending)} (four times max_pending) or lower "
            f"{key}.max_pending."
        )
    return ServerLimits(
        max_payload=payload,
        max_pending=pending,
        max_connections=settings.max_connections or defaults.max_connections,
        max_subscriptions=settings.max_subscriptions or defaults.max_subscriptions,
        memory=memory,
        cpus=settings.cpus if settings.cpus is not None else _for_checks(defaults.cpus, config),
    )


def checks_a_second(config: DeployConfig) -> float:
    """How many times a second each sidecar's health check runs, at most: every
    ``bus_check_interval`` (1 s unless set; a large stack only stretches it)."""
    return max(1.0, 1.0 / duration_seconds(bus_check_interval(config)))


def _for_checks(cpus: float | None, config: DeployConfig) -> float | None:
    """A role's cap with room for every check of a second: the defaults hold one check a second,
    and a shorter ``bus.healthcheck_interval`` (the tests' 500 ms) runs two, which left a channel's
    sidecar throttled in every period, idle. Each further check a second adds its room."""
    if cpus is None:
        return None
    extra = (checks_a_second(config) - 1.0) * HEALTH_CHECK_CPU_US / MAX_CPU_PERIOD_US
    return round(cpus + extra, 3)


# The hub sends each leaf node the loop-detection subscription ($LDS.<id>) of every other leaf node
# of the stack, and nats-server counts them on the sidecar's leaf connection against the same
# max_subscriptions as its component's connection (a per-connection limit): in a stack of 100
# components each sidecar's leaf connection held 63 of them and refused the 64th ("maximum
# subscriptions exceeded"), and the leaf connections then churned (docs/networks.md#figures). A few
# more come from the hub itself ($JS.API.>, its own $LDS).
LEAF_INTEREST_MARGIN = 8


def room_for_leaves(limits: ServerLimits, leaves: int) -> ServerLimits:
    """``limits`` with max_subscriptions at least what the leaf connection of a sidecar takes in a
    stack of ``leaves`` sidecars: unchanged below about 56 components with the role defaults."""
    needed = leaves + LEAF_INTEREST_MARGIN
    if limits.max_subscriptions >= needed:
        return limits
    return replace(limits, max_subscriptions=needed)
