"""A :class:`~nachos_deploy.targets.base.Target` with no Docker behind it, for in-process tests of the
one bus-first algorithm (``tests/test_algorithm.py``).

The containers are a scripted timeline: each start, restart and look of the algorithm is recorded in
``calls`` and may change ``now`` (the containers' states) through hooks a test sets. The bus is a real
nats-server (``tests/natsserver.py``): the gate proves it over HTTP and a NATS round trip as always,
and a component "on the bus" holds a real client connection under its connection name, opened and
closed as its scripted container runs or not. A sidecar is a real leaf-node nats-server logged in at
the hub, whose ``/connz`` :meth:`read_inside` reads over HTTP, as the real targets do from inside the
hub's container.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path

from nachos_deploy.core.changes import Objects, Observed, ServiceChange, Wanted, decide
from nachos_deploy.core.names import INTERNAL_NETWORK, PORTS, VOLUME_INIT
from nachos_deploy.core.plan_types import ServicePlan
from nachos_deploy.core.results import Endpoints
from nachos_deploy.docker.engine import ServiceState
from nachos_deploy.io.host_ports import HostPort
from nachos_deploy.io.stack import Stack
from nachos_deploy.targets.base import Finding, OneShot, Progress
from tests.natsserver import NatsServer, start_nats_server

Hook = Callable[["FakeTarget"], None]


def container(name: str, status: str = "running", **fields: object) -> ServiceState:
    """A container's state as an engine would report it; ids differ per run (``run``)."""
    run = fields.pop("run", 1)
    base = ServiceState(
        name, f"fake-{name}-{run}", status, None, 0, 0, "img", container_id=f"id-{name}-{run}"
    )
    return replace(base, **fields)  # type: ignore[arg-type]


