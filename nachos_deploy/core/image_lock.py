"""The image lock (``nachos-deploy.lock``): which image each service of a stack runs, by content.

A tag such as ``nats:alpine`` names whatever was last pulled or built under it, so two machines (or
one machine on two days) can run different code from the same deploy file. The lock records, per
service the rendered files run, the reference the configuration gives, the image's id and, when the
image came from a registry, its registry digest. With a lock beside the deploy file, rendering pins
``repository@sha256:...`` wherever there is a digest (the engine then cannot pick another image), and
``up``, ``validate`` and ``doctor`` refuse an image whose id differs from the lock's (a locally
built image has no digest: its id is the only thing that says it is the same).

Pure: parsing, formatting, pinning and comparing. Reading the file and asking the engine are done
by :mod:`nachos_deploy.io.lockfile` and :mod:`nachos_deploy.docker.images`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from nachos_deploy.core.errors import ConfigError
from nachos_deploy.core.names import VOLUME_INIT
from nachos_deploy.core.plan_types import Plan, ServicePlan

LOCK_FILE = "nachos-deploy.lock"  # beside the deploy file, committed with it
LOCK_FORMAT = 1
LOCK_COMMAND = "nachos-deploy lock"
GENERATED_BY = (
    f"Written by `{LOCK_COMMAND}`: the image of every service, by registry digest or image id. "
    f"Commit it with the deploy file; run `{LOCK_COMMAND}` again to take new images."
)
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


@dataclass(frozen=True)
class LockedImage:
    """One service's image as locked: the configured reference, its id, its registry digest."""

    image: str  # as the configuration gives it (e.g. nats:alpine), never pinned
    image_id: str  # sha256:...
    digest: str | None = None  # sha256:... of the registry manifest; None for a local build

    @property
    def rendered(self) -> str:
        """The reference the rendered files use: pinned to the digest when there is one."""
        return pinned(self.image, self.digest) if self.digest else self.image


@dataclass(frozen=True)
class ImageLock:
    services: Mapping[str, LockedImage]


def repository(reference: str) -> str:
    """``reference`` without its tag or digest: ``nats:alpine`` → ``nats``, ``host:5000/a/b:1`` →
    ``host:5000/a/b`` (a colon before the last slash is a registry's port, not a tag)."""
    name = reference.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def pinned(reference: str, digest: str) -> str:
    """``repository@digest``: the tag is dropped, since Docker ignores it beside a digest and a tag
    that no longer matches would only mislead a reader."""
    return f"{repository(reference)}@{digest}"


def locked_services(plan: Plan) -> list[tuple[str, str]]:
    """(service, image reference) of every service the rendered files run: the bus and its nodes,
    its port forwarder, the sidecars, the components (with the state store and the ingress), and
    volume-init (which runs the bus's image) when there is something to prepare."""
    found = [(service.name, service.image) for service in plan.services]
    if plan.prepared_volumes:
        found.append((VOLUME_INIT, plan.bus.service.image))
    return sorted(found)


def configured_services(plan: Plan, lock: ImageLock | None) -> list[tuple[str, str]]:
    """:func:`locked_services` with each pinned reference back as the configuration gives it: what
    ``lock`` resolves again (a tag, to its image of today)."""
    found = []
    for service, reference in locked_services(plan):
        entry = lock.services.get(service) if lock is not None else None
        found.append(
            (service, entry.image if entry is not None and entry.rendered == reference else reference)
        )
    return found


def pin(plan: Plan, lock: ImageLock) -> Plan:
    """The plan with each service whose configured image is the one locked, and that has a
    registry digest, running ``repository@digest``. A service whose image changed in the
    configuration keeps its new reference, which :func:`differences` then refuses."""

    def one(service: ServicePlan) -> ServicePlan:
        entry = lock.services.get(service.name)
        if entry is None or entry.digest is None or entry.image != service.image:
            return service
        return replace(service, image=entry.rendered)

    bus = plan.bus
    bus = replace(bus, service=one(bus.service), peers=tuple(one(p) for p in bus.peers), ports=one(bus.ports))
    sidecars = tuple(replace(s, service=one(s.service)) for s in plan.sidecars)
    ingress = plan.ingress
    if ingress is not None:
        ingress = replace(ingress, service=one(ingress.service))
    return replace(
        plan, bus=bus, sidecars=sidecars, components=tuple(one(c) for c in plan.components), ingress=ingress
    )


