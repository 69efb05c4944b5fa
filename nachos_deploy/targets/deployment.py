"""Which stack a reading command works on: the one the project runs, wherever it was deployed from.

The engine knows where each running stack came from: Compose labels every container with the
project directory, which nachos-deploy makes the output folder, and the rendered Swarm stack files
label every service with the output folder `up` deployed from. That folder's record
(:mod:`nachos_deploy.io.deployed`) gives back the configuration as deployed. So `status`,
`request`, `env`, `logs` and `down` work from any folder with `-p <project>`, and judge what runs
rather than a deploy file (or a missing `--set`) that differs from it: the caller says so in one
line.

Both targets are asked, the one the configuration in front names first: a command from a folder
with no deploy file does not know which one the project runs on.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nachos_deploy.docker import compose, swarm
from nachos_deploy.io import deployed
from nachos_deploy.io.stack import Stack, assemble


@dataclass(frozen=True)
class Located:
    """The stack a reading command works on, and how it relates to the configuration in front."""

    stack: Stack
    # The output folder the project runs from when that is not the configuration in front of the
    # command (another folder, or another configuration); None when they agree or nothing runs.
    running_from: Path | None = None
    # The configuration in front is not the one the running stack was deployed with.
    differs: bool = False
    # The project runs from a folder that keeps no record of its configuration (an `up` of an
    # older nachos-deploy, or Compose alone): the configuration in front is used with that folder.
    unrecorded: bool = False
    source: str = ""  # where the running configuration came from (its deploy file), for a message


def running_folders(project: str, *, swarm_first: bool) -> list[Path]:
    """The output folders the project's containers (Compose) or services (Swarm) came from, most
    named first, from the first target that runs the project."""
    lookups = (swarm.output_folders, compose.output_folders)
    for lookup in lookups if swarm_first else reversed(lookups):
        found = lookup(project)
        if found:
            return found
    return []


def locate(stack: Stack, environ: Mapping[str, str] | None = None) -> Located:
    """The stack the project ``stack.project`` runs, as deployed; ``stack`` itself when it is that
    one, or when nothing runs (then the command reports what it finds, as always)."""
    folders = running_folders(stack.project, swarm_first=stack.swarm)
    return choose(stack, folders, environ)


def choose(stack: Stack, folders: list[Path], environ: Mapping[str, str] | None = None) -> Located:
    """:func:`locate` once the running folders are known (pure but for reading their records)."""
    if not folders:
        return Located(stack)
    records = [(folder, deployed.read(folder)) for folder in folders]
    mine = [(folder, record) for folder, record in records if record and record.project == stack.project]
    here = _same(folders[0], stack.output_dir)
    if not mine:
        if here:
            return Located(stack)
        environ = dict(os.environ) if environ is None else environ
        return Located(assemble(stack.loaded, folders[0], environ), folders[0], unrecorded=True)
    folder, record = mine[0]
    differs = record.digest != deployed.digest(stack)
    if not differs and _same(folder, stack.output_dir):
        return Located(stack)
    return Located(deployed.stack_of(record, environ), folder, differs, source=record.source)


def _same(one: Path, other: Path) -> bool:
    try:
        return one.resolve() == other.resolve()
    except OSError:
        return one == other
