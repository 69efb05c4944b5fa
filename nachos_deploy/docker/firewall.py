"""The opt-in host firewall: one ``INPUT`` drop per private bridge of a project, tagged with its name.

Docker's internal networks stop a container's traffic to other networks and off the machine, but the
bridge of each network has an address on the host (its gateway), and a packet addressed to the host
goes through the host's ``INPUT`` chain, which Docker leaves alone. So any host program listening on a
wildcard address answers a shell inside a component (issue 19, item 7). The rule here drops what the
project's internal bridges send to the host, except replies to connections the host opened itself.

Each rule carries the comment ``nachos-deploy:<project>:<network>``, so that ``remove`` takes exactly
this project's rules and nothing else. ``iptables`` runs through :mod:`~nachos_deploy.docker.runner`
(the one module that starts processes), beside the engine it complements: the bridges are Docker's.
"""

from __future__ import annotations

import json
import os
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from nachos_deploy.core.errors import EnvironmentProblem, ExitCode
from nachos_deploy.docker import runner
from nachos_deploy.docker.errors import classify
from nachos_deploy.docker.parse import items, mapping
from nachos_deploy.docker.runner import DockerFailure

CHAIN = "INPUT"
TAG = "nachos-deploy"
FAMILIES = ("iptables", "ip6tables")  # IPv4 (required), IPv6 (when its tool is installed)
WAIT = ("-w", "5")  # wait for the xtables lock that Docker also takes, rather than fail at once
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
PROJECT_LABEL = "com.docker.compose.project"
NETWORK_LABEL = "com.docker.compose.network"

MISSING = (
    "The iptables command is not installed, and the host firewall needs it. Install it (on Debian as "
    "root: `apt-get install iptables`), or add the rule that docs/security.md#the-host-behind-the-"
    "private-networks shows with your own firewall."
)
NOT_ROOT = (
    "Changing the host's firewall needs root: run `sudo nachos-deploy firewall {action} -p {project}` "
    "(it changes only rules tagged nachos-deploy:{project}). Without root, see the rule in "
    "docs/security.md#the-host-behind-the-private-networks."
)


@dataclass(frozen=True)
class Bridge:
    """One bridge network of a project, as the host sees it: an interface with an address."""

    network: str  # the name in the Compose file (nachos-internal, gateway-link, ...)
    interface: str  # br-<id[:12]>, or the name the network's options give it
    gateway: str  # the host's address on it: what a container reaches the host at
    internal: bool = True  # False: egress or host-access, whose traffic may also leave the machine


@dataclass(frozen=True)
class Rule:
    """One of nachos-deploy's rules in a family's INPUT chain, as ``iptables -S`` prints it."""

    family: str
    interface: str
    network: str
    spec: tuple[str, ...]  # the rule's arguments after ``-A INPUT``: what ``-D INPUT`` takes back


def comment(project: str, network: str) -> str:
    """The tag of one rule; a project name never holds ``:``, so a prefix names one project only."""
    return f"{TAG}:{project}:{network}"


def drop_spec(project: str, bridge: Bridge) -> list[str]:
    """The rule for one bridge: drop every packet it brings to the host, except replies to what the
    host itself opened (``docker``'s own proxy and health checks never come this way, but a user's
    ``curl`` from the host to a container's address would)."""
    return [
        *("-i", bridge.interface),
        *("-m", "conntrack", "!", "--ctstate", "ESTABLISHED,RELATED"),
        *("-m", "comment", "--comment", comment(project, bridge.network)),
        *("-j", "DROP"),
    ]


