"""`firewall install | remove | status`: the opt-in rule that keeps a project's private networks
off the host's own services (docs/security.md#the-host-behind-the-private-networks).

The rules name the networks' bridge interfaces, which exist only while the networks do: a `down`
and a later `up` make new ones. So ``install`` is written to be run again at any time: it adds the
rules missing for the bridges that exist now and removes this project's rules for bridges that are
gone, and changes nothing when everything is in place. Nothing here touches a rule that is not
tagged with the project's name.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from nachos_deploy.core.errors import DeployError, ExitCode
from nachos_deploy.core.names import EGRESS_NETWORK
from nachos_deploy.docker import firewall
from nachos_deploy.docker.firewall import Bridge, Rule


@dataclass(frozen=True)
class FirewallState:
    """What the host's firewall does for one project's private networks, after an action."""

    project: str
    families: tuple[str, ...]
    bridges: tuple[Bridge, ...]
    rules: tuple[Rule, ...]  # the project's rules now in place, every family
    added: tuple[Rule, ...] = field(default=())
    removed: tuple[Rule, ...] = field(default=())

    def covered(self, bridge: Bridge) -> bool:
        """Whether every family drops what this bridge sends to the host."""
        return all(
            any(rule.family == family and rule.interface == bridge.interface for rule in self.rules)
            for family in self.families
        )

    @property
    def uncovered(self) -> tuple[Bridge, ...]:
        """The internal bridges whose traffic still reaches the host (the plain ones are opt-in)."""
        return tuple(bridge for bridge in self.bridges if bridge.internal and not self.covered(bridge))

    @property
    def open_egress(self) -> bool:
        """Whether the project's egress network exists and still reaches the host."""
        return any(b.network == EGRESS_NETWORK and not self.covered(b) for b in self.bridges)

    @property
    def stale(self) -> tuple[Rule, ...]:
        """Rules of this project for bridges that no longer exist (its networks were made anew)."""
        live = {bridge.interface for bridge in self.bridges}
        return tuple(rule for rule in self.rules if rule.interface not in live)

    @property
    def installed(self) -> bool:
        """Every internal bridge of the running project drops what it sends to the host."""
        return any(bridge.internal for bridge in self.bridges) and not self.uncovered

    def as_json(self) -> dict[str, Any]:
        return {
            "project": self.project,
            "installed": self.installed,
            "families": list(self.families),
            "bridges": [
                {
                    "network": b.network,
                    "interface": b.interface,
                    "gateway": b.gateway,
                    "internal": b.internal,
                    "dropped": self.covered(b),
                }
                for b in self.bridges
            ],
            "stale_rules": len(self.stale),
            "added": len(self.added),
            "removed": len(self.removed),
        }


def _state(project: str, families: Iterable[str], **changes: tuple[Rule, ...]) -> FirewallState:
    families = tuple(families)
    rules = tuple(rule for family in families for rule in firewall.rules(family, project))
    return FirewallState(project, families, tuple(firewall.project_bridges(project)), rules, **changes)


def status(project: str) -> FirewallState:
    """The project's bridges and rules as they are; reading the firewall needs root too."""
    firewall.require_root("status", project)
    return _state(project, firewall.families())


def install(project: str, *, egress: bool = False) -> FirewallState:
    """Drop what the project's internal bridges send to the host (with ``egress``, its plain bridges'
    too: egress and host-access); idempotent, and it takes back the project's rules for bridges that
    are gone. Fails (exit 1, nothing changed) when the project has no internal bridge on this
    engine: it is not running, or it runs on Swarm, whose overlay networks have no address on the
    host."""
    firewall.require_root("install", project)
    families = firewall.families()
    every = firewall.project_bridges(project)
    bridges = [bridge for bridge in every if bridge.internal or egress]
    if not any(bridge.internal for bridge in bridges):
        raise DeployError(
            f"Project {project} has no internal network on this engine, so there is no bridge to "
            "filter: the rules name the bridges that `up` creates. Run `nachos-deploy up -p "
            f"{project}` first, then `nachos-deploy firewall install -p {project}`. (A Swarm stack's "
            "overlay networks have no address on the host and need no rule.)",
            exit_code=ExitCode.FAILED,
        )
    live = {bridge.interface for bridge in every}
    added: list[Rule] = []
    removed: list[Rule] = []
    for family in families:
        present = firewall.rules(family, project)
        for rule in present:
            if rule.interface not in live:
                firewall.delete(rule)
                removed.append(rule)
        for bridge in bridges:
            if not any(rule.interface == bridge.interface for rule in present):
                spec = firewall.drop_spec(project, bridge)
                firewall.insert(family, spec)
                added.append(Rule(family, bridge.interface, bridge.network, tuple(spec)))
    return _state(project, families, added=tuple(added), removed=tuple(removed))


def remove(project: str) -> FirewallState:
    """Take back every rule tagged with the project's name, in every family; none is not an error."""
    firewall.require_root("remove", project)
    families = firewall.families()
    removed: list[Rule] = []
    for family in families:
        for rule in firewall.rules(family, project):
            firewall.delete(rule)
            removed.append(rule)
    return _state(project, families, removed=tuple(removed))


def coverage(project: str) -> FirewallState | None:
    """The state for ``doctor``, or None when it cannot be read (not root, no iptables, no engine):
    doctor then says what it could not check instead of failing."""
    try:
        return status(project)
    except DeployError:
        return None
