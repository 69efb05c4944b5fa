"""A backup archive on disk: one tar, ``manifest.json`` first, then every member it names with its
SHA-256. Written whole or not at all (a temporary file beside the target, renamed at the end), and
read back only once the manifest parses and every member's checksum matches, so that `restore`
refuses a damaged or altered archive before it touches anything (ArchiveError, exit 9, naming the
file and the member).

Plain tar, no compression: the streams' snapshots are already s2-compressed by the server, and the
stdlib reads it everywhere.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nachos_deploy.core.errors import ArchiveError, OutputError
from nachos_deploy.core.plan import BACKUP_MANIFEST

FORMAT = 1
"""The manifest's ``format``: a reader refuses a newer one rather than misread it."""


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Archive:
    """An archive read and verified: its manifest and its members' bytes."""

    path: Path
    manifest: dict[str, Any]
    members: dict[str, bytes]


def write(path: Path, manifest: Mapping[str, Any], members: Mapping[str, bytes]) -> int:
    """Write the archive at ``path`` atomically; the manifest gets each member's size and SHA-256.
    Returns the archive's size in bytes. Nothing is left behind on failure."""
    doc = dict(manifest)
    doc["format"] = FORMAT
    doc["members"] = {name: {"size": len(data), "sha256": digest(data)} for name, data in members.items()}
    head = json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n"
    folder = path.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=folder)
    except OSError as exc:
        raise OutputError(
            f"Cannot write the backup to {path} ({exc.strerror or exc}). Choose another --to."
        ) from None
    try:
        with os.fdopen(handle, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                for name, data in ((BACKUP_MANIFEST, head), *members.items()):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    info.mode = 0o600
                    tar.addfile(info, io.BytesIO(data))
            raw.flush()
            os.fsync(raw.fileno())
        Path(temporary).chmod(0o600)  # the archive holds the data (and, when asked, the credentials)
        Path(temporary).replace(path)
    except BaseException as exc:
        Path(temporary).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(f"Cannot write the backup to {path} ({exc.strerror or exc}).") from None
        raise
    return path.stat().st_size


def read(path: Path) -> Archive:
    """Read and verify an archive: the manifest parses, every member it names is there with its
    checksum, and nothing else is. Any failure is an ArchiveError naming the file and the member."""
    try:
        tar = tarfile.open(path, mode="r")  # noqa: SIM115 - closed by the `with tar` below
    except FileNotFoundError:
        raise ArchiveError(f"{path}: no such file.") from None
    except (OSError, tarfile.TarError) as exc:
        raise ArchiveError(f"{path} is not a readable backup archive ({exc}).") from None
    members: dict[str, bytes] = {}
    try:
        with tar:
            for info in tar:
                if not info.isfile():
                    raise ArchiveError(
                        f"{path}: member {info.name} is not a plain file; this is no backup of ours."
                    )
                handle = tar.extractfile(info)
                members[info.name] = handle.read() if handle is not None else b""
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise ArchiveError(f"{path} is cut short or damaged ({exc}); it cannot be restored.") from None
    head = members.pop(BACKUP_MANIFEST, None)
    if head is None:
        raise ArchiveError(
            f"{path}: member {BACKUP_MANIFEST} is missing; this is no backup of nachos-deploy's."
        )
    try:
        manifest = json.loads(head)
        listed = manifest["members"]
        if not isinstance(listed, dict):
            raise TypeError("members is not a mapping")
    except (ValueError, KeyError, TypeError) as exc:
        raise ArchiveError(f"{path}: member {BACKUP_MANIFEST} cannot be read ({exc}).") from None
    if int(manifest.get("format", 0)) > FORMAT:
        raise ArchiveError(
            f"{path}: member {BACKUP_MANIFEST} is of format {manifest.get('format')}, newer than this "
            f"nachos-deploy reads ({FORMAT}); restore it with the version that wrote it."
        )
    for name, entry in sorted(listed.items()):
        data = members.get(name)
        if data is None:
            raise ArchiveError(f"{path}: member {name} is missing (the manifest lists it).")
        if digest(data) != entry.get("sha256") or len(data) != entry.get("size"):
            raise ArchiveError(
                f"{path}: member {name} fails its checksum (sha256 {digest(data)[:16]}..., the manifest "
                f"says {str(entry.get('sha256'))[:16]}...): the archive was altered or damaged. Nothing "
                "was restored."
            )
    extra = sorted(set(members) - set(listed))
    if extra:
        raise ArchiveError(f"{path}: member {extra[0]} is not in the manifest; the archive was altered.")
    return Archive(path, manifest, members)