def bridges_of(networks: Sequence[Mapping[str, object]]) -> list[Bridge]:
    """The bridge networks among ``docker network inspect`` documents, sorted by network, internal or
    not. Overlay networks (Swarm) have no address on the host and are left out."""
    found = []
    for network in networks:
        if network.get("Driver") != "bridge":
            continue
        labels, options = mapping(network.get("Labels")), mapping(network.get("Options"))
        name = str(labels.get(NETWORK_LABEL) or network.get("Name") or "")
        interface = str(options.get(BRIDGE_NAME_OPTION) or f"br-{str(network.get('Id', ''))[:12]}")
        config = items(mapping(network.get("IPAM")).get("Config"))
        gateway = next((str(c["Gateway"]) for c in config if c.get("Gateway")), "")
        found.append(Bridge(name, interface, gateway, network.get("Internal") is True))
    return sorted(found, key=lambda bridge: bridge.network)


def project_bridges(project: str) -> list[Bridge]:
    """The bridges of a Compose project on this engine (none when it is not running)."""
    label = f"label={PROJECT_LABEL}={project}"
    try:
        ids = runner.output(["docker", "network", "ls", "--quiet", "--no-trunc", "--filter", label]).split()
        if not ids:
            return []
        documents = json.loads(runner.output(["docker", "network", "inspect", *ids]))
    except DockerFailure as failure:
        raise classify(
            failure, "Cannot list the project's networks", exit_code=ExitCode.ENVIRONMENT
        ) from None
    return bridges_of(items(documents))


def parse_rules(family: str, text: str, project: str | None = None) -> list[Rule]:
    """nachos-deploy's rules in ``iptables -S INPUT`` output (of ``project`` only, when given)."""
    prefix = f"{TAG}:" if project is None else f"{TAG}:{project}:"
    found = []
    for line in text.splitlines():
        words = shlex.split(line)
        if words[:2] != ["-A", CHAIN] or "--comment" not in words or "-i" not in words:
            continue
        tag = words[words.index("--comment") + 1]
        if tag.startswith(prefix):
            found.append(Rule(family, words[words.index("-i") + 1], tag.rsplit(":", 1)[1], tuple(words[2:])))
    return found


def require_root(action: str, project: str) -> None:
    """An EnvironmentProblem naming ``sudo`` unless this process may change the firewall."""
    if os.geteuid() != 0:
        raise EnvironmentProblem(NOT_ROOT.format(action=action, project=project))


def families() -> list[str]:
    """The families whose tool answers: iptables must (an EnvironmentProblem naming the fix
    otherwise), ip6tables may be missing (an IPv4-only host)."""
    present = []
    for family in FAMILIES:
        try:
            runner.run([family, "--version"], timeout=10, missing=MISSING)
        except EnvironmentProblem:
            if family == FAMILIES[0]:
                raise
            continue
        present.append(family)
    return present


def rules(family: str, project: str | None = None) -> list[Rule]:
    """nachos-deploy's rules in one family's INPUT chain (of ``project`` only, when given)."""
    try:
        listed = runner.run([family, *WAIT, "-S", CHAIN], timeout=30, missing=MISSING).stdout
    except DockerFailure as exc:
        raise EnvironmentProblem(f"`{family} -S {CHAIN}` failed: {exc.text}. {_fix(exc)}") from None
    return parse_rules(family, listed, project)


def insert(family: str, spec: Sequence[str]) -> None:
    """Put one rule first in the INPUT chain, ahead of any accept a host firewall may hold."""
    _change(family, ["-I", CHAIN, "1", *spec])


def delete(rule: Rule) -> None:
    _change(rule.family, ["-D", CHAIN, *rule.spec])


def _change(family: str, args: list[str]) -> None:
    try:
        runner.run([family, *WAIT, *args], timeout=30, missing=MISSING)
    except DockerFailure as exc:
        raise EnvironmentProblem(
            f"`{family} {' '.join(shlex.quote(a) for a in args)}` failed: {exc.text}. {_fix(exc)}"
        ) from None


def _fix(failure: DockerFailure) -> str:
    text = failure.text.lower()
    if "permission denied" in text or "you must be root" in text:
        return "Run it as root (sudo)."
    if "conntrack" in text or "comment" in text:
        return "The kernel lacks the conntrack or comment match: `modprobe xt_conntrack xt_comment`."
    return "See docs/security.md#the-host-behind-the-private-networks for the rule to add by hand."
