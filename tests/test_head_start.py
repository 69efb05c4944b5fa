"""The head start of a cold `up` (nachos_deploy.head_start): Compose starts the bus while Python loads.

On the real engine, through the command line (`up --json` says whether the bus's Compose run began
before the configuration was loaded, and a logging `docker` counts the Compose runs): an `up` after
`down` gets it and adopts that run; a changed deploy file, a running stack or another run holding
the project's lock get none. The decisions themselves are tested on real files, with a harmless real
command in the note (`docker compose version`), one changed input at a time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nachos_deploy import head_start, locks
from tests.test_fastpath import Logged, compose_ups, logged
from tests.test_lifecycle import deployment

__all__ = ["deployment", "logged"]  # the fixtures, shared with test_lifecycle and test_fastpath


def _bus_proven(result: dict[str, object]) -> None:
    services = result["services"]
    assert isinstance(services, list) and {s["name"] for s in services} == {"bus", "bus-ports"}
    assert all(s["ok"] for s in services), services
    bus = result["bus"]
    assert isinstance(bus, dict) and bus["round_trip_ms"] is not None and bus["jetstream"] is True


def test_an_up_after_down_starts_the_bus_at_once_and_adopts_that_run(logged: Logged) -> None:
    deployment = logged.deployment
    first, _ = logged.up("--only", "bus")
    assert first["head_start"] is False  # no note yet: the first up leaves one
    _bus_proven(first)
    assert deployment.run("down")[0] == 0

    again, calls = logged.up("--only", "bus")
    assert again["head_start"] is True, again
    assert len(compose_ups(calls)) == 1, calls  # the early run was adopted, not run twice
    _bus_proven(again)

    # A running stack: the shortcut that runs no Compose, never a head start.
    same, calls = logged.up("--only", "bus")
    assert same["unchanged"] is True and same["head_start"] is False and compose_ups(calls) == []

    # A changed deploy file: no head start, and the change applies.
    assert deployment.run("down")[0] == 0
    deployment.write({}, max_payload="2MB")
    changed, _ = logged.up("--only", "bus")
    assert changed["head_start"] is False and changed["bus"]["max_payload"] == 2 * 1024 * 1024
    assert deployment.run("down")[0] == 0
    changed_again, _ = logged.up("--only", "bus")
    assert changed_again["head_start"] is True and changed_again["bus"]["max_payload"] == 2 * 1024 * 1024


def test_no_head_start_while_another_run_holds_the_project(logged: Logged) -> None:
    deployment = logged.deployment
    logged.up("--only", "bus")
    assert deployment.run("down")[0] == 0
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from nachos_deploy import locks\n"
            f"assert locks.take_now({deployment.project!r}); print('held', flush=True); time.sleep(2)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "nachos_deploy", "up", "--json", "--only", "bus", "-c", str(deployment.file)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PATH": logged.path},
    )
    holder.communicate(timeout=10)
    assert done.returncode == 0, done.stderr
    assert "Waiting for another nachos-deploy" in done.stderr
    assert json.loads(done.stdout)["head_start"] is False
    assert time.monotonic() - started >= 1.5  # it did wait for the holder


# The decisions, one input at a time.

PROJECT_PREFIX = "hs-unit"


class Note:
    """A folder with a deploy file, an output file, a `.last-up` and a note for `up -c FILE`."""

    def __init__(self, folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.folder = folder
        self.project = f"{PROJECT_PREFIX}-{uuid.uuid4().hex[:8]}"
        self.config = folder / "nachos-deploy.yaml"
        self.config.write_text(f"project: {self.project}\n")
        self.rendered = folder / "out" / "docker-compose.yml"
        self.rendered.parent.mkdir()
        self.rendered.write_text("services: {}\n")
        self.absent = folder / "docker-compose.override.yml"
        self.record = folder / "out" / ".last-up"
        self.last_up(running=False, accepted="inputs-1")
        self.environ = {
            "PATH": os.environ["PATH"],
            "XDG_CACHE_HOME": str(folder / "cache"),
            "MY_SECRET": "s1",
        }
        self.argv = ["up", "-c", str(self.config)]
        self.command = ["docker", "compose", "version"]
        monkeypatch.chdir(folder)
        self.monkeypatch = monkeypatch
        self.fresh()
        head_start.begin(self.argv, self.environ)  # no note yet: nothing starts, the argv is kept
        assert head_start.started_project() == ""
        head_start.remember(
            self.project,
            self.command,
            "inputs-1",
            [self.config, self.rendered, self.absent],
            {"MY_SECRET"},
            self.record,
            self.environ,
        )

    def last_up(self, *, running: bool, accepted: str) -> None:
        containers = {"bus": {"container": "c", "image": "i"}} if running else {}
        key = "k" if running else ""
        document = {"format": 2, "key": key, "containers": containers, "accepted": accepted, "resolved": "r"}
        self.record.write_text(json.dumps(document))

    def fresh(self) -> None:
        self.monkeypatch.setattr(head_start, "_state", head_start._State())

    def starts(self, environ: dict[str, str] | None = None) -> bool:
        """Whether a new process's head start would begin; what it began is waited for and let go."""
        self.fresh()
        head_start.begin(self.argv, environ if environ is not None else self.environ)
        began = head_start.started_project() == self.project
        head_start.finish()
        locks.release(self.project)
        return began


