"""What the commands found: plain result types and their JSON, apart from the code that finds them.

``report`` prints them for people, the CLI prints their ``as_json`` for scripts; neither needs the
Docker or NATS libraries to do so.
"""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class BusReport:
    """The outcome of one gate check; facts are filled in as far as the check got before failing.

    ``lasting`` marks a problem of a bus that answers but is set up wrong (JetStream off, another
    max_payload): waiting cannot clear it, so the gate gives up on it within a second."""

    healthy: bool
    problem: str | None
    server_version: str | None
    jetstream: bool
    max_payload: int | None
    connections: int | None
    round_trip_ms: float | None
    lasting: bool = False


@dataclass(frozen=True)
class ServiceReport:
    """One service at one moment, judged by :func:`nachos_deploy.lifecycle.observe.judge` (the only place that
    decides whether a service is ok)."""

    name: str
    status: str  # the container's state, or "missing"
    health: str | None
    connection_name: str | None
    connected: bool | None  # None: not checked (the bus itself, or no connection name)
    problem: str | None = None  # None: running, healthy where it has a check, and on the bus
    final: bool = False  # the problem cannot clear by waiting (an exit, a restart, a fresh failure)
    tool_id: str | None = None
    healed: bool = False  # `up` restarted it because it was off the bus or stuck restarting

    @property
    def ok(self) -> bool:
        return self.problem is None

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "name": self.name,
            "status": self.status,
            "health": self.health,
            "connection_name": self.connection_name,
            "connected": self.connected,
            "ok": self.ok,
            "problem": self.problem,
        }
        if self.tool_id is not None:
            doc["tool_id"] = self.tool_id
        if self.healed:
            doc["restarted_by_up"] = True
        return doc


@dataclass(frozen=True)
class Endpoints:
    """Where the host reaches the bus. ``nats_url`` carries the operator's credentials when the bus
    requires them, so a caller can use it as it is; people are shown ``shown_nats_url``. On a
    clustered bus ``nats_url`` and ``monitor_url`` reach whichever node is up (the forwarder picks a
    live one per connection), so they outlive any one node; ``nodes`` reach one node each."""

    nats_url: str
    # Where the host reads the bus's monitoring: the system user's NATS URL (with its password: never
    # shown), or an HTTP monitoring URL where there is no system user (a bus with auth off).
    monitor_url: str
    # Every node of a clustered bus, the first included: (server name, NATS URL, monitoring URL).
    nodes: tuple[tuple[str, str, str], ...] = ()
    # The HTTP monitoring ports the host got (bus.publish_monitor): the bus's, and each node's.
    published_monitor_url: str | None = None
    published_node_monitors: tuple[str | None, ...] = ()
    # The CA file that clients of a tls:// bus trust (bus.tls), None with TLS off or when the
    # certificate chains to a CA the system trusts.
    ca_file: str | None = None

    @property
    def servers(self) -> list[str]:
        """``nats_url``, then each node's of a clustered bus: every URL, for a client that fails over."""
        return [self.nats_url, *(url for _, url, _ in self.nodes)]

    @property
    def shown_nats_url(self) -> str:
        return redact(self.nats_url)

    @property
    def shown_monitor_url(self) -> str | None:
        """The HTTP monitoring URL a person or a tool may use, None when none is published: the
        host's own reading source is a NATS login, never shown."""
        return _shown_monitor(self.monitor_url, self.published_monitor_url)

    @property
    def node_monitors(self) -> tuple[str, ...]:
        """Monitoring URLs of each node of a cluster (empty for one node): who is connected is the
        sum of every node's view, which the bus's own URL (one node per request) cannot give."""
        return tuple(monitor_url for _, _, monitor_url in self.nodes)

    def as_json(self) -> dict[str, Any]:
        # tls and ca_file are always there, so that a CI step reads one shape whatever the bus's mode.
        tls = urllib.parse.urlsplit(self.nats_url).scheme == "tls"
        document: dict[str, Any] = {
            "nats_url": self.nats_url,
            "monitor_url": self.shown_monitor_url,
            "tls": tls,
            "ca_file": self.ca_file if tls else None,
        }
        if self.nodes:
            published = self.published_node_monitors or (None,) * len(self.nodes)
            document["nodes"] = [
                {"name": name, "nats_url": nats_url, "monitor_url": _shown_monitor(monitor_url, shown)}
                for (name, nats_url, monitor_url), shown in zip(self.nodes, published, strict=False)
            ]
        return document


def _shown_monitor(source: str, published: str | None) -> str | None:
    if published is not None:
        return published
    return source if urllib.parse.urlsplit(source).scheme in ("http", "https") else None


