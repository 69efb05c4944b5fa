"""`bundle save` and `bundle load`: a stack's images, lock and rendered files in one file, for a
machine that reaches no registry (docs/images.md#air-gapped-install).

A bundle always carries a lock: the one beside the deploy file when there is one (the images must
match it, or the save is refused), else one made from the images on this engine now (it is put in
the bundle only; `bundle load --to DIR` writes it out). The rendered files in the bundle are
rendered under that lock.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nachos_deploy.core import image_lock
from nachos_deploy.core.errors import ArchiveError, ConfigError, EnvironmentProblem, OutputError
from nachos_deploy.core.render import HEADER
from nachos_deploy.docker import images
from nachos_deploy.io import checked_tar, files, lockfile
from nachos_deploy.io.stack import Stack, with_lock
from nachos_deploy.lifecycle import lock as lock_mod

Progress = Callable[[str], None]
IMAGES_MEMBER = "images.tar"
LOCK_MEMBER = image_lock.LOCK_FILE
DEPLOY_MEMBER = "nachos-deploy.yaml"
RENDERED = "rendered"  # the rendered files' folder, in the bundle and under `load --to`
BUNDLE = checked_tar.Kind(
    "bundle",
    "Nothing was loaded. Copy the bundle again from where it was made (compare its sha256 with the one "
    "`bundle save` printed).",
    "Free space or choose another place.",
)


@dataclass(frozen=True)
class SaveResult:
    path: Path
    size: int
    sha256: str
    images: list[str]
    lock_from_deploy_folder: bool  # False: the lock was made for the bundle only
    seconds: float

    def as_json(self) -> dict[str, object]:
        return {
            "bundle": str(self.path),
            "size": self.size,
            "sha256": self.sha256,
            "images": self.images,
            "lock_from_deploy_folder": self.lock_from_deploy_folder,
            "seconds": round(self.seconds, 2),
        }


@dataclass(frozen=True)
class LoadResult:
    path: Path
    images: list[str]
    services: int
    written: list[str] = field(default_factory=list)
    seconds: float = 0.0
    unpinned: list[str] = field(default_factory=list)  # locked by digest, held to their id here
    replaced_lock: bool = False  # the folder's lock before pinned other images

    def as_json(self) -> dict[str, object]:
        return {
            "bundle": str(self.path),
            "images": self.images,
            "services": self.services,
            "written": self.written,
            "seconds": round(self.seconds, 2),
            "unpinned": self.unpinned,
            "replaced_lock": self.replaced_lock,
        }


def save(stack: Stack, target: Path, progress: Progress = lambda _: None) -> SaveResult:
    """Write the bundle of ``stack`` at ``target``, in one rename."""
    started = time.monotonic()
    beside = stack.lock is not None
    if stack.lock is not None:
        progress("Checking the images against the lock")
        lock_mod.verify(stack)
        locked = stack
    else:
        progress("Locking the images (no nachos-deploy.lock beside the deploy file)")
        locked = with_lock(stack, lock_mod.resolve(stack))
    assert locked.lock is not None
    references = _tags(locked.lock)
    wrong = _mismatched(locked.lock)  # docker save takes the tags: each must name the locked image
    if wrong:
        raise EnvironmentProblem(
            f"Cannot save the bundle: {'; '.join(wrong)}. Put the locked images back under their tags, "
            f"or run `{image_lock.LOCK_COMMAND}` to lock the present ones."
        )
    target = target.absolute()
    if target.is_dir():
        raise OutputError(f"{target} is a folder; give the bundle's file name (e.g. nachos-bundle.tar).")
    if not target.parent.is_dir():
        raise OutputError(f"The folder of {target} does not exist; create it or choose another place.")
    with tempfile.TemporaryDirectory(prefix=".nachos-bundle-", dir=target.parent) as scratch:
        folder = Path(scratch)
        progress(f"Saving {len(references)} images (docker save): {', '.join(references)}")
        images.save(references, folder / IMAGES_MEMBER)
        (folder / LOCK_MEMBER).write_text(image_lock.dumps(locked.lock), encoding="utf-8")
        members = {IMAGES_MEMBER: folder / IMAGES_MEMBER, LOCK_MEMBER: folder / LOCK_MEMBER}
        for name, text in sorted(locked.files.items()):
            path = folder / RENDERED / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            members[f"{RENDERED}/{name}"] = path
        if stack.loaded.config_path is not None:
            members[DEPLOY_MEMBER] = stack.loaded.config_path
        progress("Writing the bundle and its checksums")
        checked_tar.write(
            target,
            members,
            {
                "generated_by": "nachos-deploy bundle save",
                "project": stack.project,
                "target": stack.plan.target,
                "images": references,
            },
            mode=0o644,
            kind=BUNDLE,
        )
    sha, size = checked_tar.hash_file(target)
    return SaveResult(target, size, sha, references, beside, time.monotonic() - started)


def _tags(lock: image_lock.ImageLock) -> list[str]:
    """The references to save: each service's configured one (a tag, so the load gives it back)."""
    return sorted({entry.image for entry in lock.services.values()})


