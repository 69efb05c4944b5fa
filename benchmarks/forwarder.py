"""What the bus port forwarder (bus-ports) costs: request/reply through it against the floor.

Brings up a bus-only stack on engine-picked loopback ports, then runs `nachos-deploy bench`'s
request/reply measurement (128 B, 1 KiB, 64 KiB and max_payload, one request in flight, p50 / p99)
from the host, `--duration` seconds each (half of it request/reply, as `bench` splits its time):

- ``bus-ports (this stack's)``: host -> docker-proxy -> bus-ports -> bus, what a client on the
  host gets at the published port;
- ``bus-ports, no docker-proxy``: to the forwarder's own address on ``host-access``, so the
  Docker engine's userland proxy (which serves published loopback ports) is left out;
- ``direct to the bus (floor)``: to the bus container's address on ``bus-link`` (the host reaches
  bridge addresses), with neither docker-proxy nor a forwarder;
- with ``--candidates``: through other relays, each in a container started beside bus-ports with its
  hardening (user 61002, no capability, read-only root, 32 MiB / 256 pids, DNS at 127.0.0.1, on
  ``host-access`` and ``bus-link``, the port published on 127.0.0.1), relaying to ``bus:4222``:
  busybox ``nc`` (the forwarder before socat), socat variants that separate the two suspects, the
  relay's read size (``-b``) and Nagle's algorithm (``nodelay``: TCP_NODELAY), and an asyncio relay
  in the Python image. The socat ones need socat in the bus image (scripts/build-images.sh puts it
  in the nats:alpine stand-in; ``--relay-image`` picks another image) and are skipped without it;
  ``--only REGEX`` picks candidates by name, ``--no-proxy`` also measures each at its own address.

Each relay's memory is read with `docker stats` when idle, with ``--connections`` NATS connections
open through it, and after the measurements, and its peak (page cache included) from its cgroup.
Prints figures; no pass/fail. Usage:

    .venv/bin/python benchmarks/forwarder.py [--duration 3] [--candidates] [--connections 20]
"""

from __future__ import annotations

import argparse
import asyncio
import re
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import nats

from nachos_deploy.bus import bench
from nachos_deploy.bus.bench import BenchResult
from nachos_deploy.core.config import DEFAULT_RUN_AS
from nachos_deploy.core.names import BUS, BUS_LINK_NETWORK, CLIENT_PORT, HOST_NETWORK, PORTS
from nachos_deploy.docker import engine
from nachos_deploy.io.stack import prepare
from nachos_deploy.lifecycle import down as teardown
from nachos_deploy.lifecycle import up as lifecycle
from nachos_deploy.targets.compose import compose_client

PYTHON_IMAGE = "nachos-deploy/python:3.11"

# A relay in Python's asyncio (one process for all connections), TCP_NODELAY on both sides.
PYTHON_RELAY = f"""
import asyncio, socket

async def pipe(reader, writer):
    try:
        while data := await reader.read(262144):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        writer.close()

async def relay(client_reader, client_writer):
    try:
        bus_reader, bus_writer = await asyncio.open_connection("{BUS}", {CLIENT_PORT})
    except OSError:
        client_writer.close()
        return
    for writer in (client_writer, bus_writer):
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    await asyncio.gather(pipe(client_reader, bus_writer), pipe(bus_reader, client_writer))

async def main():
    server = await asyncio.start_server(relay, "0.0.0.0", {CLIENT_PORT})
    await server.serve_forever()

asyncio.run(main())
"""


@dataclass(frozen=True)
class Candidate:
    name: str
    image: str  # "" for the bus image
    entrypoint: str
    args: tuple[str, ...]
    needs: str = ""  # a command that must exist in the image


def socat(options: str, buffer: int | None) -> tuple[str, ...]:
    size = f"-b {buffer} " if buffer else ""
    listen = f"TCP4-LISTEN:{CLIENT_PORT},fork,reuseaddr{options}"
    return ("-c", f"exec socat {size}{listen} TCP4:{BUS}:{CLIENT_PORT}{options}")


CANDIDATES = (
    Candidate(
        "busybox nc (-e nc)", "", "sh", ("-c", f"exec nc -ll -p {CLIENT_PORT} -e nc {BUS} {CLIENT_PORT}")
    ),
    Candidate("socat -b 1024", "", "sh", socat("", 1024), needs="socat"),
    Candidate("socat -b 1024 nodelay", "", "sh", socat(",nodelay", 1024), needs="socat"),
    Candidate("socat (8 KiB)", "", "sh", socat("", None), needs="socat"),
    Candidate("socat (8 KiB) nodelay", "", "sh", socat(",nodelay", None), needs="socat"),
    Candidate("socat -b 65536 nodelay", "", "sh", socat(",nodelay", 65536), needs="socat"),
    Candidate("socat -b 131072 nodelay", "", "sh", socat(",nodelay", 131072), needs="socat"),
    Candidate("socat -b 262144 nodelay", "", "sh", socat(",nodelay", 262144), needs="socat"),
    Candidate("socat -b 1048576 nodelay", "", "sh", socat(",nodelay", 1048576), needs="socat"),
    Candidate("python asyncio nodelay", PYTHON_IMAGE, "python3", ("-c", PYTHON_RELAY)),
)


