"""One `up` or `down` of a project at a time on this machine.

Two `up`s of a new project at once would each create the project's networks, leaving duplicates
that make every later `up` fail ("network ... is ambiguous"); an `up` and a `down` would interleave.
An advisory lock per project (``flock``, released by the kernel when the process ends, even on
SIGKILL) serializes them, and the second one says it waits.

The lock files live in a folder only this user can write: ``$XDG_RUNTIME_DIR/nachos-deploy`` when
the session has one, else ``$TMPDIR/nachos-deploy-<uid>``. A predictable name in a shared temporary
folder can be made first by another local user, with a lock file that is a symlink to one of ours:
opening and truncating it would empty the victim. So the folder must be a real directory owned by
this user with no access for others (checked with ``lstat``, as Jinja checks its bytecode cache),
and the lock file is opened with ``O_NOFOLLOW`` and must be a regular file of ours; anything else is
refused with the folder's name and the fix, before anything is written.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from nachos_deploy.core.errors import EnvironmentProblem

LOCKS_VARIABLE = "NACHOS_LOCK_DIR"  # tests and unusual hosts: where the lock folder is made


def lock_folder() -> Path:
    """This user's private folder for lock files, made (mode 0700) if missing and checked."""
    chosen = os.environ.get(LOCKS_VARIABLE)
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if chosen:
        folder = Path(chosen)
    elif runtime and _private(Path(runtime)):
        folder = Path(runtime) / "nachos-deploy"
    else:
        folder = Path(tempfile.gettempdir()) / f"nachos-deploy-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        folder.mkdir(mode=0o700)
    if not _private(folder):
        raise EnvironmentProblem(
            f"The lock folder {folder} is not a private folder of this user (it must be a directory, "
            f"not a symlink, owned by uid {os.getuid()} with no access for group or others): another "
            "user may have made it to aim nachos-deploy's lock files at your files. Remove it (after "
            f"checking what it holds), or set {LOCKS_VARIABLE} to a private folder, then run the "
            "command again."
        )
    return folder


def _private(folder: Path) -> bool:
    try:
        info = folder.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o077


def lock_path(project: str) -> Path:
    return lock_folder() / f"{project}.lock"


def _open(path: Path) -> int:
    """The lock file, never through a symlink and only if it is a regular file of ours."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise EnvironmentProblem(
            f"The lock file {path} cannot be opened ({exc.strerror}); it may be a symlink someone put "
            "there. Remove it and run the command again."
        ) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        os.close(fd)
        raise EnvironmentProblem(
            f"The lock file {path} is not a regular file of this user. Remove it and run the command again."
        )
    return fd


def _holder(fd: int) -> str:
    """The holder's "pid N": it writes that just after taking the lock, so a reader that came in
    between (seen in CI with two `up`s started together) looks again for a moment."""
    for _ in range(20):
        holder = os.pread(fd, 64, 0).decode("utf-8", "replace").strip()
        if holder:
            return holder
        time.sleep(0.01)
    return "another process"


@contextlib.contextmanager
def project_lock(project: str, waiting: Callable[[str], None]) -> Iterator[None]:
    """Hold the project's lock for the block; ``waiting`` is told once if another holds it."""
    with _held(lock_path(project), waiting, f"working on project {project}"):
        yield


NETWORKS_LOCK = "_networks.lock"  # no project has it: a project name starts with a letter or a digit


@contextlib.contextmanager
def networks_lock(waiting: Callable[[str], None], *, wait: bool = True) -> Iterator[bool]:
    """Hold this machine's lock on new networks for the block: from the moment an `up` settles its
    stack on a free block of networks.pool until its first networks exist there. Two `up`s of new
    projects whose blocks overlap would otherwise both find the block free and Docker would refuse the
    second's network half way ("Pool overlaps with other one on this address space"). Yields whether
    it holds the lock: with ``wait`` False, a lock another holds is not waited for (False)."""
    with _held(lock_folder() / NETWORKS_LOCK, waiting, "placing its networks", wait=wait) as holding:
        yield holding


@contextlib.contextmanager
def _held(path: Path, waiting: Callable[[str], None], doing: str, *, wait: bool = True) -> Iterator[bool]:
    fd = _open(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                yield False
                return
            waiting(f"Waiting for another nachos-deploy ({_holder(fd)}) {doing} to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()}".encode(), 0)
        try:
            yield True
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
