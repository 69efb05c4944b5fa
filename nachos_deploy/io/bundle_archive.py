"""The bundle file on disk: one tar of named members with a manifest of their sha256 (docs/images.md).

``manifest.json`` comes first, so a reader learns what to expect before the large members. Every
member is checked against it while it is copied out, and nothing is handed on (to ``docker load``)
until every member has been: a bundle with one byte changed is refused before anything is loaded.
"""

from __future__ import annotations

import hashlib
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
BUNDLE_FORMAT = 1
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Member:
    name: str
    sha256: str
    size: int


def _digest(path: Path) -> Member:
    sha = hashlib.sha256()
    size = 0
    with path.open("rb") as stream:
        while chunk := stream.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return Member(path.name, sha.hexdigest(), size)


def _info(name: str, size: int) -> tarfile.TarInfo:
    """A member with no owner, time or mode of this machine's: the same content, the same bytes."""
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    info.mtime = 0
    return info


def write(target: Path, members: Mapping[str, Path], about: Mapping[str, Any]) -> dict[str, Member]:
    """Write ``members`` (name in the bundle → file) and a manifest (``about`` plus each member's
    sha256 and size) into one tar at ``target``, in one rename: an interrupted save leaves no file."""
    listed = {name: Member(name, *hash_file(path)) for name, path in sorted(members.items())}
    manifest = {
        **about,
        "format": BUNDLE_FORMAT,
        "members": {m.name: {"sha256": m.sha256, "size": m.size} for m in listed.values()},
    }
    text = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
    try:
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as exc:
        raise OutputError(f"Cannot write the bundle {target} ({exc.strerror or exc}).") from None
    temporary = Path(name)
    try:
        with (
            os.fdopen(handle, "wb") as raw,
            tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar,
        ):
            tar.addfile(_info(MANIFEST, len(text)), _Bytes(text))
            for member_name, path in sorted(members.items()):
                with path.open("rb") as stream:
                    tar.addfile(_info(member_name, listed[member_name].size), stream)
        temporary.chmod(0o644)
        temporary.replace(target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise OutputError(
            f"Cannot write the bundle {target} ({exc.strerror or exc}); nothing was left there. Free "
            "space or choose another place."
        ) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return listed


def hash_file(path: Path) -> tuple[str, int]:
    """(sha256 in hex, size in bytes) of a file, read in 1 MiB chunks."""
    member = _digest(path)
    return member.sha256, member.size


class _Bytes:
    """A readable file over bytes, for tarfile.addfile."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def read(self, size: int = -1) -> bytes:
        end = len(self._data) if size < 0 else self._at + size
        chunk = self._data[self._at : end]
        self._at += len(chunk)
        return chunk


def _safe(name: str) -> bool:
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts and name == path.as_posix()


def extract_verified(archive: Path, into: Path) -> dict[str, Any]:
    """Copy every member of ``archive`` into ``into`` while checking it against the manifest, and
    return the manifest. Any doubt (unreadable, no manifest first, a member unlisted, missing, of
    another size or sha256) is an ArchiveError naming the file and the member."""

    def refuse(problem: str, member: str | None = None) -> ArchiveError:
        where = f"member {member} of {archive}" if member else str(archive)
        return ArchiveError(
            f"The bundle cannot be used: {where}: {problem}. Nothing was loaded. Copy the bundle "
            "again from where it was made (compare its sha256 with the one `bundle save` printed)."
        )

    try:
        tar = tarfile.open(archive, mode="r:")  # noqa: SIM115 (closed by the `with` below)
    except FileNotFoundError:
        raise refuse("no such file") from None
    except (OSError, tarfile.TarError) as exc:
        raise refuse(f"not a readable bundle ({exc})") from None
    with tar:
        try:
            first = tar.next()
            if first is None or first.name != MANIFEST or not first.isfile():
                raise refuse(f"{MANIFEST} is not its first member", MANIFEST)
            stream = tar.extractfile(first)
            assert stream is not None
            try:
                manifest = json.loads(stream.read().decode("utf-8"))
                expected = {
                    name: (str(entry["sha256"]), int(entry["size"]))
                    for name, entry in manifest["members"].items()
                }
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise refuse(f"unreadable ({exc})", MANIFEST) from None
            if manifest.get("format") != BUNDLE_FORMAT:
                raise refuse(f"format {manifest.get('format')!r}, this nachos-deploy reads {BUNDLE_FORMAT}")
            seen: set[str] = set()
            while (info := tar.next()) is not None:  # iterating the TarFile would start over
                name = info.name
                if name not in expected or not _safe(name) or not info.isfile() or name in seen:
                    raise refuse("not listed in the manifest (or not a plain file, or twice)", name)
                sha, size = expected[name]
                if info.size != size:
                    raise refuse(f"{info.size} bytes, the manifest says {size}", name)
                source = tar.extractfile(info)
                assert source is not None
                target = into / name
                target.parent.mkdir(parents=True, exist_ok=True)
                got = _copy(source, target)
                if got != sha:
                    raise refuse(f"sha256 {got}, the manifest says {sha}", name)
                seen.add(name)
        except (OSError, tarfile.TarError, EOFError) as exc:
            raise refuse(f"cut short or damaged ({exc})") from None
    missing = sorted(set(expected) - seen)
    if missing:
        raise refuse("listed in the manifest but not in the bundle", missing[0])
    return dict(manifest)


def _copy(source: IO[bytes], target: Path) -> str:
    sha = hashlib.sha256()
    with target.open("wb") as out:
        while chunk := source.read(_CHUNK):
            sha.update(chunk)
            out.write(chunk)
    return sha.hexdigest()
