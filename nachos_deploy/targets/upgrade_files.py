"""The rendered files as an upgrade step or a rollback deploys them: one service's new definition
among the old ones, or an earlier definition pinned to the image it ran.

Compose recreates only the services it is asked to (``up --no-deps NAME``), so on Compose the files
stay as rendered. Swarm's ``stack deploy`` applies a whole file; without ``--prune`` it leaves alone
the services a file does not name, so an upgrade step deploys a copy of the stack file that names
only the services it replaces (every network, config, secret and volume kept).

A tag may have been moved since an earlier deployment ran (the broken build re-tagged as
``:latest``): putting that deployment back by its reference would start the new image again. The
image a container ran is recorded by id, and both engines accept ``image: sha256:<id>`` for an image
they hold, so a rollback pins that service's ``image:`` to the id when the reference names another
image now.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping

import yaml

from nachos_deploy.docker import engine

_SERVICE = re.compile(r"^  ([A-Za-z0-9][A-Za-z0-9_.-]*):\s*$")
_IMAGE = re.compile(r"^    image: .*$")


def pin_images(text: str, pins: Mapping[str, str]) -> str:
    """``text`` (a rendered Compose or stack file) with the ``image:`` of each service of ``pins``
    replaced by its image id; every other byte as rendered."""
    if not pins:
        return text
    lines = text.splitlines(keepends=True)
    in_services = False
    service: str | None = None
    for index, line in enumerate(lines):
        if not line.startswith(" ") and line.strip():
            in_services = line.rstrip() == "services:"
            service = None
            continue
        found = _SERVICE.match(line) if in_services else None
        if found:
            service = found.group(1)
            continue
        if service is not None and service in pins and _IMAGE.match(line.rstrip("\n")):
            lines[index] = f'    image: "{pins[service]}"\n'
    return "".join(lines)


def only_services(text: str, names: Collection[str]) -> str:
    """A stack file naming only the services of ``names`` (its other top-level keys kept whole)."""
    document = yaml.safe_load(text)
    services = document.get("services") or {}
    document["services"] = {name: spec for name, spec in services.items() if name in names}
    return yaml.safe_dump(document, sort_keys=False)


def without_services(text: str, names: Collection[str]) -> str:
    """A stack file naming every service but those of ``names``."""
    document = yaml.safe_load(text)
    services = document.get("services") or {}
    document["services"] = {name: spec for name, spec in services.items() if name not in names}
    return yaml.safe_dump(document, sort_keys=False)


def pins(text: str, images: Mapping[str, str]) -> dict[str, str]:
    """Service → the image id to pin it to: those of ``images`` (service → the id its container
    ran) whose reference in ``text`` names another image now (a tag moved on), or none."""
    services = (yaml.safe_load(text) or {}).get("services") or {}
    references = {
        name: str(services[name].get("image"))
        for name in images
        if isinstance(services.get(name), dict) and services[name].get("image")
    }
    if not references:
        return {}
    now = engine.image_ids(references.values()) or {}
    return {
        name: images[name] for name, reference in references.items() if now.get(reference) != images[name]
    }