@pytest.fixture
def note(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Note]:
    yield Note(tmp_path, monkeypatch)


def test_the_note_holds_no_secret_and_starts_the_noted_command(note: Note) -> None:
    written = list((note.folder / "cache" / "nachos-deploy" / "head-start").glob("*.json"))
    assert len(written) == 1 and "s1" not in written[0].read_text()
    assert oct(written[0].stat().st_mode & 0o777) == "0o600"
    note.fresh()
    head_start.begin(note.argv, note.environ)
    assert head_start.started_project() == note.project
    process = head_start.adopt(note.command, "inputs-1")
    assert process is not None
    out, _ = process.communicate(timeout=30)
    assert process.returncode == 0 and "Docker Compose" in out
    locks.release(note.project)


def test_a_run_that_is_not_the_one_noted_is_waited_for_and_not_adopted(note: Note) -> None:
    note.fresh()
    head_start.begin(note.argv, note.environ)
    assert head_start.adopt(note.command, "other inputs") is None  # and the early run has ended
    assert head_start.started_project() == ""
    locks.release(note.project)


def test_any_changed_input_means_no_head_start(note: Note) -> None:
    assert note.starts()
    assert not note.starts({**note.environ, "MY_SECRET": "s2"})  # a variable the files name
    assert not note.starts({**note.environ, "NACHOS_DEPLOY_PROJECT": "x"})  # a new layer of config
    assert not note.starts({k: v for k, v in note.environ.items() if k != "MY_SECRET"})
    assert not note.starts({**note.environ, "XDG_CACHE_HOME": str(note.folder / "elsewhere")})
    assert note.starts()
    argv = note.argv
    note.argv = [*argv, "--json"]  # another command line has no note
    assert not note.starts()
    note.argv = argv

    note.config.write_text(f"project: {note.project}\n# a comment is a change too\n")
    assert not note.starts()
    note.config.write_text(f"project: {note.project}\n")
    assert note.starts()

    note.absent.write_text("services: {}\n")  # a file that was not there appears
    assert not note.starts()
    note.absent.unlink()

    note.rendered.write_text("services: {bus: {}}\n")  # a rendered file edited by hand
    assert not note.starts()
    note.rendered.write_text("services: {}\n")

    note.last_up(running=True, accepted="inputs-1")  # a stack that runs: the shortcut's business
    assert not note.starts()
    note.last_up(running=False, accepted="inputs-2")  # inputs Compose has not accepted
    assert not note.starts()
    note.last_up(running=False, accepted="inputs-1")
    assert note.starts()

    (written,) = (note.folder / "cache" / "nachos-deploy" / "head-start").glob("*.json")
    written.chmod(0o622)  # a note others could have written
    assert not note.starts()
    written.chmod(0o600)
    assert note.starts()


def test_no_head_start_under_another_process_lock_or_for_other_commands(note: Note) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from nachos_deploy import locks\n"
            f"assert locks.take_now({note.project!r}); print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert not note.starts()
    finally:
        holder.kill()
        holder.communicate()
    assert note.starts()
    note.argv = ["down", *note.argv[1:]]
    assert not note.starts()
