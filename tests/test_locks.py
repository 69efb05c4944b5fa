"""The per-project lock that serializes `up` and `down` (the engine-side test is in test_ci.py)."""

from __future__ import annotations

import fcntl
import threading
import time
from pathlib import Path

import pytest

from nachos_deploy import locks


def test_a_waiting_lock_names_the_holder_that_has_not_written_its_pid_yet(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen in CI: two `up`s started together, the second read the lock file between the first's
    flock and its "pid N" and said "another process". The reader looks again for a moment."""
    monkeypatch.setattr(locks.tempfile, "gettempdir", lambda: str(tmp_path))
    path = locks.lock_path("p")
    holder = path.open("a+", encoding="utf-8")
    fcntl.flock(holder, fcntl.LOCK_EX)  # held, nothing written yet

    def write_then_release() -> None:
        time.sleep(0.05)
        holder.write("pid 4242")
        holder.flush()
        time.sleep(0.1)
        fcntl.flock(holder, fcntl.LOCK_UN)

    told: list[str] = []
    threading.Thread(target=write_then_release).start()
    with locks.project_lock("p", told.append):
        pass
    holder.close()
    assert told == ["Waiting for another nachos-deploy (pid 4242) working on project p to finish"]