@dataclass
class Row:
    name: str
    result: BenchResult | None = None
    note: str = ""
    memory_idle: int | None = None
    memory_open: int | None = None
    memory_after: int | None = None
    memory_peak: int | None = None


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout.strip()


def network_address(container: str, network: str) -> tuple[str, str]:
    """The engine's name of the project network ``network`` (e.g. ``<project>_bus-link``) and the
    container's address on it."""
    template = "{{range $name, $net := .NetworkSettings.Networks}}{{$name}} {{$net.IPAddress}}\n{{end}}"
    for line in docker("inspect", "-f", template, container).splitlines():
        name, _, address = line.partition(" ")
        if name.endswith(f"_{network}") and address:
            return name, address
    raise RuntimeError(f"{container} has no address on {network}")


def has_command(image: str, command: str) -> bool:
    probe = ["docker", "run", "--rm", "--network", "none", "--entrypoint", "sh", image, "-c"]
    return subprocess.run([*probe, f"command -v {command}"], capture_output=True).returncode == 0


def start_relay(candidate: Candidate, image: str, host_access: str, bus_link: str, tag: str) -> str:
    """A relay container with bus-ports' hardening; returns its id once it is running."""
    container = docker(
        "create", "--name", f"{tag}-{uuid.uuid4().hex[:6]}", "--init",
        "--user", DEFAULT_RUN_AS["forwarder"], "--cap-drop", "ALL",
        "--security-opt", "no-new-privileges:true",
        "--read-only", "--tmpfs", "/tmp", "--memory", str(32 * 1024**2), "--pids-limit", "256",
        "--dns", "127.0.0.1", "--dns-option", "timeout:1", "--dns-option", "attempts:1",
        "--network", host_access, "--publish", f"127.0.0.1::{CLIENT_PORT}",
        "--entrypoint", candidate.entrypoint, image, *candidate.args,
    )  # fmt: skip
    docker("network", "connect", bus_link, container)
    docker("start", container)
    return container


def wait_for_info(port: int, timeout: float = 10.0) -> None:
    """Until a connection to the relay gets the bus's INFO line (the relay reaches the bus)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                if conn.recv(4).startswith(b"INFO"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no INFO from the bus through 127.0.0.1:{port}")
        time.sleep(0.1)


async def open_connections(nats_url: str, count: int, container: str) -> int | None:
    """Memory of ``container`` while ``count`` NATS connections are open through it."""
    clients = [await nats.connect(nats_url, allow_reconnect=False) for _ in range(count)]
    try:
        await asyncio.sleep(1)
        return engine.container_memory(container)
    finally:
        for client in clients:
            await client.close()


def with_address(url: str, host: str, port: int) -> str:
    parts = urlsplit(url)
    login = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=f"{login}@{host}:{port}" if login else f"{host}:{port}"))


@dataclass(frozen=True)
class Bench:
    monitor_url: str
    duration: float
    max_payload: int

    def measure(self, row: Row, url: str, container: str | None = None, connections: int = 0) -> Row:
        """Request/reply through ``url`` into ``row``; the memory of ``container`` (the relay) too."""
        if container:
            row.memory_idle = engine.container_memory(container)
            if connections:
                row.memory_open = asyncio.run(open_connections(url, connections, container))
        try:
            row.result = bench.run(
                url, self.monitor_url, duration=self.duration, max_payload=self.max_payload
            )
        except Exception as exc:  # a relay that cannot keep up is a figure too
            row.note = f"failed: {exc}"
        if container:
            row.memory_after = engine.container_memory(container)
            row.memory_peak = peak_memory(container)
        return row


def peak_memory(container: str) -> int | None:
    """The container's highest memory use so far (page cache included), from its cgroup."""
    cid = docker("inspect", "-f", "{{.Id}}", container)
    for path in (
        f"/sys/fs/cgroup/memory/docker/{cid}/memory.max_usage_in_bytes",  # v1, cgroupfs driver
        f"/sys/fs/cgroup/memory/system.slice/docker-{cid}.scope/memory.max_usage_in_bytes",
        f"/sys/fs/cgroup/docker/{cid}/memory.peak",  # v2
        f"/sys/fs/cgroup/system.slice/docker-{cid}.scope/memory.peak",
    ):
        try:
            return int(Path(path).read_text())
        except (OSError, ValueError):
            continue
    return None


def mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 1024**2:.2f}"


def report(rows: list[Row], connections: int) -> None:
    sizes = sorted({lat.size for row in rows if row.result for lat in row.result.latency})
    names = {128: "128 B", 1024: "1 KiB", 65536: "64 KiB"}
    heads = [names.get(size, f"{size / 1024**2:g} MiB") for size in sizes]
    width = max(len(row.name) for row in rows) + 2
    print("request/reply p50 / p99 in ms (requests), one in flight; relay memory in MiB (docker stats)")
    line = f"{'':{width}}" + "".join(f"{head:>24}" for head in heads)
    print(line + f"{'idle':>8}{f'{connections} conns':>10}{'after':>8}{'peak':>8}")
    for row in rows:
        cells = []
        for size in sizes:
            lat = next((x for x in row.result.latency if x.size == size), None) if row.result else None
            cells.append(f"{lat.p50_ms:.2f} / {lat.p99_ms:.2f} ({lat.requests})" if lat else "-")
        memory = f"{mib(row.memory_idle):>8}{mib(row.memory_open):>10}{mib(row.memory_after):>8}"
        memory += f"{mib(row.memory_peak):>8}"
        print(f"{row.name:{width}}" + "".join(f"{cell:>24}" for cell in cells) + memory)
        if row.note:
            print(f"{'':{width}}{row.note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds of `bench` per relay")
    parser.add_argument("--candidates", action="store_true", help="also measure the other relays")
    parser.add_argument("--connections", type=int, default=20, help="idle connections for memory")
    parser.add_argument(
        "--no-proxy", action="store_true", help="also measure each candidate at its own address"
    )
    parser.add_argument(
        "--only", help="measure only the candidates whose name matches this regular expression"
    )
    parser.add_argument("--relay-image", help="image of the bus-image candidates (default: the bus's)")
    args = parser.parse_args()

    rows: list[Row] = []
    started: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        name = f"bench-fw-{uuid.uuid4().hex[:8]}"
        (folder / "nachos-deploy.yaml").write_text(
            f"project: {name}\n"
            "bus: {client_port: 0, monitor_port: 0}\n"
            "components: {gateway: {enabled: false}, llm-proxy: {enabled: false}}\n"
        )
        stack = prepare(folder / "nachos-deploy.yaml", cwd=folder, environ={})
        try:
            result = lifecycle.up(stack, timeout=60)
            url = result.endpoints.nats_url
            runner = Bench(result.endpoints.monitor_url, args.duration, stack.plan.bus.max_payload)
            with compose_client(stack) as client:
                states = engine.states(client)
            forwarder = states[PORTS].container
            host_access, ports_ip = network_address(forwarder, HOST_NETWORK)
            bus_link, bus_ip = network_address(states[BUS].container, BUS_LINK_NETWORK)
            print(f"bus-ports runs: {docker('inspect', '-f', '{{json .Config.Entrypoint}}', forwarder)}")
            rows.append(runner.measure(Row(f"{PORTS} (this stack's)"), url, forwarder, args.connections))
            ports_url = with_address(url, ports_ip, CLIENT_PORT)
            rows.append(runner.measure(Row(f"{PORTS}, no docker-proxy"), ports_url))
            bus_url = with_address(url, bus_ip, CLIENT_PORT)
            rows.append(runner.measure(Row("direct to the bus (floor)"), bus_url))

            if args.candidates:
                available: dict[tuple[str, str], bool] = {}
                for candidate in CANDIDATES:
                    if args.only and not re.search(args.only, candidate.name):
                        continue
                    image = candidate.image or args.relay_image or stack.plan.bus.service.image
                    row = Row(candidate.name)
                    rows.append(row)
                    if candidate.needs:
                        key = (image, candidate.needs)
                        if key not in available:
                            available[key] = has_command(image, candidate.needs)
                        if not available[key]:
                            row.note = f"skipped: no {candidate.needs} in {image}"
                            continue
                    container = start_relay(candidate, image, host_access, bus_link, name)
                    started.append(container)
                    port = int(docker("port", container, f"{CLIENT_PORT}/tcp").split(":")[-1])
                    wait_for_info(port)
                    runner.measure(row, with_address(url, "127.0.0.1", port), container, args.connections)
                    if args.no_proxy:
                        _, relay_ip = network_address(container, HOST_NETWORK)
                        relay_url = with_address(url, relay_ip, CLIENT_PORT)
                        rows.append(runner.measure(Row(f"{candidate.name}, no docker-proxy"), relay_url))
                    docker("rm", "-f", container)
                    started.remove(container)
        finally:
            for container in started:
                subprocess.run(["docker", "rm", "-f", container], capture_output=True)
            teardown.down(stack, volumes=True)
    report(rows, args.connections)


if __name__ == "__main__":
    main()
