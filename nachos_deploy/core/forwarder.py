"""The bus's port forwarder (``bus-ports``): the only container on a plain bridge, relaying the
host's ports to the bus with socat (or busybox nc), and for a cluster to whichever node accepts.
Pure: the service and the shell it runs."""

from __future__ import annotations

from collections.abc import Sequence

from nachos_deploy.core.bus_nodes import bus_check_interval, forwarded_ports, route_host
from nachos_deploy.core.catalog import Role
from nachos_deploy.core.config import DeployConfig
from nachos_deploy.core.names import BUS, BUS_LINK_NETWORK, CLIENT_PORT, HOST_NETWORK, MONITOR_PORT, PORTS
from nachos_deploy.core.plan_types import HEALTH_DISABLED, PORTS_LIMITS, HealthPlan, PortPlan, ServicePlan

# Two socat listeners, one relay process per connection (`fork`), each looking `bus` up when its
# connection comes; if either listener stops, the container exits and its restart policy brings it
# back. TCP_NODELAY (`nodelay`) on both sides: a relay that writes a message in two parts otherwise
# holds the second back until the first is acknowledged, which the receiver delays by some 40 ms
# (Nagle's algorithm against delayed ACKs), and large reads (`-b`) keep big messages to few parts.
# A relay takes about 0.2 MiB, plus its read buffer once a big message went through it: with at
# most RELAYS client and MONITOR_RELAYS monitor connections at once (later ones wait to be
# accepted), the forwarder stays within PORTS_LIMITS (an out-of-memory kill could hit a listener).
# socat is in the offline nats:alpine stand-in (scripts/build-images.sh); an image without it (the
# upstream nats:alpine) gets busybox `nc`, which sets no TCP_NODELAY and reads little at a time (1 KiB
# in Debian's busybox): a message larger than that then waits those 40 ms, each way
# (benchmarks/forwarder.py measures both).
# A relay whose connection to the bus gets no answer gives up after RELAY_CONNECT_TIMEOUT seconds:
# without it, a connect to an address no container holds any more (a bus recreated under a running
# forwarder) waits out the kernel's SYN retries, about two minutes, and MONITOR_RELAYS such relays
# keep every later monitoring request waiting (seen: `up` polling /healthz timed out for 90 s with
# the bus healthy). A healthy bus on the same bridge answers in well under a millisecond.
RELAY_BUFFER = 128 * 1024
# Enough slots that a local user holding connections open cannot keep the host's own reads out
# (issue 19, item 6: with 8 monitoring slots, held connections made `status` fail in 2 runs of 4):
# tests/test_monitor_access.py holds more than the old 48 while `status` runs. A relay with no
# traffic either way for RELAY_IDLE seconds ends (socat -T): a NATS client exchanges PING/PONG with
# the server every 2 minutes, so only a dead or stalled connection is that quiet; an HTTP monitoring
# request takes milliseconds, so a held monitoring slot is freed after MONITOR_RELAY_IDLE.
RELAYS = 128
MONITOR_RELAYS = 16
RELAY_IDLE = 300
MONITOR_RELAY_IDLE = 10
RELAY_CONNECT_TIMEOUT = 1


def _idle(target: int) -> int:
    return MONITOR_RELAY_IDLE if target == MONITOR_PORT else RELAY_IDLE


def _socat(port: int, relays: int, host: str = BUS, target: int | None = None) -> str:
    listen = f"TCP4-LISTEN:{port},fork,reuseaddr,nodelay,max-children={relays}"
    connect = f"TCP4:{host}:{target or port},nodelay,connect-timeout={RELAY_CONNECT_TIMEOUT}"
    return f"socat -T {_idle(target or port)} -b {RELAY_BUFFER} {listen} {connect}"


# A clustered bus's own ports (the host's NATS_URL) must outlive any one node, for every client,
# which has that one URL (nats-py and most clients take no comma-separated list from NATS_URL). So
# each connection to them goes to the first node that accepts a connection now: a small script
# (written to the forwarder's /tmp at start) tries `bus`, which every live node answers to, then
# each node by its own name, and relays to the first that accepts. `bus` alone would not do: the
# engine's DNS still lists a killed node for a moment after its connections closed, a client redials
# at once, and a default nats-py client that gets no INFO waits 2 s before it tries its only URL
# again. The nodes by name come second because the lookup of a name the engine no longer knows (a
# dead node's) takes a second (FAST_FAILING_LOOKUPS). The test connection carries no byte of the
# client's, so the client only ever talks to the node it is relayed to; a live node on the same
# bridge accepts in well under a millisecond, hence the short wait for one that does not.
RELAY_SCRIPT = "/tmp/nachos-relay"
RELAY_TRY_TIMEOUT = 0.25
# The relay goes to the address the test connection reached, read from socat's own log line
# ("opening connection to AF=2 <address>:<port>"), not to the name again: `bus` has an address per
# node and the engine's DNS gives them in a random order, with a killed node's still among them for
# a moment, so a second lookup could hand the client to the dead node the test had just passed
# over (seen: a client relayed to a refused address, back only after nats-py's 2 s redial wait).
# A socat that words its log otherwise leaves the address empty, and the relay uses the name.
_TRIED_ADDRESS = r"s/.* opening connection to AF=2 \([0-9.]*\):.*/\1/p"


def failover_socat(port: int, relays: int, hosts: Sequence[str], target: int) -> str:
    listen = f"TCP4-LISTEN:{port},fork,reuseaddr,nodelay,max-children={relays}"
    return f"socat {listen} 'EXEC:sh {RELAY_SCRIPT} {target} {_idle(target)} {' '.join(hosts)},nofork'"