@dataclass(frozen=True)
class Difference:
    """One service whose image is not the locked one, in words a user can act on."""

    service: str
    image: str
    problem: str  # "not in the lock", "changed in the configuration", "missing", "differs"
    locked: str | None = None  # the locked id (or reference, when the configuration changed it)
    present: str | None = None  # the id on the engine (or the configured reference)

    def describe(self) -> str:
        if self.problem == "not in the lock":
            return f"{self.service} ({self.image}) is not in the lock"
        if self.problem == "changed in the configuration":
            return (
                f"{self.service}'s image is {self.present} in the configuration, the lock has {self.locked}"
            )
        if self.problem == "missing":
            return f"{self.service}'s locked image {self.image} (id {self.locked}) is not on this engine"
        return f"{self.service} runs {self.image}, whose id is {self.present}; the lock has {self.locked}"


def differences(
    plan: Plan, lock: ImageLock, present: Mapping[str, tuple[str, str | None] | None]
) -> list[Difference]:
    """Every way the images of ``plan`` (already pinned by :func:`pin`) differ from ``lock``.
    ``present`` maps each reference the plan renders to the engine's (id, digest), or None when
    the engine does not have it."""
    found: list[Difference] = []
    for service, reference in locked_services(plan):
        entry = lock.services.get(service)
        if entry is None:
            found.append(Difference(service, reference, "not in the lock"))
            continue
        if reference != entry.rendered:
            found.append(
                Difference(service, reference, "changed in the configuration", entry.image, reference)
            )
            continue
        seen = present.get(reference)
        if seen is None:
            found.append(Difference(service, reference, "missing", entry.image_id))
        elif seen[0] != entry.image_id:
            found.append(Difference(service, reference, "differs", entry.image_id, seen[0]))
    return found


def dumps(lock: ImageLock) -> str:
    """The lock file's text: JSON, keys sorted, one service per block, so that it diffs well and
    the same images always give the same bytes (no time, no host name)."""
    document = {
        "format": LOCK_FORMAT,
        "generated_by": GENERATED_BY,
        "services": {
            name: {"image": entry.image, "id": entry.image_id, "digest": entry.digest}
            for name, entry in sorted(lock.services.items())
        },
    }
    return json.dumps(document, indent=2, sort_keys=True) + "\n"


def loads(text: str, source: str) -> ImageLock:
    """Parse a lock file's text; anything else than what :func:`dumps` writes is a ConfigError naming
    ``source`` and the key."""
    fix = f"Fix or delete {source} and run `{LOCK_COMMAND}` to write it again."
    try:
        document: Any = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"The image lock {source} is not valid JSON ({exc}). {fix}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"The image lock {source} is not a JSON object. {fix}")
    if document.get("format") != LOCK_FORMAT:
        raise ConfigError(
            f"The image lock {source} has format {document.get('format')!r}; this nachos-deploy reads "
            f"format {LOCK_FORMAT}. {fix}"
        )
    services = document.get("services")
    if not isinstance(services, dict):
        raise ConfigError(f"The image lock {source} has no `services` object. {fix}")
    entries: dict[str, LockedImage] = {}
    for name, entry in services.items():
        where = f"{source}: services.{name}"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} is not an object with image, id and digest. {fix}")
        image, image_id, digest = entry.get("image"), entry.get("id"), entry.get("digest")
        if not isinstance(image, str) or not image:
            raise ConfigError(f"{where}.image must be an image reference. {fix}")
        if not isinstance(image_id, str) or not _DIGEST.match(image_id):
            raise ConfigError(f"{where}.id must be an image id (sha256: and 64 hex digits). {fix}")
        if digest is not None and (not isinstance(digest, str) or not _DIGEST.match(digest)):
            raise ConfigError(f"{where}.digest must be null or sha256: and 64 hex digits. {fix}")
        entries[name] = LockedImage(image, image_id, digest)
    return ImageLock(entries)
