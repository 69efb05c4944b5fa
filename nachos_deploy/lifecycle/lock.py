"""`lock`, and the lock's check before `up`, `validate`, `doctor` and `bundle save` (docs/images.md).

The check reads the engine once (one ``docker image inspect`` of every image the rendered files run)
and compares each image's id with the lock's. It runs on every `up` with a lock, before the fast
path of an unchanged Compose stack and before any upgrade: a tag rebuilt under a running stack is
refused, never rolled out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from nachos_deploy.core import image_lock
from nachos_deploy.core.errors import EnvironmentProblem
from nachos_deploy.docker import images
from nachos_deploy.io import lockfile
from nachos_deploy.io.stack import Stack


@dataclass(frozen=True)
class LockResult:
    path: Path
    changed: bool
    lock: image_lock.ImageLock

    def as_json(self) -> dict[str, object]:
        return {
            "lock_file": str(self.path),
            "changed": self.changed,
            "services": {
                name: {"image": entry.image, "id": entry.image_id, "digest": entry.digest}
                for name, entry in sorted(self.lock.services.items())
            },
        }


def resolve(stack: Stack) -> image_lock.ImageLock:
    """The lock of the images on this engine now, for every service the stack renders; an image the
    engine does not have is an EnvironmentProblem (exit 4) naming it."""
    wanted = image_lock.configured_services(stack.plan, stack.lock)
    found = images.identify([reference for _, reference in wanted])
    missing = sorted({reference for _, reference in wanted if found.get(reference) is None})
    if missing:
        users = {ref: [name for name, r in wanted if r == ref] for ref in missing}
        listing = "; ".join(f"{ref} (for {', '.join(users[ref])})" for ref in missing)
        raise EnvironmentProblem(
            f"Cannot lock the images: these are not on this Docker engine: {listing}. Pull or build "
            "them (a component with `build:` is built by `docker compose build`, or by a first `up`), "
            "or load them from a bundle (`nachos-deploy bundle load FILE`), then run "
            f"`{image_lock.LOCK_COMMAND}` again. Nothing was written."
        )
    entries = {}
    for name, reference in wanted:
        identity = found[reference]
        assert identity is not None
        entries[name] = image_lock.LockedImage(reference, identity.image_id, identity.digest)
    return image_lock.ImageLock(entries)


def lock(stack: Stack) -> LockResult:
    """Resolve every image and write ``nachos-deploy.lock`` beside the deploy file (one rename)."""
    resolved = resolve(stack)
    changed = lockfile.write(stack.lock_file, resolved)
    return LockResult(stack.lock_file, changed, resolved)


def differences(stack: Stack) -> list[image_lock.Difference]:
    """How the images the stack would run differ from its lock (none without a lock)."""
    if stack.lock is None:
        return []
    wanted = image_lock.locked_services(stack.plan)
    found = images.identify([reference for _, reference in wanted])
    present = {ref: (ident.image_id, ident.digest) if ident else None for ref, ident in found.items()}
    return image_lock.differences(stack.plan, stack.lock, present)


def refusal(stack: Stack, found: list[image_lock.Difference]) -> str:
    """One paragraph: every image that differs, with the locked and present ids, and both fixes."""
    listing = "; ".join(difference.describe() for difference in found)
    return (
        f"The images differ from the image lock {stack.lock_file}: {listing}. If the new images are "
        f"the ones you want, run `{image_lock.LOCK_COMMAND}` (with the same --config/--set) to record "
        "them, and commit the lock; otherwise put the locked images back (`docker pull "
        "REPOSITORY@DIGEST`, or `nachos-deploy bundle load FILE` from the bundle made with this lock)."
    )


def verify(stack: Stack) -> None:
    """Refuse (exit 4) when any image the stack would run is not the locked one."""
    found = differences(stack)
    if found:
        raise EnvironmentProblem(refusal(stack, found))