class Client:
    """A real NATS client connection under a name, held open until closed (the raw protocol: the
    server lists it in /connz as soon as CONNECT is answered)."""

    def __init__(self, nats_url: str, name: str) -> None:
        host, port = nats_url.removeprefix("nats://").rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=2)
        self.sock.recv(4096)  # INFO
        connect = {"name": name, "verbose": False, "pedantic": False, "protocol": 1}
        self.sock.sendall(f"CONNECT {json.dumps(connect)}\r\nPING\r\n".encode())
        answer = b""
        while b"PONG" not in answer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError(f"the server closed {name}'s connection: {answer!r}")
            answer += chunk

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class Road:
    """The way from a sidecar to the hub's leaf port, which a test cuts and restores as an outage
    does: while cut, a connection is accepted and closed at once (the sidecar's leaf remote tries
    again at its reconnect interval); while open, bytes are relayed both ways."""

    def __init__(self, port: int, *, cut: bool) -> None:
        self.port = port
        self.cut = cut
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.address = self.listener.getsockname()[1]
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                near, _ = self.listener.accept()
            except OSError:
                return  # closed
            if self.cut:
                near.close()
                continue
            far = socket.create_connection(("127.0.0.1", self.port), timeout=2)
            far.settimeout(None)
            self.sockets += [near, far]
            for source, sink in ((near, far), (far, near)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                sink.sendall(chunk)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()
        for sock in self.sockets:
            with contextlib.suppress(OSError):
                sock.close()


class FakeTarget:
    """Compose's semantics by default; ``swarm=True``: Swarm's (tasks fail and are replaced, replicas
    can be short, no exit codes from restarted containers)."""

    def __init__(self, stack: Stack, hub: NatsServer, workdir: Path, *, swarm: bool = False) -> None:
        self.stack = stack
        self.hub = hub
        self.workdir = workdir
        self.swarm = swarm
        self.verb = "deployed" if swarm else "started"
        self.look_interval = 0.05
        self.now: dict[str, ServiceState] = {}
        self.calls: list[tuple[str, ...]] = []
        self.online: set[str] = set()  # components that connect whenever their container runs
        self.hooks: dict[str, Hook] = {}  # after "start_bus", "start_sidecars", "start_components",
        # "restart", and before each "look" (a read of the states)
        self.looks = 0
        self.late = 0  # gate_endpoints says "no published ports" this many times first
        self.checks: dict[str, bool] = {}  # container -> whether its healthcheck passes (default: yes)
        self.files_inside: dict[tuple[str, str], str] = {}  # (container, path) -> text (read_file)
        self.exec_outputs: dict[str, str] = {}  # container -> what exec_output prints there (else None)
        self.exit_codes: dict[str, list[int]] = {}  # container id -> exit codes since the up began
        self.task_failures: dict[str, str] = {}  # Swarm: service -> why its task failed
        self.short: dict[str, str] = {}  # Swarm: service -> replicas missing
        self.init = OneShot(True)
        self.taken_ports: list[HostPort] = []  # host ports another program holds (ports_taken)
        self.volume_list = ["v-js"]
        self.leaf_servers: dict[str, NatsServer] = {}
        self.roads: dict[str, Road] = {}  # sidecar -> its way to the hub, when a test cuts it
        self._clients: dict[str, Client] = {}
        self._servers = contextlib.ExitStack()
        self.restarted: list[str] = []
        self.held: set[str] = set()  # running components an upgrade replaces one by one (hold)
        self.broken: dict[str, int] = {}  # component -> exit code of its new version (replace)
        self.restored: list[tuple[tuple[str, ...], dict[str, str], dict[str, str]]] = []
        self.differs: dict[str, tuple[str, ...]] = {}  # service -> why `changes` finds it changed

    def close(self) -> None:
        for client in self._clients.values():
            client.close()
        self._servers.close()
        for road in self.roads.values():
            road.close()

    # -- scripting helpers ---------------------------------------------------------------------------
    def hook(self, event: str, action: Hook) -> None:
        self.hooks[event] = action

    def _event(self, name: str, *args: str) -> None:
        self.calls.append((name, *args))
        if name in self.hooks:
            self.hooks[name](self)
        self.sync()

    def start_leaf(self, sidecar: str, *, cut: bool = False) -> NatsServer:
        """A real leaf-node server named ``sidecar`` logged in at the hub (its "leaf connection");
        ``cut``: its way to the hub is cut (``roads[sidecar]``), so it tries again every 0.1 s until
        a test restores it."""
        port = self.hub_leaf_port()
        if cut:
            self.roads[sidecar] = Road(port, cut=True)
            port = self.roads[sidecar].address
        config = (
            f"server_name: {sidecar}\n"
            f'leafnodes {{ reconnect: "100ms", remotes = [ {{ url: "nats-leaf://127.0.0.1:{port}" }} ] }}\n'
        )
        server = self._servers.enter_context(
            start_nats_server(self.workdir / sidecar, jetstream=False, config_text=config)
        )
        self.leaf_servers[sidecar] = server
        return server

    def hub_leaf_port(self) -> int:
        for line in self.hub.log:
            if "Listening for leafnode connections on" in line:
                return int(line.rsplit(":", 1)[1])
        raise AssertionError("the hub has no leafnode port:\n" + "\n".join(self.hub.log))

    def sync(self) -> None:
        """A connection for each online component whose container runs; none for the others."""
        for service in self.stack.plan.components:
            name = service.connection_name or service.name
            state = self.now.get(service.name)
            wanted = service.name in self.online and state is not None and state.status == "running"
            if wanted and name not in self._clients:
                url = self.hub.nats_url
                if service.sidecar:
                    leaf = self.leaf_servers.get(service.sidecar)
                    if leaf is None:
                        continue  # its sidecar is not there yet: it keeps trying
                    url = leaf.nats_url
                self._clients[name] = Client(url, name)
            elif not wanted and name in self._clients:
                self._clients.pop(name).close()

    def disconnect(self, name: str) -> None:
        """The component runs on, off the bus (as after a long outage)."""
        self.online.discard(name)
        self.sync()

    def _run(self, service: ServicePlan, **fields: object) -> ServiceState:
        state = container(service.name, **fields)
        if service.leaf_name:
            state = replace(state, addresses=((f"{self.stack.project}_{INTERNAL_NETWORK}", service.name),))
        return state

    # -- the Target ----------------------------------------------------------------------------------
    def components(self, only: Sequence[str]) -> list[ServicePlan]:
        return [c for c in self.stack.plan.components if not only or c.name in only]

    def check(self, components: Sequence[ServicePlan]) -> bool:
        self.calls.append(("check", *(c.name for c in components)))
        return False

    def ports_taken(self) -> list[HostPort]:
        self.calls.append(("ports_taken",))
        return list(self.taken_ports)

    def unchanged(self, changed: Sequence[str], only: Sequence[str]) -> Mapping[str, ServiceState] | None:
        return None

    def remember(self, states: Mapping[str, ServiceState], started: Sequence[str]) -> None:
        self.calls.append(("remember", *started))

    def note_credentials(self) -> None:
        self.calls.append(("note_credentials",))

    def prune_networks(self) -> None:
        self.calls.append(("prune_networks",))

    def changes(self, only: Sequence[str]) -> list[ServiceChange]:
        """Compose's rule over the scripted containers: ``self.differs`` names the services whose
        configuration a test changed (service -> reasons), as the engine's comparison would find."""
        wanted = [
            Wanted(s.name, None, None, None, "new" if s.name in self.differs else None)
            for s in self.stack.plan.selected(only)
        ]
        observed = {
            name: Observed(state.status == "running", None, None, None, "old")
            for name, state in self.now.items()
            if name != VOLUME_INIT
        }
        found = decide(wanted, observed, orphans="remove")
        return [replace(c, reasons=self.differs.get(c.name, c.reasons)) for c in found]

    def to_create(self, only: Sequence[str]) -> Objects:
        return Objects(networks=() if self.now else (INTERNAL_NETWORK,))

    def start_bus(self, components: Sequence[ServicePlan], progress: Progress) -> list[str]:
        for service in [*self.stack.plan.bus.nodes, self.stack.plan.bus.ports]:
            self.now[service.name] = self._run(service)
        if any(c.waits_for_volumes for c in components):
            self.now[VOLUME_INIT] = container(VOLUME_INIT, "exited")
        self._event("start_bus")
        return []

    def bus_problem(self) -> str | None:
        states = self.states()
        for name in [node.name for node in self.stack.plan.bus.nodes] + [PORTS]:
            state = states.get(name)
            if state is None or state.status in ("exited", "dead"):
                return f"{name} exited"
        return None

    def gate_endpoints(self) -> Endpoints | str:
        if self.late > 0:
            self.late -= 1
            return "the bus has no published ports yet"
        found = self.endpoints()
        return found if found is not None else "the bus has no published ports yet"

    def abandon(self) -> None:
        self.calls.append(("abandon",))

    def start_sidecars(self, sidecars: Sequence[ServicePlan], states: Mapping[str, ServiceState]) -> None:
        for service in sidecars:  # as Compose does: a running container is left as it is
            if service.name not in self.now or self.now[service.name].status != "running":
                self.now[service.name] = self._run(service)
        self._event("start_sidecars", *(s.name for s in sidecars))

    def start_components(self, components: Sequence[ServicePlan], states: Mapping[str, ServiceState]) -> None:
        for service in components:
            if service.name in self.held:
                continue
            if service.name not in self.now or self.now[service.name].status != "running":
                self.now[service.name] = self._run(service)
        self._event("start_components", *(c.name for c in components))

    def volume_init(self, since: float, states: Mapping[str, ServiceState] | None) -> OneShot:
        self.calls.append(("volume_init",))
        return self.init

    def restart(self, names: Sequence[str]) -> None:
        by_name = {s.name: s for s in self.stack.plan.services}
        for name in names:
            run = int(self.now[name].container_id.rsplit("-", 1)[1]) + 1
            self.now[name] = self._run(by_name[name], run=run)
            self.restarted.append(name)
        self._event("restart", *names)

    def clear_for_cold_start(self, progress: Progress) -> bool:
        return False

    def hold(self, names: Sequence[str]) -> None:
        self.held = set(names)
        self._event("hold", *names)

    def replace(self, names: Sequence[str]) -> None:
        """A new container each, on the new version: one of ``broken`` exits at once with its code."""
        by_name = {s.name: s for s in self.stack.plan.services}
        for name in names:
            run = int(self.now[name].container_id.rsplit("-", 1)[1]) + 1 if name in self.now else 1
            code = self.broken.get(name)
            fields: dict[str, object] = {"status": "exited", "exit_code": code} if code is not None else {}
            self.now[name] = self._run(by_name[name], run=run, image_id=f"new-{name}", **fields)
            self.differs.pop(name, None)
        self.held -= set(names)
        self._event("replace", *names)

    def restore(self, names: Sequence[str], rendered: Mapping[str, str], images: Mapping[str, str]) -> None:
        """The old version back: a new container each, running on the image id it ran before."""
        by_name = {s.name: s for s in self.stack.plan.services}
        for name in names:
            run = int(self.now[name].container_id.rsplit("-", 1)[1]) + 1 if name in self.now else 1
            self.now[name] = self._run(by_name[name], run=run, image_id=images.get(name, "img"))
        self.held -= set(names)
        self.restored.append((tuple(names), dict(rendered), dict(images)))
        self._event("restore", *names)

    def replace_bus_node(self, name: str) -> None:
        service = next(node for node in self.stack.plan.bus.nodes if node.name == name)
        run = int(self.now[name].container_id.rsplit("-", 1)[1]) + 1 if name in self.now else 1
        self.now[name] = self._run(service, run=run)
        self.differs.pop(name, None)
        self._event("replace_bus_node", name)

    def reload(self, names: Sequence[str]) -> bool:
        self._event("reload", *names)
        return False  # the fake's services are not servers: a rotation takes the replacing path

    def states(self, *, recent: bool = False) -> dict[str, ServiceState]:
        self.looks += 1
        if "look" in self.hooks:
            self.hooks["look"](self)
        self.sync()
        return dict(self.now)

    def endpoints(self, states: Mapping[str, ServiceState] | None = None) -> Endpoints | None:
        forwarder = (states if states is not None else self.now).get(PORTS)
        if forwarder is None or forwarder.status != "running":
            return None
        return Endpoints(self.hub.nats_url, self.hub.monitor_url)

    def failed_tasks(self, names: Sequence[str], since: float) -> dict[str, str]:
        return {name: why for name, why in self.task_failures.items() if name in names}

    def shortfalls(self, names: Sequence[str]) -> dict[str, str]:
        return {name: why for name, why in self.short.items() if name in names}

    def run_check(self, container: str, test: Sequence[str] | str, timeout: float) -> bool:
        self.calls.append(("check_run", container))
        return self.checks.get(container, True)

    def read_inside(self, container: str, hosts: Mapping[str, str], path: str) -> dict[str, object | None]:
        found: dict[str, object | None] = {}
        for name in hosts:
            leaf = self.leaf_servers.get(name)
            try:
                with urllib.request.urlopen(f"{leaf.monitor_url}{path}", timeout=1) as answer:  # type: ignore[union-attr]
                    found[name] = json.loads(answer.read())
            except (AttributeError, OSError, ValueError):
                found[name] = None
        return found

    def read_file(self, container: str, path: str) -> str | None:
        self.calls.append(("read_file", container))
        return self.files_inside.get((container, path))

    def exec_output(self, container: str, command: Sequence[str], timeout: float) -> str | None:
        self.calls.append(("exec_output", container))
        return self.exec_outputs.get(container)

    def exit_codes_since(self, state: ServiceState, since: float) -> list[int]:
        return [] if self.swarm else self.exit_codes.get(state.container_id, [])

    def logs_tail(self, name: str, lines: int) -> str:
        return f"(the fake's log of {name})"

    def stream_logs(self, names: Sequence[str], *, follow: bool, tail: int | None) -> Iterator[str]:
        return iter([f"(the fake's log of {name})\n" for name in names])

    def diagnose(self) -> list[Finding]:
        return []

    def volumes(self) -> list[str]:
        self.calls.append(("volumes",))
        return list(self.volume_list)

    def remove(self, *, volumes: bool) -> None:
        self.calls.append(("remove", "volumes" if volumes else "keep"))
        self.now.clear()
        self.sync()
        if volumes:
            self.volume_list = []
