"""One `up` or `down` of a project at a time on this machine.

Two `up`s of a new project at once would each create the project's networks, leaving duplicates
that make every later `up` fail ("network ... is ambiguous"); an `up` and a `down` would interleave.
An advisory lock per project (``flock`` on a file in the temporary folder, released by the kernel
when the process ends, even on SIGKILL) serializes them, and the second one says it waits.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO


def lock_path(project: str) -> Path:
    folder = Path(tempfile.gettempdir()) / f"nachos-deploy-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder / f"{project}.lock"


def _holder(handle: IO[str]) -> str:
    """The holder's "pid N": it writes that just after taking the lock, so a reader that came in
    between (seen in CI with two `up`s started together) looks again for a moment."""
    for _ in range(20):
        handle.seek(0)
        holder = handle.read().strip()
        if holder:
            return holder
        time.sleep(0.01)
    return "another process"


_taken: dict[str, IO[str]] = {}  # locks taken ahead of their block (see take_now)


def _claim(handle: IO[str]) -> None:
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}")
    handle.flush()


def _let_go(handle: IO[str]) -> None:
    with handle:
        handle.truncate(0)
        fcntl.flock(handle, fcntl.LOCK_UN)


def take_now(project: str) -> bool:
    """Take the project's lock at once if it is free (the head start of an `up`, see
    :mod:`head_start`); the next :func:`project_lock` of the project in this process then holds it
    without asking again. False when another process holds it."""
    handle = lock_path(project).open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return False
    _claim(handle)
    _taken[project] = handle
    return True


def release(project: str) -> None:
    """Give back a lock :func:`take_now` took and no block used."""
    handle = _taken.pop(project, None)
    if handle is not None:
        _let_go(handle)


@contextlib.contextmanager
def project_lock(project: str, waiting: Callable[[str], None]) -> Iterator[None]:
    """Hold the project's lock for the block; ``waiting`` is told once if another holds it."""
    if project not in _taken and not take_now(project):
        waiter: IO[str] = lock_path(project).open("a+", encoding="utf-8")
        try:
            holder = _holder(waiter)
            waiting(f"Waiting for another nachos-deploy ({holder}) working on project {project} to finish")
            fcntl.flock(waiter, fcntl.LOCK_EX)
        except BaseException:  # interrupted while waiting
            waiter.close()
            raise
        _claim(waiter)
        _taken[project] = waiter
    handle = _taken.pop(project)
    try:
        yield
    finally:
        _let_go(handle)
