"""One tar of named members with ``manifest.json`` first, naming each member's size and SHA-256: the
shape of a backup archive (`backup`/`restore`, docs/backup.md) and of an image bundle (`bundle
save`/`load`, docs/images.md).

Written whole or not at all (a temporary file beside the target, renamed at the end, with the mode
the caller gives: a backup may hold credentials, a bundle does not), with members that carry no
owner, time or mode of this machine's, so the same content gives the same bytes. Members are
streamed from files in 1 MiB chunks both ways, so a multi-GB member never sits in memory.

Reading checks every member against the manifest (missing, extra, size, SHA-256, a name that would
leave the folder, a format newer than this version reads) before it returns, so a caller uses
nothing of an archive that has one byte changed. Each refusal is an ArchiveError (exit 9) naming the
file and the member.

Plain tar, no compression: a stream's snapshot is already s2-compressed, ``docker save`` output is
layers of compressed tars, and the stdlib reads it everywhere.
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
from pathlib import Path, PurePosixPath
from typing import IO, Any

from nachos_deploy.core.errors import ArchiveError, OutputError

MANIFEST = "manifest.json"
FORMAT = 1
"""The manifest's ``format``: a reader refuses a newer one rather than misread it."""
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Kind:
    """How the user knows this archive, so each refusal reads as the command's own."""

    noun: str  # "backup archive", "bundle"
    refused: str  # after a refusal: what was not done, and how to get a good copy
    unwritable: str  # after a failed write: what to do


@dataclass(frozen=True)
class Member:
    name: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Extracted:
    """An archive verified whole and copied out: its manifest, and its members under ``folder``."""

    path: Path
    manifest: dict[str, Any]
    folder: Path

    @property
    def names(self) -> list[str]:
        return sorted(self.manifest["members"])

    def file(self, name: str) -> Path:
        """Where member ``name`` was copied; only a member the manifest lists (and so was verified):
        a name taken from elsewhere in the manifest can point nowhere else."""
        if name not in self.manifest["members"]:
            raise ArchiveError(
                f"{self.path}: member {name} is missing (the manifest names it but does not list it)."
            )
        return self.folder / name

    def read(self, name: str) -> bytes:
        return self.file(name).read_bytes()


def hash_file(path: Path) -> tuple[str, int]:
    """(SHA-256 in hex, size in bytes) of a file, read in 1 MiB chunks."""
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return sha.hexdigest(), size


