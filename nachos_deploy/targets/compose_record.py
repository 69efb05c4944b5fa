"""Knowing when `up` has nothing to start, so that it can skip Compose and only prove the stack.

Each ``docker compose up`` costs 0.1-0.3 s even when it changes nothing (Compose loads and checks the
whole project first), and a full `up` needs three of them (bus, sidecars, components). So a
successful full `up` records, in the output folder's ``.last-up`` (kept out of git by the rendered
``.gitignore``, mode 0600), a digest of everything Compose would compare, namely the project as
Compose resolved it (every variable filled in, the override and the ``env_file``s merged) and
every rendered file byte for byte, plus the ``--only`` selection; and, for each service it started,
its container's id and the id of the image it was created from.

The next `up` skips Compose only when all of that still holds: the same digest, every recorded
container there under the same id and running (the one-shot ``volume-init``: exited 0), and each
one's image still the one its reference names now (a re-tagged image must recreate it). Anything
else, a stopped or removed container, a changed file or value, a re-tagged image, another
``--only``, takes the full path. What is skipped is only what Compose would have found nothing to do
for; the proof (the bus's checks and round trip, every service judged) runs as always.

"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nachos_deploy.core.names import LAST_UP_FILE, VOLUME_INIT
from nachos_deploy.docker.engine import ServiceState
from nachos_deploy.io.files import replace_private

FORMAT = 4  # bump when the record's meaning changes: an old record then just means "full path"
_VARIABLE = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Record:
    """What the last full `up` left: its digest, service → (container id, image id), and the
    passwords its servers started with (:func:`credential_entries`: digests, never the values)."""

    key: str
    containers: Mapping[str, tuple[str, str]]
    credentials: Mapping[str, str] = field(default_factory=dict)


def resolved_digest(resolved: Mapping[str, object]) -> str:
    """The digest of the project as Compose resolved it."""
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()


def credential_entries(files: Mapping[str, str]) -> dict[str, str]:
    """Each password of the credential files (io/credentials.snapshot: file name -> text) as
    "file:VARIABLE" -> a digest of its value. Per entry, since a component added brings new ones (its
    leaf login) while the running servers' own stay what they were."""
    entries = {}
    for name, text in files.items():
        for line in text.splitlines():
            variable, sep, value = line.partition("=")
            if sep and variable.strip():
                entries[f"{name}:{variable.strip()}"] = hashlib.sha256(value.strip().encode()).hexdigest()[
                    :16
                ]
    return entries


def credentials_differ(recorded: Mapping[str, str], current: Mapping[str, str]) -> bool:
    """Whether a password the servers started with (``recorded``) has another value now: new entries
    (a component added) and entries gone (one removed) are no difference."""
    return any(recorded.get(entry, digest) != digest for entry, digest in current.items())


def key(resolved: str, files: Mapping[str, str], only: Sequence[str]) -> str:
    """The digest of what Compose would compare (``resolved``: :func:`resolved_digest`), and of what
    was asked for."""
    digest = hashlib.sha256(resolved.encode())
    for name, content in sorted(files.items()):
        digest.update(b"\0file\0" + name.encode() + b"\0" + content.encode())
    digest.update(b"\0only\0" + "\0".join(sorted(only)).encode())
    return digest.hexdigest()


def load(output_dir: Path) -> Record | None:
    """The record of the last full `up`; None when there is none or it cannot be read (then `up`
    takes the full path, which is never wrong)."""
    try:
        document = json.loads((output_dir / LAST_UP_FILE).read_text(encoding="utf-8"))
        if document.get("format") != FORMAT:
            return None
        containers = {
            str(name): (str(ids["container"]), str(ids["image"]))
            for name, ids in document["containers"].items()
        }
        recorded = document.get("credentials") or {}
        credentials = {str(entry): str(digest) for entry, digest in recorded.items()}
        return Record(str(document["key"]), containers, credentials)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def save(
    output_dir: Path,
    digest: str,
    states: Mapping[str, ServiceState],
    services: Sequence[str],
    credentials: Mapping[str, str] | None = None,
) -> None:
    """Record a successful full `up` (atomically; a record that cannot be written only costs the
    next `up` its shortcut)."""
    containers = {}
    for name in services:
        state = states.get(name)
        if state is None or not state.container_id or not state.image_id:
            forget(output_dir)  # cannot vouch for this service next time
            return
        containers[name] = {"container": state.container_id, "image": state.image_id}
    document = {"format": FORMAT, "key": digest, "containers": containers, "credentials": credentials or {}}
    _write(output_dir, document)


def _write(output_dir: Path, document: Mapping[str, object]) -> None:
    with contextlib.suppress(OSError):
        replace_private(output_dir / LAST_UP_FILE, json.dumps(document, indent=1, sort_keys=True) + "\n")


def note_credentials(output_dir: Path, credentials: Mapping[str, str]) -> None:
    """The running servers now use ``credentials`` (a rotation reloaded them in place): recorded, so
    that the next `up` does not take them for credentials its servers never read."""
    try:
        document = json.loads((output_dir / LAST_UP_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    if isinstance(document, dict) and document.get("format") == FORMAT:
        _write(output_dir, {**document, "credentials": credentials})


def forget(output_dir: Path) -> None:
    """Drop the record (after `down`, or when a full `up` could not vouch for its result)."""
    with contextlib.suppress(OSError):
        (output_dir / LAST_UP_FILE).unlink(missing_ok=True)


def as_left(
    record: Record,
    states: Mapping[str, ServiceState],
    resolved: Mapping[str, object],
    image_ids: Mapping[str, str],
) -> bool:
    """Whether every recorded container is the same one, in the same state and on the same image
    as the last full `up` left it: then `docker compose up` would do nothing."""
    services = resolved.get("services")
    if not isinstance(services, dict) or not record.containers:
        return False
    for name, (container_id, image_id) in record.containers.items():
        state = states.get(name)
        if state is None or state.container_id != container_id or state.image_id != image_id:
            return False
        service = services.get(name)
        reference = service.get("image") if isinstance(service, dict) else None
        if not isinstance(reference, str) or image_ids.get(reference) != image_id:
            return False  # the reference names another image now (or one built: not ours to know)
        if name == VOLUME_INIT:
            if state.status != "exited" or state.exit_code != 0:
                return False
        elif state.status != "running":
            return False
    return True
