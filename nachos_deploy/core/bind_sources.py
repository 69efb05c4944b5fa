"""The host folders a deploy file bind-mounts into its components, and the one rule both targets
apply to those that do not exist yet.

Compose creates a missing bind source itself; Swarm refuses the task ("bind source path does not
exist") after the stack is half deployed. So nachos-deploy decides, before anything is deployed and
the same way on both: a missing folder named relative to the deploy file (the filesystem tool's
default ``./workspace``, a ``components.<name>.volumes`` entry such as ``./data:/data``) is the
deploy's own and is created; a missing absolute path is somebody else's folder, most likely a typo,
and is refused naming its key and path (an empty folder created in its place would hide the
mistake). Pure: :mod:`nachos_deploy.io.bind_folders` looks at the disk.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path

from nachos_deploy.core.plan_types import Plan


@dataclass(frozen=True)
class BindSource:
    """One host folder (or file) a component's bind mount names."""

    service: str
    key: str  # the deploy file's key that names it
    path: Path  # absolute, on this machine
    owned: bool  # named relative to the deploy file: the deploy's own, created when missing


def bind_sources(plan: Plan, output_dir: Path) -> list[BindSource]:
    """Every bind source the deploy file names (not the files nachos-deploy renders itself)."""
    found: list[BindSource] = []
    for service in plan.services:
        for mount in service.mounts:
            if not mount.key or mount.is_volume:
                continue
            owned = not mount.source.startswith("/")
            path = Path(posixpath.normpath(posixpath.join(str(output_dir), mount.source)))
            found.append(BindSource(service.name, mount.key, path, owned))
    return found
