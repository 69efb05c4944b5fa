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
from nachos_deploy.io import deployed, locks, releases
from nachos_deploy.io.stack import Stack
from nachos_deploy.lifecycle.up import Progress, up_on
from nachos_deploy.targets import for_stack
from nachos_deploy.targets.upgrade_files import pin_images, pins


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
    files = {
        name: pin_images(text, pins(text, recorded)) if name.endswith(".yml") else text
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
