"""Host accounts that share a uid with the stack's containers.

Without user namespaces a container's uid is the host's: the kernel lets a host process of the same
uid read a container process's environment (``/proc/<pid>/environ``, where the API keys are), reach
its files through ``/proc/<pid>/root`` and ptrace it. The defaults (``run_as``) come from a range no
distribution hands out, but an administrator can still create an account there, or the deploy file
can choose a uid an account has; ``up``, ``render``, ``validate`` and ``doctor`` say so, naming the
account and the two ways out (docs/security.md#user-ids).
"""

from __future__ import annotations

import pwd
from collections.abc import Callable
from dataclasses import dataclass

from nachos_deploy.core.catalog import Role
from nachos_deploy.core.config import DeployConfig
from nachos_deploy.core.plan_types import Plan, ServicePlan

Lookup = Callable[[int], str | None]


def account_name(uid: int) -> str | None:
    """The host account (passwd database: /etc/passwd, LDAP, ... through NSS) with ``uid``, if any."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


@dataclass(frozen=True)
class RunUid:
    """One uid the stack runs containers under, the deploy file's key that sets it, and who uses it."""

    uid: int
    key: str
    services: tuple[str, ...]


OWN_RUN_AS = {Role.STATE: "run_as.state", Role.INGRESS: "run_as.ingress"}


def run_uids(config: DeployConfig, plan: Plan) -> list[RunUid]:
    """Every numeric uid the plan's services run under, with the key that sets it. The bus (root in
    its container, which no host account can reach without privileges) and users given by name
    (resolved inside the image) are not listed."""
    found: dict[tuple[int, str], list[str]] = {}

    def add(service: ServicePlan, key: str) -> None:
        uid = (service.user or "").partition(":")[0]
        if uid.isdigit() and int(uid) != 0:
            found.setdefault((int(uid), key), []).append(service.name)

    add(plan.bus.ports, "run_as.forwarder")
    for sidecar in plan.sidecars:
        add(sidecar.service, "run_as.sidecars")
    for service in plan.components:
        own = config.components.get(service.name)
        if service.role in OWN_RUN_AS:  # the state store and the ingress have a key of their own
            add(service, OWN_RUN_AS[service.role])
        else:
            add(service, f"components.{service.name}.user" if own and own.user else "run_as.components")
    return [RunUid(uid, key, tuple(names)) for (uid, key), names in found.items()]


def uid_warnings(config: DeployConfig, plan: Plan, lookup: Lookup = account_name) -> list[str]:
    """One warning per uid in use that a host account has."""
    warnings = []
    for run in run_uids(config, plan):
        account = lookup(run.uid)
        if account is None:
            continue
        fix = (
            f"set {run.key} in the deploy file to a uid:gid no account uses (`getent passwd UID` prints "
            "nothing; the default range is 61000-61005)"
            if run.key.startswith("run_as.")
            else f"change {run.key} in the deploy file to a uid no account uses, or remove it"
        )
        warnings.append(
            f"host account {account} has uid {run.uid}, which {run.key} runs {', '.join(run.services)} "
            f"under: a process of {account} on this machine can read their environment (secrets) from "
            f"/proc/<pid>/environ, write their files through /proc/<pid>/root and ptrace them. Give "
            f"the account another uid (as root: `usermod -u NEW_UID {account}`), or {fix}; see "
            "docs/security.md#user-ids."
        )
    return warnings