def load(archive: Path, to: Path | None = None, progress: Progress = lambda _: None) -> LoadResult:
    """Check every member of the bundle, then load its images and check them against its lock;
    with ``to``, write the lock, the deploy file (when the bundle has one and ``to`` has none) and
    the rendered files (under ``to/rendered``) there."""
    started = time.monotonic()
    archive = archive.absolute()
    if to is not None:
        to = to.absolute()
        try:
            to.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"Cannot create {to} ({exc.strerror or exc}); choose another folder.") from None
    with tempfile.TemporaryDirectory(prefix=".nachos-bundle-", dir=to) as scratch:
        folder = Path(scratch)
        progress(f"Checking every member of {archive.name} against its manifest (sha256)")
        manifest = checked_tar.extract(archive, folder, BUNDLE).manifest
        lock_path = folder / LOCK_MEMBER
        try:
            bundled = lockfile.read(lock_path)
        except ConfigError as exc:
            raise ArchiveError(f"{archive}: member {LOCK_MEMBER}: {exc.message}") from None
        if bundled is None or not (folder / IMAGES_MEMBER).is_file():
            missing = LOCK_MEMBER if bundled is None else IMAGES_MEMBER
            raise ArchiveError(
                f"The bundle {archive} has no member {missing}: it was not made by `nachos-deploy bundle "
                "save`. Nothing was loaded."
            )
        progress("Loading the images (docker load)")
        images.load(folder / IMAGES_MEMBER, progress)
        references = _tags(bundled)
        wrong = _mismatched(bundled)
        if wrong:
            raise ArchiveError(
                f"The images loaded from {archive} are not those of its lock ({'; '.join(wrong)}). The "
                "bundle was made from images that differ from its lock; make it again with "
                "`nachos-deploy bundle save`."
            )
        here, unpinned = _for_this_engine(bundled)
        before = _read_lock_text(to / LOCK_MEMBER) if to is not None else None
        written = _write_out(folder, to, manifest, here) if to is not None else []
    return LoadResult(
        archive,
        references,
        len(bundled.services),
        written,
        time.monotonic() - started,
        unpinned,
        replaced_lock=before is not None and before != image_lock.dumps(here),
    )


def _read_lock_text(path: Path) -> str | None:
    """The lock a folder holds before a load writes its own (None: none, or none readable)."""
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _for_this_engine(lock: image_lock.ImageLock) -> tuple[image_lock.ImageLock, list[str]]:
    """The bundle's lock as this engine can hold to it: Docker's classic image store loses registry
    digests through save and load, so a digest the loaded image no longer has is dropped (the
    service is then held to its id, which the load has just checked); and the services unpinned."""
    found = images.identify(_tags(lock))
    entries = {}
    unpinned = []
    for name, entry in lock.services.items():
        ident = found.get(entry.image)
        if entry.digest is not None and (ident is None or ident.digest != entry.digest):
            entry = image_lock.LockedImage(entry.image, entry.image_id, None)
            unpinned.append(name)
        entries[name] = entry
    return image_lock.ImageLock(entries), sorted(unpinned)


def _mismatched(lock: image_lock.ImageLock) -> list[str]:
    """Each service whose configured reference names another image than the lock's, in words."""
    found = images.identify(_tags(lock))
    return [
        f"{name}: {entry.image} is {_id(found.get(entry.image))}, the lock has {entry.image_id}"
        for name, entry in sorted(lock.services.items())
        if (ident := found.get(entry.image)) is None or ident.image_id != entry.image_id
    ]


def _id(identity: images.ImageIdentity | None) -> str:
    return "not on the engine" if identity is None else identity.image_id


def _write_out(folder: Path, to: Path, manifest: dict[str, object], lock: image_lock.ImageLock) -> list[str]:
    """The lock (as this engine holds to it), the deploy file (never over one that is there) and the
    rendered files, in ``to``."""
    written = []
    try:
        files.replace_private(to / LOCK_MEMBER, image_lock.dumps(lock), 0o644)
        written.append(LOCK_MEMBER)
        deploy = folder / DEPLOY_MEMBER
        if deploy.is_file() and not (to / DEPLOY_MEMBER).exists():
            files.replace_private(to / DEPLOY_MEMBER, deploy.read_text(encoding="utf-8"), 0o644)
            written.append(DEPLOY_MEMBER)
    except OSError as exc:
        raise OutputError(f"Cannot write into {to} ({exc.strerror or exc}).") from None
    members = manifest.get("members")
    rendered = {
        name.removeprefix(f"{RENDERED}/"): (folder / name).read_text(encoding="utf-8")
        for name in (members if isinstance(members, dict) else {})
        if name.startswith(f"{RENDERED}/")
    }
    if rendered:
        (to / RENDERED).mkdir(exist_ok=True)
        files.write_all(to / RENDERED, rendered, (), marker=HEADER)
        written.extend(f"{RENDERED}/{name}" for name in sorted(rendered))
    return written