def _info(name: str, size: int, mode: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = mode
    info.mtime = 0
    return info


def write(
    target: Path, members: Mapping[str, Path], about: Mapping[str, Any], *, mode: int, kind: Kind
) -> dict[str, Member]:
    """Write ``members`` (name in the archive → file) after a manifest (``about`` plus the format
    and each member's SHA-256 and size) into one tar at ``target`` with ``mode``, in one rename.
    Nothing is left behind on failure."""
    for name in members:
        if not _safe(name) or name == MANIFEST:
            raise ValueError(f"{name!r} cannot be a member's name")
    listed = {name: Member(name, *hash_file(path)) for name, path in sorted(members.items())}
    manifest = {
        **about,
        "format": FORMAT,
        "members": {m.name: {"sha256": m.sha256, "size": m.size} for m in listed.values()},
    }
    text = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    except OSError as exc:
        raise OutputError(
            f"Cannot write the {kind.noun} {target} ({exc.strerror or exc}). {kind.unwritable}"
        ) from None
    temporary = Path(name)
    try:
        with os.fdopen(handle, "wb") as raw:
            with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
                tar.addfile(_info(MANIFEST, len(text), mode), io.BytesIO(text))
                for member_name, path in sorted(members.items()):
                    with path.open("rb") as stream:
                        tar.addfile(_info(member_name, listed[member_name].size, mode), stream)
            raw.flush()
            os.fsync(raw.fileno())
        temporary.chmod(mode)
        temporary.replace(target)
    except BaseException as exc:
        temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise OutputError(
                f"Cannot write the {kind.noun} {target} ({exc.strerror or exc}); nothing was left there. "
                f"{kind.unwritable}"
            ) from None
        raise
    return listed


def _safe(name: str) -> bool:
    """A relative name that stays under the folder it is copied into."""
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and name == path.as_posix()


def verify(archive: Path, kind: Kind) -> dict[str, Any]:
    """Check every member of ``archive`` against its manifest without writing anything; the manifest."""
    return _walk(archive, None, kind)


def extract(archive: Path, into: Path, kind: Kind) -> Extracted:
    """Copy every member of ``archive`` under ``into`` (files 0600) while checking it against the
    manifest; returns only once every member has passed."""
    return Extracted(archive, _walk(archive, into, kind), into)


def _walk(archive: Path, into: Path | None, kind: Kind) -> dict[str, Any]:
    def refuse(problem: str, member: str | None = None) -> ArchiveError:
        where = f"{archive}: member {member}" if member else str(archive)
        return ArchiveError(f"{where} {problem}. {kind.refused}")

    try:
        tar = tarfile.open(archive, mode="r:")  # noqa: SIM115 (closed by the `with` below)
    except FileNotFoundError:
        raise refuse("is not there (no such file)") from None
    except (OSError, tarfile.TarError) as exc:
        raise refuse(f"is not a readable {kind.noun} ({exc})") from None
    with tar:
        try:
            first = tar.next()
            if first is None or first.name != MANIFEST or not first.isfile():
                raise refuse(f"is missing or not the first member; this is no {kind.noun} of ours", MANIFEST)
            stream = tar.extractfile(first)
            assert stream is not None
            try:
                manifest = json.loads(stream.read().decode("utf-8"))
                expected = {
                    name: (str(entry["sha256"]), int(entry["size"]))
                    for name, entry in manifest["members"].items()
                }
                written = int(manifest.get("format", 0))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise refuse(f"cannot be read ({exc})", MANIFEST) from None
            if written > FORMAT:
                raise refuse(
                    f"is of format {written}, newer than this nachos-deploy reads ({FORMAT}); use the "
                    "version that wrote it",
                    MANIFEST,
                )
            seen: set[str] = set()
            while (info := tar.next()) is not None:  # iterating the TarFile would start over
                name = info.name
                if not _safe(name):
                    raise refuse("has a name that leaves the folder it is copied into", name)
                if name in seen:
                    raise refuse(f"appears twice; the {kind.noun} was altered", name)
                if name not in expected:
                    raise refuse(f"is not in the manifest; the {kind.noun} was altered", name)
                if not info.isfile():
                    raise refuse(f"is not a plain file; this is no {kind.noun} of ours", name)
                sha, size = expected[name]
                if info.size != size:
                    raise refuse(f"fails its checksum ({info.size} bytes, the manifest says {size})", name)
                source = tar.extractfile(info)
                assert source is not None
                got = _copy(source, into / name if into is not None else None)
                if got != sha:
                    raise refuse(
                        f"fails its checksum (sha256 {got[:16]}..., the manifest says {sha[:16]}...): the "
                        f"{kind.noun} was altered or damaged",
                        name,
                    )
                seen.add(name)
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise refuse(f"is cut short or damaged ({exc})") from None
    missing = sorted(set(expected) - seen)
    if missing:
        raise refuse("is missing (the manifest lists it)", missing[0])
    return dict(manifest)


def _copy(source: IO[bytes], target: Path | None) -> str:
    """SHA-256 of ``source``, copied to ``target`` (0600) when there is one."""
    sha = hashlib.sha256()
    out: IO[bytes] | None = None
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        out = os.fdopen(os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")
    try:
        while chunk := source.read(_CHUNK):
            sha.update(chunk)
            if out is not None:
                out.write(chunk)
    finally:
        if out is not None:
            out.close()
    return sha.hexdigest()
