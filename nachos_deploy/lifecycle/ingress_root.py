"""The ingress's own CA root, read from its running container into the output folder (``tls:
internal``): what a client of the webhook URLs trusts. ``up`` writes it once the ingress is healthy,
and ``status`` when it is missing (a stack started with Compose alone), so its proof can run."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence

from nachos_deploy.core.errors import DeployError
from nachos_deploy.core.plan_types import ServicePlan
from nachos_deploy.docker.engine import ServiceState
from nachos_deploy.io.stack import Stack
from nachos_deploy.targets import Target


def root_missing(stack: Stack) -> bool:
    """Whether the stack's ingress has an internal CA whose root is not in the output folder: what
    ``status`` and an unchanged ``up`` read from the container (its CA lives on the ingress's volume,
    so a root written from the same container stays true)."""
    ingress = stack.plan.ingress
    if ingress is None or ingress.root_cert_file is None:
        return False
    return not (stack.output_dir / ingress.root_cert_file).is_file()


def write_ingress_root(
    target: Target,
    components: Sequence[ServicePlan],
    states: Mapping[str, ServiceState],
    deadline: float,
) -> None:
    """In ``tls: internal``, the root of Caddy's own CA, read from the healthy ingress and written to
    the output folder (ingress.root_cert_file) for clients to trust. Caddy makes the CA before it
    serves, so a healthy ingress has it; a moment's grace covers a slow volume. Without it the
    ingress still serves, so a root not found in time is said, not a failure."""
    ingress = target.stack.plan.ingress
    if ingress is None or ingress.root_cert_file is None:
        return
    if not any(c.name == ingress.service.name for c in components):
        return
    state = states.get(ingress.service.name)
    if state is None or state.status != "running":
        return
    from nachos_deploy.core.ingress import INTERNAL_ROOT
    from nachos_deploy.io import ingress_tls

    while True:
        pem = target.read_file(state.container, INTERNAL_ROOT)
        if pem is not None and ingress_tls.write_root(target.stack.output_dir, ingress, pem) is not None:
            return
        if time.monotonic() >= deadline:
            raise DeployError(
                f"The ingress runs, but its CA root ({INTERNAL_ROOT} in the container) could not be read "
                f"into {ingress.root_cert_file}; see `nachos-deploy logs {ingress.service.name}`."
            )
        time.sleep(0.2)
