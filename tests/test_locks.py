"""The per-project lock that serializes `up` and `down` (the engine-side test is in test_ci.py), and
the attack on its files: another local user who makes the lock folder first must not get a file of
ours emptied or overwritten."""

from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from nachos_deploy.core.errors import EnvironmentProblem
from nachos_deploy.io import locks


@pytest.fixture
def temp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary folder of its own, as $TMPDIR, and no runtime folder or override."""
    monkeypatch.setattr(locks.tempfile, "gettempdir", lambda: str(tmp_path))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv(locks.LOCKS_VARIABLE, raising=False)
    return tmp_path


def test_a_waiting_lock_names_the_holder_that_has_not_written_its_pid_yet(temp: Path) -> None:
    """Seen in CI: two `up`s started together, the second read the lock file between the first's
    flock and its "pid N" and said "another process". The reader looks again for a moment."""
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
        assert path.read_text() == f"pid {os.getpid()}"
    holder.close()
    assert told == ["Waiting for another nachos-deploy (pid 4242) working on project p to finish"]
    assert path.read_text() == ""


def test_the_networks_lock_is_one_per_machine_and_no_project_s(temp: Path) -> None:
    """Two `up`s of different projects wait for each other only while one places its networks; the
    lock file's name is one no project can have (a project name starts with a letter or digit)."""
    holder = (locks.lock_folder() / locks.NETWORKS_LOCK).open("a+", encoding="utf-8")
    holder.write("pid 4343")
    holder.flush()
    fcntl.flock(holder, fcntl.LOCK_EX)
    threading.Timer(0.3, lambda: fcntl.flock(holder, fcntl.LOCK_UN)).start()
    told: list[str] = []
    with locks.project_lock("networks", told.append):
        assert told == []  # projects' locks are other files
    with locks.networks_lock(told.append, wait=False) as holding:
        assert holding is False and told == []  # not waited for
    with locks.networks_lock(told.append) as holding:
        assert holding is True
    holder.close()
    assert told == ["Waiting for another nachos-deploy (pid 4343) placing its networks to finish"]


def test_the_folder_is_private_to_this_user(temp: Path) -> None:
    folder = locks.lock_folder()
    assert folder == temp / f"nachos-deploy-{os.getuid()}"
    assert folder.stat().st_mode & 0o777 == 0o700


def test_a_runtime_folder_is_preferred(temp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = temp / "run"
    runtime.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
    assert locks.lock_folder() == runtime / "nachos-deploy"


def test_a_symlinked_lock_file_planted_in_our_folder_does_not_empty_its_target(temp: Path) -> None:
    """The attack of the review: the lock file is a symlink to a file of the victim's."""
    victim = temp / "victim.txt"
    victim.write_text("precious\n")
    folder = locks.lock_folder()
    (folder / "demo.lock").symlink_to(victim)
    with pytest.raises(EnvironmentProblem, match=r"demo\.lock"), locks.project_lock("demo", print):
        pass
    assert victim.read_text() == "precious\n"


def test_a_folder_made_first_by_another_user_is_refused(temp: Path) -> None:
    """Another user makes $TMPDIR/nachos-deploy-<uid> (world-writable, theirs) with a planted link."""
    victim = temp / "victim.txt"
    victim.write_text("precious\n")
    folder = temp / f"nachos-deploy-{os.getuid()}"
    folder.mkdir()
    folder.chmod(0o777)
    (folder / "demo.lock").symlink_to(victim)
    with pytest.raises(EnvironmentProblem, match="not a private folder"), locks.project_lock("demo", print):
        pass
    assert victim.read_text() == "precious\n"
    if os.getuid() == 0:  # only root can give a folder away: the owner check itself
        folder.chmod(0o700)
        os.chown(folder, 4242, 4242)
        with pytest.raises(EnvironmentProblem, match="owned by uid"):
            locks.lock_folder()


def test_a_folder_that_is_a_symlink_is_refused(temp: Path) -> None:
    elsewhere = temp / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (temp / f"nachos-deploy-{os.getuid()}").symlink_to(elsewhere)
    with pytest.raises(EnvironmentProblem, match="not a symlink"):
        locks.lock_folder()
