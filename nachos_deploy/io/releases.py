"""The record of successful deployments, so that a failed upgrade and `rollback` know what to put back.

An upgrade replaces running components; when a new version fails its proof, what ran before must
come back exactly: the same rendered files (environment, mounts, configuration) and the same images,
by id, since a tag may have been moved to the broken build meanwhile. Neither the engine nor the
output folder keeps that once the new files are written and the containers recreated. So each
successful full `up` (and each `rollback`) leaves, in the output folder's ``.releases`` (mode 0600,
written in one rename, kept out of git by the rendered ``.gitignore``), the deployment it proved:
per service the image reference and the image id its container ran, every rendered file byte for
byte, the ``.deployed`` record of its configuration and that configuration's digest. Two are kept:
``current`` (what runs) and ``previous`` (what ran before it, the target of `rollback`). A
deployment equal to ``current`` (same files, same image ids) replaces it without moving it to
``previous``, so that an `up` run twice does not make the rollback target the running version.

A record that is missing, of another format or unreadable is no record: `up` then falls back to the
output folder as it was before it wrote (:func:`snapshot`), and `rollback` refuses clearly.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nachos_deploy.core.names import DEPLOYED_FILE, RELEASES_FILE
from nachos_deploy.io.files import replace_private

FORMAT = 1  # bump when the record's meaning changes: an old record then reads as none


@dataclass(frozen=True)
class ServiceImage:
    """The image a service's container ran: its reference as rendered, and the id behind it then."""

    reference: str
    image_id: str


@dataclass(frozen=True)
class Release:
    """One successful deployment: its services' images, its rendered files and configuration."""

    at: float  # epoch seconds of the `up` that proved it
    digest: str  # of the deployed configuration (io/deployed.py's digest)
    images: Mapping[str, ServiceImage]
    files: Mapping[str, str]
    deployed: str | None = None  # the text of `.deployed` as it was then, None when there was none

    def same_as(self, other: Release) -> bool:
        """The same deployment: byte-identical files and every service on the same image id."""
        return dict(self.files) == dict(other.files) and {
            name: image.image_id for name, image in self.images.items()
        } == {name: image.image_id for name, image in other.images.items()}

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "digest": self.digest,
            "images": {
                name: {"reference": image.reference, "image_id": image.image_id}
                for name, image in sorted(self.images.items())
            },
            "files": dict(sorted(self.files.items())),
            "deployed": self.deployed,
        }

    @staticmethod
    def from_json(document: Mapping[str, Any]) -> Release:
        return Release(
            at=float(document["at"]),
            digest=str(document["digest"]),
            images={
                str(name): ServiceImage(str(image["reference"]), str(image["image_id"]))
                for name, image in document["images"].items()
            },
            files={str(name): str(text) for name, text in document["files"].items()},
            deployed=None if document.get("deployed") is None else str(document["deployed"]),
        )


@dataclass(frozen=True)
class Releases:
    current: Release | None = None
    previous: Release | None = None


def load(output_dir: Path) -> Releases:
    """The record in ``output_dir``; empty when there is none that can be trusted."""
    try:
        document: Any = json.loads((output_dir / RELEASES_FILE).read_text(encoding="utf-8"))
        if not isinstance(document, dict) or document.get("format") != FORMAT:
            return Releases()
        current, previous = document.get("current"), document.get("previous")
        return Releases(
            Release.from_json(current) if current else None,
            Release.from_json(previous) if previous else None,
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return Releases()


def release(
    output_dir: Path,
    digest: str,
    images: Mapping[str, ServiceImage],
    files: Mapping[str, str],
) -> Release:
    """The deployment just proven, with the `.deployed` record `up` wrote for it."""
    return Release(time.time(), digest, dict(images), dict(files), _read(output_dir / DEPLOYED_FILE))


def record(output_dir: Path, proven: Release) -> Releases:
    """Note a successful deployment (atomically, 0600): it becomes ``current``, and the one it
    replaces ``previous`` unless they are the same deployment. Raises ``OSError`` when it cannot be
    written: the caller says so, since a later rollback would have nothing to go back to."""
    known = load(output_dir)
    if known.current is not None and known.current.same_as(proven):
        updated = Releases(proven, known.previous)
    else:
        updated = Releases(proven, known.current)
    document = {
        "format": FORMAT,
        "current": updated.current.as_json() if updated.current else None,
        "previous": updated.previous.as_json() if updated.previous else None,
    }
    replace_private(output_dir / RELEASES_FILE, json.dumps(document, indent=1, sort_keys=True) + "\n")
    return updated


def snapshot(output_dir: Path, names: Sequence[str]) -> Release:
    """The output folder as it is now (before an `up` writes its files), for an upgrade with no
    record yet (the first one after nachos-deploy learned to keep it): the files of ``names`` that
    exist, and the `.deployed` record. Images are learned from the running containers instead."""
    files = {name: text for name in names if (text := _read(output_dir / name)) is not None}
    return Release(time.time(), "", {}, files, _read(output_dir / DEPLOYED_FILE))


def put_back_deployed(output_dir: Path, text: str | None) -> None:
    """The `.deployed` record of an earlier deployment written back (a rollback): the reading
    commands then judge what runs again. Nothing when there was none."""
    if text is not None:
        with contextlib.suppress(OSError):
            replace_private(output_dir / DEPLOYED_FILE, text)


def forget(output_dir: Path) -> None:
    """Drop the record (`down --volumes`: nothing is left to go back to)."""
    with contextlib.suppress(OSError):
        (output_dir / RELEASES_FILE).unlink(missing_ok=True)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None