def relay_script() -> str:
    """``sh RELAY_SCRIPT PORT IDLE HOST...``: the client's connection (stdin/stdout, from socat's
    ``nofork``) relayed to PORT of the first HOST that accepts a connection, until IDLE quiet seconds."""
    return (
        "p=$1; t=$2; shift 2; for h; do "
        f"if a=$(socat -d -d -u OPEN:/dev/null TCP4:$h:$p,connect-timeout={RELAY_TRY_TIMEOUT} 2>&1); then "
        f'ip=$(printf "%s\\n" "$a" | sed -n "{_TRIED_ADDRESS}" | tail -n 1); '
        f"exec socat -T $t -b {RELAY_BUFFER} STDIO "
        f"TCP4:${{ip:-$h}}:$p,nodelay,connect-timeout={RELAY_CONNECT_TIMEOUT}; fi; "
        'echo "nachos-deploy: $h does not accept a connection on port $p, trying the next node" >&2; '
        'done; echo "nachos-deploy: no bus node accepts a connection on port $p" >&2; exit 1'
    )


def _is_monitor_port(port: int) -> bool:
    """Whether a forwarder port relays a node's HTTP monitoring (8222, 8222+k), not its clients."""
    return any(port == forwarded_ports(index)[1] for index in range(0, 6))


def forwarder_script(nodes: int = 1) -> str:
    """The forwarder's shell script: the bus on 4222/8222, and for a cluster node k alone on
    4222+k/8222+k (through `bus-k`), so the host can watch each node. A cluster's 4222/8222 go to
    whichever node accepts (above), so the host's URLs outlive any one node."""
    socat, nc = [], []
    hosts = [route_host(index) for index in range(1, nodes + 1)] if nodes > 1 else []
    for index in range(0, nodes + 1 if hosts else 1):
        host = route_host(index) if index else BUS
        client, monitor = forwarded_ports(index)
        if index == 0 and hosts:
            socat += [
                failover_socat(client, RELAYS, [BUS, *hosts], CLIENT_PORT),
                failover_socat(monitor, MONITOR_RELAYS, [BUS, *hosts], MONITOR_PORT),
            ]
        else:
            socat += [
                _socat(client, RELAYS, host, CLIENT_PORT),
                _socat(monitor, MONITOR_RELAYS, host, MONITOR_PORT),
            ]
        # busybox nc cannot try one node after another: it has `bus` alone.
        nc += [
            f"nc -ll -p {client} -e nc {host} {CLIENT_PORT}",
            f"nc -ll -p {monitor} -e nc {host} {MONITOR_PORT}",
        ]
    relay = f"printf '%s\\n' '{relay_script()}' > {RELAY_SCRIPT}; " if hosts else ""
    return (
        f"if command -v socat >/dev/null; then {relay}{' & '.join(socat)} & "
        "else echo 'nachos-deploy: no socat in the bus image: relaying with busybox nc, which holds "
        "messages over about 1 KiB back for some 40 ms each way' >&2; "
        f"{' & '.join(nc)} & "
        "fi; wait -n; echo 'nachos-deploy: a bus port forwarder stopped' >&2; exit 1"
    )


# Nothing answers DNS there: when the bus is gone, the lookup of `bus` fails in the container
# instead of being forwarded to the host's resolvers (and off the machine); after one second, not
# the resolver's default ten, so relays waiting for it do not pile up.
NO_RESOLVER = "127.0.0.1"
FAST_FAILING_LOOKUPS = ("timeout:1", "attempts:1")


# The forwarder reaches the bus when a request through its monitoring relay is answered: what the
# host's proof of the bus goes through. On Swarm none (a failing check there would get the task
# killed while the bus is away, and with it the published ports): `up` proves it from the host.
FORWARDER_HEALTH_TEST = f"wget -q --spider http://127.0.0.1:{MONITOR_PORT}/healthz"


def _forwarder_check(config: DeployConfig) -> HealthPlan:
    if config.target == "swarm":
        return HEALTH_DISABLED
    test = ("CMD-SHELL", FORWARDER_HEALTH_TEST)
    return HealthPlan(test, bus_check_interval(config), "2s", 3, asks_bus="only")


def monitor_published(config: DeployConfig) -> bool:
    """Whether the host gets the HTTP monitoring ports: when asked, or on a bus without logins, whose
    client port already lets anyone see everything (and which has no system user to read it with)."""
    return config.bus.publish_monitor or not config.bus.auth


def port_forwarder(config: DeployConfig) -> ServicePlan:
    """The only container on a plain bridge: it holds the host ports and relays them to the bus."""
    bus = config.bus
    return ServicePlan(
        name=PORTS,
        role=Role.EXTRA,
        image=bus.image,
        entrypoint=("sh", "-c", forwarder_script(bus.nodes)),
        networks=(HOST_NETWORK, BUS_LINK_NETWORK),
        # The monitoring ports stay open inside (the forwarder's own healthcheck asks its 8222) and
        # reach the host only when published (see monitor_published).
        ports=tuple(
            port
            for port in (
                PortPlan(bus.bind_address, bus.client_port, CLIENT_PORT),
                PortPlan(bus.bind_address, bus.monitor_port, MONITOR_PORT),
                *(  # each node of a cluster alone: engine-picked host ports
                    PortPlan(bus.bind_address, 0, port)
                    for index in range(1, bus.nodes + 1 if bus.nodes > 1 else 1)
                    for port in forwarded_ports(index)
                ),
            )
            if monitor_published(config) or not _is_monitor_port(port.target)
        ),
        healthcheck=_forwarder_check(config),
        user=config.run_as.forwarder,
        limits=PORTS_LIMITS,
        dns=(NO_RESOLVER,),
        dns_options=FAST_FAILING_LOOKUPS,
    )
