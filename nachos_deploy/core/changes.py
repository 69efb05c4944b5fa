"""What `up` would change, decided without changing anything (``nachos-deploy plan``).

Pure: the targets read what runs (:class:`Observed`) and what the rendered files ask for
(:class:`Wanted`), and :func:`decide` applies the engine's own rule to them, so that the rule is
tested without an engine and the same words reach people, ``--json`` and the other commands that ask
(``up`` learns from :class:`ServiceChange` which running components it would replace).

The words are stable, documented in docs/plan.md and docs/json-output.md:

- action: ``create`` (no container or service yet), ``recreate`` (replaced: a new container, or new
  Swarm tasks), ``remove`` (an orphan the engine removes), ``keep`` (the same container);
- reasons: ``image``, ``environment``, ``mounts``, ``configuration`` (anything else the engine
  compares: Compose's ``com.docker.compose.config-hash``, Swarm's configs and secrets), ``not
  running`` (kept, and started), ``orphan`` (no service of the configuration names it).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

Action = Literal["create", "recreate", "remove", "keep"]
FileState = Literal["new", "changed", "stale"]

IMAGE = "image"
ENVIRONMENT = "environment"
MOUNTS = "mounts"
CONFIGURATION = "configuration"
NOT_RUNNING = "not running"
ORPHAN = "orphan"
CREDENTIALS = "credentials"  # Compose: the bus's credentials are not those the servers started with
REASONS = (IMAGE, ENVIRONMENT, MOUNTS, CONFIGURATION, CREDENTIALS, NOT_RUNNING, ORPHAN)


# (type, source, target, read_only): a bind's host path, a volume's engine name, "" for a tmpfs.
Mount = tuple[str, str, str, bool]


@dataclass(frozen=True)
class ServiceChange:
    """What `up` would do to one service, and why."""

    name: str
    action: Action
    reasons: tuple[str, ...] = ()  # among REASONS, in that order

    @property
    def changes(self) -> bool:
        """Whether `up` would change anything of it: a kept container that is stopped is started."""
        return self.action != "keep" or NOT_RUNNING in self.reasons

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "action": self.action, "reasons": list(self.reasons)}


def started_over(changes: Sequence[ServiceChange]) -> list[ServiceChange]:
    """``changes`` when `up` removes the stack's containers first (its credentials changed): every
    service it starts is recreated, with ``credentials`` among its reasons; orphans stay removed."""
    over = []
    for change in changes:
        if change.action in ("keep", "recreate"):
            reasons = tuple(r for r in REASONS if r in (*change.reasons, CREDENTIALS) and r != NOT_RUNNING)
            change = ServiceChange(change.name, "recreate", reasons)
        over.append(change)
    return over


@dataclass(frozen=True)
class Observed:
    """One service as the engine runs it: a Compose container, or a Swarm service's spec. A field
    the target cannot read is left empty and compared as equal (``None``)."""

    running: bool
    image: str | None  # Compose: "<reference> <image id>" of the container; Swarm: the spec's reference
    environment: Mapping[str, str] | None
    mounts: frozenset[Mount] | None
    configuration: str | None  # Compose's config hash; Swarm: a digest of its configs and secrets
    finished: bool = False  # a one-shot (volume-init) that ran and exited 0: as `up` leaves it


@dataclass(frozen=True)
class Wanted:
    """One service as the rendered files ask for it, in the terms of :class:`Observed`."""

    name: str
    image: str | None
    environment: Mapping[str, str] | None
    mounts: frozenset[Mount] | None
    configuration: str | None
    one_shot: bool = False


def _differs(wanted: object, observed: object) -> bool:
    return wanted is not None and observed is not None and wanted != observed


def decide_one(wanted: Wanted, observed: Observed | None) -> ServiceChange:
    """The engine's rule for one service: replaced when its image or its configuration differs
    (environment and mounts are part of the configuration; named when they are the difference);
    a one-shot that finished and a running container are kept; a stopped one is started."""
    if observed is None:
        return ServiceChange(wanted.name, "create")
    reasons = [
        reason
        for reason, new, old in (
            (IMAGE, wanted.image, observed.image),
            (ENVIRONMENT, wanted.environment, observed.environment),
            (MOUNTS, wanted.mounts, observed.mounts),
        )
        if _differs(new, old)
    ]
    configured = _differs(wanted.configuration, observed.configuration)
    if configured and not reasons:
        reasons.append(CONFIGURATION)  # the hash differs by something the other reasons do not name
    if reasons or configured:
        return ServiceChange(wanted.name, "recreate", tuple(reasons))
    if wanted.one_shot and observed.finished:
        return ServiceChange(wanted.name, "keep")
    if not observed.running:
        return ServiceChange(wanted.name, "keep", (NOT_RUNNING,))
    return ServiceChange(wanted.name, "keep")


def decide(
    wanted: Sequence[Wanted],
    observed: Mapping[str, Observed],
    *,
    orphans: Action,
) -> list[ServiceChange]:
    """Every wanted service in order, then the orphans (running services no wanted one names) with
    ``orphans``: ``remove`` where `up` removes them (Compose's ``--remove-orphans``, Swarm's
    ``--prune`` when it deploys the whole file), ``keep`` where it leaves them."""
    names = {w.name for w in wanted}
    found = [decide_one(w, observed.get(w.name)) for w in wanted]
    found += [ServiceChange(name, orphans, (ORPHAN,)) for name in sorted(set(observed) - names)]
    return found


@dataclass(frozen=True)
class FileDiff:
    """One rendered file that `up` would write or remove, with its unified diff."""

    name: str
    state: FileState
    diff: str

    def as_json(self) -> dict[str, object]:
        return {"name": self.name, "state": self.state, "diff": self.diff}


def diff_files(
    old: Mapping[str, str | None], new: Mapping[str, str], stale: Mapping[str, str | None]
) -> list[FileDiff]:
    """The rendered files against the output folder (``old``: each rendered name's current text,
    None when there is none; ``stale``: files an earlier render wrote that `up` would remove)."""
    found = []
    for name in sorted(new):
        before = old.get(name)
        if before == new[name]:
            continue
        state: FileState = "new" if before is None else "changed"
        found.append(FileDiff(name, state, _unified(name, before, new[name])))
    for name in sorted(stale):
        found.append(FileDiff(name, "stale", _unified(name, stale[name], None)))
    return found


def _unified(name: str, before: str | None, after: str | None) -> str:
    lines = difflib.unified_diff(
        (before or "").splitlines(keepends=True),
        (after or "").splitlines(keepends=True),
        fromfile="/dev/null" if before is None else f"a/{name}",
        tofile="/dev/null" if after is None else f"b/{name}",
    )
    return "".join(
        line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines
    )


@dataclass(frozen=True)
class Objects:
    """The engine objects `up` would create: named as the engine names them (``<project>_<name>``)."""

    volumes: tuple[str, ...] = ()
    networks: tuple[str, ...] = ()
    configs: tuple[str, ...] = ()  # Swarm only
    secrets: tuple[str, ...] = ()  # Swarm only
    # Compose: existing networks whose subnet or internal flag the files change, which Compose
    # removes and creates again (and with them every container attached: see docs/plan.md).
    replaced_networks: tuple[str, ...] = ()

    def as_json(self) -> dict[str, list[str]]:
        return {
            "volumes": list(self.volumes),
            "networks": list(self.networks),
            "configs": list(self.configs),
            "secrets": list(self.secrets),
            "replaced_networks": list(self.replaced_networks),
        }

    def __bool__(self) -> bool:
        return bool(self.volumes or self.networks or self.configs or self.secrets or self.replaced_networks)


@dataclass(frozen=True)
class PlanResult:
    """Everything `plan` found: the files, the services, the objects to create."""

    project: str
    target: str
    output_dir: str
    files: tuple[FileDiff, ...]
    services: tuple[ServiceChange, ...]
    create: Objects = field(default_factory=Objects)

    @property
    def changes(self) -> bool:
        """Whether `up` would change anything: exit 2 of `plan`, else 0."""
        return bool(self.files) or any(s.changes for s in self.services) or bool(self.create)

    def as_json(self) -> dict[str, object]:
        return {
            "project": self.project,
            "target": self.target,
            "output_dir": self.output_dir,
            "changes": self.changes,
            "files": [f.as_json() for f in self.files],
            "services": [s.as_json() for s in self.services],
            "create": self.create.as_json(),
        }
