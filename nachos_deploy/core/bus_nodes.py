"""How the nodes of a bus are named and reached: ``bus``, ``bus-2`` ... their route and leaf
addresses, volumes and forwarded ports, and the bus set's check interval. Pure."""

from __future__ import annotations

from nachos_deploy.core.config import BUS_CHECK_INTERVAL, DeployConfig
from nachos_deploy.core.names import BUS, BUS_VOLUME, CLIENT_PORT, LEAF_URL, MONITOR_PORT


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


def bus_check_interval(config: DeployConfig) -> str:
    """The bus's, its forwarder's and the sidecars' check interval before check_density stretches
    it (a value the deploy file sets is not stretched)."""
    return config.bus.healthcheck_interval or BUS_CHECK_INTERVAL