def redact(url: str) -> str:
    """``url`` without its password (the user name stays: it says which identity is used)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


@dataclass(frozen=True)
class StreamReport:
    """The audit stream after ``up`` provisioned it (or as ``status`` read it)."""

    name: str
    action: str  # created | updated | unchanged | seen
    messages: int
    bytes: int

    def as_json(self) -> dict[str, Any]:
        return {"stream": self.name, "action": self.action, "messages": self.messages, "bytes": self.bytes}


@dataclass(frozen=True)
class WebhookReport:
    """One channel's public webhook URL, and how its proof from the host went (``web/webhooks.py``):
    the provider's own call (Meta's verification handshake, Slack's signed url_verification, a
    browser's first GET of the webchat's page) through the ingress to the channel. ``proof`` None: the
    channel has no such call to prove it by, so only its URL is reported. ``unproven``: why the call was not
    made although there is one (the secret it carries is not set where this command runs: `status`
    from another shell); neither proven nor failed."""

    channel: str
    kind: str  # whatsapp | slack | webchat
    url: str  # to paste into the provider's console
    proof: str | None  # meta-verification | slack-url-verification | webchat-page | None
    problem: str | None = None  # None: proven (or nothing to prove)
    status: int | None = None  # the HTTP status the last try got
    ms: float | None = None  # the proof's round trip, host -> ingress -> channel -> host
    unproven: str | None = None

    @property
    def ok(self) -> bool:
        return self.problem is None

    @property
    def proven(self) -> bool:
        return self.proof is not None and self.ok and self.unproven is None

    def as_json(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "kind": self.kind,
            "url": self.url,
            "proof": self.proof,
            "proven": self.proven,
            "ok": self.ok,
            "problem": self.problem,
            "unproven": self.unproven if self.proof is not None else "nothing upstream to prove it by",
            "status": self.status,
            "ms": None if self.ms is None else round(self.ms, 1),
        }


@dataclass
class UpResult:
    project: str
    endpoints: Endpoints
    services: list[ServiceReport]
    phases: dict[str, float] = field(default_factory=dict)
    bus: BusReport | None = None
    changed_files: list[str] = field(default_factory=list)
    audit: StreamReport | None = None
    # Nothing had changed since the last full up: Compose was not run, the stack only proven.
    unchanged: bool = False
    # What holds but is weaker than asked (e.g. bus nodes sharing a machine of a swarm).
    warnings: list[str] = field(default_factory=list)
    # Each webhook channel's public URL, proven from the host once every service was ok.
    webhooks: list[WebhookReport] = field(default_factory=list)
    # Running components this up replaced one at a time (an upgrade): name -> seconds from its
    # replacement to its new container proven (docs/upgrades.md).
    upgraded: dict[str, float] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        bus = self.bus
        return {
            "ok": True,
            "project": self.project,
            "unchanged": self.unchanged,
            "upgraded": {name: round(seconds, 3) for name, seconds in self.upgraded.items()},
            "rolled_back": [],  # a failed upgrade's list is in the failure document (exit 6)
            **self.endpoints.as_json(),
            "services": [service.as_json() for service in self.services],
            "webhooks": [webhook.as_json() for webhook in self.webhooks],
            "phases": {name: round(seconds, 3) for name, seconds in self.phases.items()},
            "warnings": list(self.warnings),
            "bus": {
                "version": bus.server_version,
                "jetstream": bus.jetstream,
                "max_payload": bus.max_payload,
                "round_trip_ms": bus.round_trip_ms,
                "audit": self.audit.as_json() if self.audit else None,
            }
            if bus
            else None,
        }


@dataclass
class DownResult:
    project: str
    volumes_removed: list[str]
    volumes_kept: list[str]
    # Whether the project had a container (or Swarm task) on this engine when `down` began: a
    # mistyped `-p` finds nothing, and the user must not read that their stack is gone.
    found: bool = True


@dataclass
class StatusResult:
    project: str
    endpoints: Endpoints | None
    services: list[ServiceReport]
    bus: dict[str, Any] | None
    bus_memory: int | None
    problems: list[str]
    audit: StreamReport | None = None
    webhooks: list[WebhookReport] = field(default_factory=list)  # proven as `up` proves them

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "project": self.project,
            **(self.endpoints.as_json() if self.endpoints else {"nats_url": None, "monitor_url": None}),
            "services": [service.as_json() for service in self.services],
            "webhooks": [webhook.as_json() for webhook in self.webhooks],
            "bus": {
                **self.bus,
                "container_memory": self.bus_memory,
                "audit": self.audit.as_json() if self.audit else None,
            }
            if self.bus
            else None,
            "problems": self.problems,
        }
