"""A stack as a Compose project on the engine: its client, and where the host reaches its bus.

Every command that talks to Compose gets its client here, so they all see the same files and the
same variables. Required secrets that are not set are passed to Compose as blanks: commands that only
read or remove the stack (``status``, ``logs``, ``down``) must work without them, and without Compose's
warnings about blank variables; ``up`` and ``validate`` refuse them before they get here.
"""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from nachos_deploy.core.errors import DeployError, ExitCode
from nachos_deploy.core.plan import PORTS, forwarded_ports
from nachos_deploy.core.results import Endpoints
from nachos_deploy.docker import engine
from nachos_deploy.docker.engine import Compose
from nachos_deploy.io import credentials, files
from nachos_deploy.io.stack import DOTENV, Stack


@contextlib.contextmanager
def compose_client(stack: Stack) -> Iterator[Compose]:
    """A Compose client on the files as rendered now; relative paths resolve from the output folder."""
    unset = sorted({name for _, name in stack.plan.required_secrets()} - stack.variables)
    with contextlib.ExitStack() as stack_of_files:
        folder = stack_of_files.enter_context(files.staged(stack.output_dir, stack.files))
        env_files: list[Path] = []
        if unset:
            dotenv = stack.output_dir / DOTENV
            if dotenv.is_file():
                env_files.append(dotenv)  # --env-file replaces Compose's own reading of it
            blanks = stack_of_files.enter_context(tempfile.TemporaryDirectory(prefix="nachos-deploy-"))
            blank_file = Path(blanks) / "unset.env"
            blank_file.write_text("".join(f"{name}=\n" for name in unset), encoding="utf-8")
            env_files.append(blank_file)
        yield engine.compose_client(
            stack.project, folder / stack.compose_file.name, stack.output_dir, env_files, stack.override_file
        )


def bus_endpoints(
    client: Compose | None, stack: Stack, states: Mapping[str, engine.ServiceState] | None = None
) -> Endpoints | None:
    """Host URLs of the running bus from the ports its forwarder publishes (maybe engine-picked);
    ``states`` read a moment ago save asking the engine again (no ``client``: a Swarm stack's
    containers on this node). For a clustered bus, every node's."""
    if states is None:
        if client is None:
            from nachos_deploy.docker import swarm

            states = swarm.states(stack.project)
        else:
            states = engine.states(client)
    forwarder = states.get(PORTS)
    if forwarder is None or forwarder.status != "running":
        return None
    host = stack.plan.bus.bind_address
    host = "127.0.0.1" if host in ("0.0.0.0", "") else host
    host = "[::1]" if host == "::" else (f"[{host}]" if ":" in host else host)
    login = credentials.load(stack.output_dir) if stack.plan.auth else None
    nodes = []
    for index, node in enumerate(stack.plan.bus.nodes, start=1):
        client_port, monitor_port = (forwarder.host_port(port) for port in forwarded_ports(index))
        if not client_port or not monitor_port:
            return None
        nats_url = f"nats://{host}:{client_port}"
        nodes.append(
            (node.name, login.operator_url(nats_url) if login else nats_url, f"http://{host}:{monitor_port}")
        )
    _, nats_url, monitor_url = nodes[0]
    return Endpoints(nats_url, monitor_url, tuple(nodes) if stack.plan.bus.clustered else ())


def running_endpoints(stack: Stack) -> Endpoints:
    """Host URLs of a running stack's bus, or a clear error when it is not running."""
    engine.require_engine()
    if stack.swarm:
        endpoints = bus_endpoints(None, stack)
    else:
        with compose_client(stack) as client:
            endpoints = bus_endpoints(client, stack)
    if endpoints is None:
        raise DeployError(
            f"The bus of project {stack.project} is not running; start it with "
            f"`nachos-deploy up -p {stack.project}`.",
            exit_code=ExitCode.FAILED,
        )
    return endpoints
