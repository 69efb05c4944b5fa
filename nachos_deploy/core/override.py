"""The ops escape hatch: a Compose override file beside the deploy file, for keys the deploy file
does not model (logging drivers, extra_hosts, labels, sysctls, ...).

Pure: given the parsed file and the plan, say what is wrong with it (an error) and what it changes
that nachos-deploy relies on (warnings that ``up``, ``validate`` and ``doctor`` print), so that an
override can never undo the security defaults or the bus-first gate silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nachos_deploy.core.errors import ConfigError
from nachos_deploy.core.names import VOLUME_INIT
from nachos_deploy.core.plan_types import Plan

# Keys whose override weakens or bypasses what nachos-deploy sets up, and what each one overrides.
GUARDED = {
    "privileged": "the unprivileged default",
    "cap_add": "cap_drop: [ALL]",
    "cap_drop": "cap_drop: [ALL]",
    "security_opt": "no-new-privileges",
    "read_only": "the read-only root filesystem",
    "user": "the non-root user",
    "network_mode": "the network layout (internal networks, one sidecar per component)",
    "networks": "the network layout (internal networks, one sidecar per component)",
    "ports": "the published ports (only bus-ports publishes, on bus.bind_address)",
    "pid": "process isolation",
    "ipc": "process isolation",
    "devices": "device isolation",
    "volumes": "the mounts",
    "depends_on": "the start order",
    "healthcheck": "the healthcheck up and status rely on",
    "image": "the image that runs",
    "entrypoint": "what runs",
    "command": "what runs",
    "env_file": "the environment (credentials, NATS_URL)",
    "mem_limit": "the memory limit",
    "pids_limit": "the pids limit",
    "deploy": "the limits",
    "dns": "the DNS settings that keep lookups on the machine",
}
BUS_VARIABLES = ("NATS_URL", "NATS_SERVERS")


def findings(document: Any, plan: Plan, source: str) -> list[str]:
    """Warnings for what ``document`` overrides; ConfigError when it is not an override of this
    stack's services."""
    if document is None:
        return []
    if not isinstance(document, Mapping):
        raise ConfigError(
            f"{source} must be a mapping with a 'services:' key, like a docker-compose.override.yml; "
            f"it is a {type(document).__name__}."
        )
    extra = sorted(str(key) for key in document if key != "services" and not str(key).startswith("x-"))
    if extra:
        raise ConfigError(
            f"{source}: top-level key(s) {', '.join(extra)} are not allowed: an override may only change "
            "services (and hold x- extension keys); networks and volumes are nachos-deploy's. Move the "
            "setting under services.<name>, or into the deploy file."
        )
    services = document.get("services") or {}
    if not isinstance(services, Mapping):
        raise ConfigError(f"{source}: 'services' must be a mapping of service names.")
    known = [s.name for s in plan.services] + ([VOLUME_INIT] if plan.prepared_volumes else [])
    warnings = []
    for name, settings in services.items():
        if name not in known:
            raise ConfigError(
                f"{source}: services.{name} is not a service of this stack (its services are "
                f"{', '.join(known)}). An override only changes services nachos-deploy renders; "
                "add a new service to the deploy file under components."
            )
        if not isinstance(settings, Mapping):
            raise ConfigError(f"{source}: services.{name} must be a mapping of Compose keys.")
        for key in settings:
            if key in GUARDED:
                warnings.append(
                    f"{source}: services.{name}.{key} overrides {GUARDED[key]} that nachos-deploy sets."
                )
        environment = settings.get("environment")
        named = _variable_names(environment)
        for variable in BUS_VARIABLES:
            if variable in named:
                warnings.append(
                    f"{source}: services.{name}.environment.{variable} overrides the bus address "
                    "nachos-deploy sets (the component's own sidecar)."
                )
    return warnings


def _variable_names(environment: Any) -> set[str]:
    if isinstance(environment, Mapping):
        return {str(key) for key in environment}
    if isinstance(environment, list):
        return {str(item).split("=", 1)[0] for item in environment}
    return set()
