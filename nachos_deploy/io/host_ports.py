"""The ports a stack publishes on the host, and whether another program holds one.

Asked by binding each address as the engine's port proxy does, with ``SO_REUSEADDR``: a plain bind
also fails on a port that only connections of a stack just removed still name (TIME_WAIT, up to a
minute after `down` with a client connected), which the engine would publish again at once. So
`doctor` does not report such a port as taken, and `up` (on Compose) and `restore` can refuse a port
another program holds before they write or start anything, instead of failing when the engine
publishes it, with the bus already started.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Sequence
from dataclasses import dataclass

from nachos_deploy.core.plan_types import Plan


@dataclass(frozen=True)
class HostPort:
    """One address the stack publishes: the deploy file's key that sets it, and whose it is."""

    key: str  # bus.client_port, ingress.https_port, ...
    host: str
    port: int
    service: str  # "bus" or "ingress": what cannot publish it

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def published(plan: Plan, picked: bool = False) -> list[HostPort]:
    """Every fixed host port of the plan; with ``picked``, also those of 0, the engine's pick at
    start (never taken)."""
    bus = plan.bus
    ports = [HostPort("bus.client_port", bus.bind_address, bus.client_port, "bus")]
    if bus.monitor_published:  # else the HTTP monitoring port stays inside (bus.publish_monitor)
        ports.append(HostPort("bus.monitor_port", bus.bind_address, bus.monitor_port, "bus"))
    ingress = plan.ingress
    if ingress is not None:
        ports.append(HostPort("ingress.http_port", ingress.host_ip, ingress.http_port, "ingress"))
        ports.append(HostPort("ingress.https_port", ingress.host_ip, ingress.https_port, "ingress"))
    return [p for p in ports if picked or p.port != 0]


def is_free(host: str, port: int) -> bool:
    """Whether a listener could bind ``host:port`` now. Only "address in use" counts as taken: an
    address this machine does not have is the engine's error to give, not a port in use."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno != errno.EADDRINUSE
    return True


def taken(plan: Plan) -> list[HostPort]:
    """The plan's host ports in use here: by another program, or by the project's own containers,
    which the caller tells apart (they ask the engine, which this need not)."""
    return [p for p in published(plan) if not is_free(p.host, p.port)]


def refusal(ports: Sequence[HostPort], project: str, what: str) -> str:
    """The one-paragraph error for ``ports`` taken, ``what`` saying what was left untouched."""
    listed = "; ".join(f"{p.address} ({p.key}, for the {p.service})" for p in ports)
    several = len(ports) > 1
    sets = " ".join(f"--set {p.key}=PORT" for p in ports)
    bus = any(p.service == "bus" for p in ports)
    zero = " (0 lets the engine pick a free port for the bus)" if bus else ""
    return (
        f"{'These host ports are' if several else 'This host port is'} in use by another program, so "
        f"project {project} cannot publish {'them' if several else 'it'}: {listed}. {what} Stop what "
        f"holds {'them' if several else 'it'} (`ss -ltnp` names the program; another stack's container "
        f"shows in `docker ps`), or choose other ports: {sets}"
        f"{zero}, or set them in the deploy file. `nachos-deploy doctor` checks every port."
    )
