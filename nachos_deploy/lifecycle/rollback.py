"""`rollback`: back to the previous successful deployment, with the proof `up` gives.

The record of releases (:mod:`nachos_deploy.io.releases`) keeps the previous deployment's rendered
files, its configuration (the `.deployed` record) and the image id each service ran. A rollback is
an `up` of exactly that: the stack planned again from the recorded configuration, with the recorded
files as they were rendered then, and each image pinned by id where its tag has moved since. So it
goes through the one algorithm: the bus first and proven, the changed components replaced one at a
time and each proven, and a rollback that fails rolls itself back to what ran before it. Once proven
it becomes the current deployment, and the one it left the previous: a second `rollback` returns.
"""

from __future__ import annotations

from dataclasses import replace

from nachos_deploy.core.errors import DeployError, ExitCode
from nachos_deploy.core.results import UpResult
from nachos_deploy.docker import engine
from nachos_deploy.io import deployed, locks, releases
from nachos_deploy.io.stack import Stack
from nachos_deploy.lifecycle.up import Progress, up_on
from nachos_deploy.targets import for_stack
from nachos_deploy.targets.upgrade_files import pin_images, pins


def _require_images(stack: Stack, previous: releases.Release, pinned: dict[str, str]) -> None:
    """The previous deployment's images whose tags have moved on run by their recorded ids; one the
    engine no longer has (removed, pruned) would fail half way through the rollback with the
    engine's "No such image". Refused first, naming each service, its image then and the way back."""
    missing = set(engine.missing_images(pinned.values()))
    if not missing:
        return
    lost = "; ".join(
        f"{service} ran {previous.images[service].reference} as {image}"
        for service, image in sorted(pinned.items())
        if image in missing
    )
    raise DeployError(
        f"Cannot roll project {stack.project} back: the previous deployment's images are no longer on "
        f"this engine ({lost}), and their tags now name other images. Put them back with `docker load` "
        "of a saved copy, `nachos-deploy bundle load` of that version's bundle, or by building and "
        "tagging that version again, then run `nachos-deploy rollback` again. Nothing was changed.",
        exit_code=ExitCode.ENVIRONMENT,
    )


def previous_stack(stack: Stack) -> Stack:
    """The previous successful deployment of ``stack``'s output folder, as a stack to `up`; a clear
    refusal when there is none."""
    known = releases.load(stack.output_dir)
    previous = known.previous
    where = stack.output_dir / ".releases"
    if previous is None:
        raise DeployError(
            f"There is no previous deployment of project {stack.project} to roll back to: {where} "
            + (
                "records only the current one (a rollback needs two successful `up`s with different "
                "files or images)."
                if known.current is not None
                else "does not exist or cannot be read (it is written by each successful full `up`)."
            )
            + " Nothing was changed.",
            exit_code=ExitCode.FAILED,
        )
    record = deployed.parse(previous.deployed) if previous.deployed is not None else None
    if record is None:
        raise DeployError(
            f"The previous deployment recorded in {where} has no readable configuration (written by an "
            "older nachos-deploy?); nothing was changed. Deploy the version you want with "
            "`nachos-deploy up -c <its deploy file>`.",
            exit_code=ExitCode.FAILED,
        )
    planned = deployed.stack_of(record)
    recorded = {name: image.image_id for name, image in previous.images.items()}
    pinned = {name: pins(text, recorded) for name, text in previous.files.items() if name.endswith(".yml")}
    _require_images(
        stack, previous, {service: image for p in pinned.values() for service, image in p.items()}
    )
    files = {
        name: pin_images(text, pinned[name]) if name in pinned else text
        for name, text in previous.files.items()
    }
    # Not held to nachos-deploy.lock: the lock describes today's configuration, and a rollback runs the
    # previous deployment's images by their recorded ids (docs/images.md#what-the-lock-changes).
    return replace(planned, files=files, lock=None)


def rollback(
    stack: Stack,
    *,
    timeout: float = 120.0,
    progress: Progress = lambda _: None,
    notice: Progress | None = None,
) -> UpResult:
    """Return ``stack``'s project to its previous successful deployment and prove it as `up` does."""
    with locks.project_lock(stack.project, notice or progress):
        target_stack = previous_stack(stack)
        progress(f"Rolling back {stack.project} to its previous deployment")
        with for_stack(target_stack) as target:
            return up_on(target, timeout=timeout, progress=progress)
