"""Checked tars made from bytes, and one byte changed in a member: what the archive tests (backups,
bundles, the shared nachos_deploy.io.checked_tar) build their cases from."""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nachos_deploy.io import checked_tar

KIND = checked_tar.Kind("test archive", "Nothing was used.", "Choose another place.")


def sources(folder: Path, members: Mapping[str, bytes]) -> dict[str, Path]:
    """Each member's bytes as a file under ``folder`` (name in the archive → file)."""
    found = {}
    for name, data in members.items():
        source = folder / name
        source.parent.mkdir(parents=True, exist_ok=True)
        source.write_bytes(data)
        found[name] = source
    return found


def write(
    target: Path,
    members: Mapping[str, bytes],
    about: Mapping[str, Any],
    *,
    mode: int = 0o600,
    kind: checked_tar.Kind = KIND,
) -> Path:
    """A checked tar at ``target`` of ``members``, their source files kept beside it in ``.src``."""
    checked_tar.write(target, sources(target.parent / ".src", members), about, mode=mode, kind=kind)
    return target


def tampered(path: Path, member: str, into: Path | None = None) -> Path:
    """The archive (or a copy of it at ``into``) with the middle byte of ``member``'s data changed,
    its size kept."""
    if into is not None:
        shutil.copy(path, into)
    else:
        into = path
    with tarfile.open(path) as tar:
        info = tar.getmember(member)
        at = info.offset_data + info.size // 2
    with into.open("r+b") as handle:
        handle.seek(at)
        byte = handle.read(1)
        handle.seek(at)
        handle.write(bytes([byte[0] ^ 0xFF]))
    return into
