"""A head start for a cold `up`: Compose starts the bus while Python is still loading.

Before `up` can start the bus it imports Typer, pydantic and Jinja, validates the deploy file and
renders it: about 0.12 s in which the engine has nothing to do. Yet an `up` run again with the same
command line, in the same folder, on the same files and variables, renders the same files and starts
the bus with the same Compose command as last time. So a cold `up` that succeeded leaves a note
(:func:`remember`), and the next one (:func:`begin`, run before anything heavy is imported) checks
it and, when everything it lists is as it was, takes the project's lock and starts that Compose run
at once. The full `up` then loads, checks and renders as always and adopts the run (:func:`adopt`)
where it would have started the very same one; when what it computed differs after all, it waits
for the early run to end and runs its own (Compose then converges on the files as they are now).

The note lists every input (file digests, ``None`` for a file that must not exist, and salted
digests of the variables the configuration and Compose read, never their values) and applies only
when the last `up` of the project is not running (``.last-up``, see :mod:`fastpath`) and Compose
accepted these very inputs. Anything else, or a lock another run holds, means no head start: the
`up` then does exactly what it did without one. Notes live in ``$XDG_CACHE_HOME/nachos-deploy`` (or
``~/.cache``), one per folder and command line, and go after 30 days unused.

This module runs before the configuration is loaded, so it imports only the standard library and
:mod:`locks`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nachos_deploy import __version__, locks

FORMAT = 1
PREFIXES = ("NACHOS_", "COMPOSE_", "DOCKER_")  # variables whose mere appearance can change a run
KEEP_DAYS = 30


@dataclass
class _State:
    """This process's head start: the command line it was asked for (None: not the command line)
    and the Compose run it began."""

    argv: list[str] | None = None
    cwd: str = ""
    project: str = ""
    command: list[str] = field(default_factory=list)
    inputs: str = ""
    process: subprocess.Popen[str] | None = None


_state = _State()


def notes_dir(environ: Mapping[str, str]) -> Path:
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME") or "~").expanduser() / ".cache")
    return Path(base) / "nachos-deploy" / "head-start"


def _note_path(argv: Sequence[str], cwd: str, environ: Mapping[str, str]) -> Path:
    key = hashlib.sha256(json.dumps([cwd, list(argv)]).encode()).hexdigest()[:32]
    return notes_dir(environ) / f"{key}.json"


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _variable(salt: str, name: str, value: str | None) -> str | None:
    if value is None:
        return None
    return hashlib.sha256(f"{salt}\0{name}\0{value}".encode()).hexdigest()


def _stamp() -> str:
    """This installation of nachos-deploy: its version and its modules' and templates' sizes and
    times (an edited checkout renders differently under the same version)."""
    here = Path(__file__).resolve().parent
    parts = [__version__]
    for folder in (here, here / "templates", here.parent / "templates"):
        with contextlib.suppress(OSError):
            for entry in sorted(os.scandir(folder), key=lambda e: e.name):
                if entry.is_file():
                    stat = entry.stat()
                    parts.append(f"{entry.path}:{stat.st_size}:{stat.st_mtime_ns}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def docker_binary() -> str:
    """Which ``docker`` runs, and when it was installed: another binary may bring another Compose."""
    binary = shutil.which("docker")
    try:
        return f"{binary}:{Path(binary).stat().st_mtime_ns}" if binary else ""
    except OSError:
        return ""


def _last_up_allows(record: Path, inputs: str) -> bool:
    """``.last-up`` as :mod:`fastpath` writes it (format 2): nothing of the project runs by the last
    `up`'s account, and Compose accepted these inputs."""
    try:
        document = json.loads(record.read_text(encoding="utf-8"))
        running = bool(document.get("key")) and bool(document.get("containers"))
        return document.get("format") == 2 and not running and document.get("accepted") == inputs
    except (OSError, ValueError, AttributeError):
        return False


def begin(argv: Sequence[str], environ: Mapping[str, str]) -> None:
    """Start the noted Compose run of an `up` whose every input is as noted; otherwise nothing.
    Never fails: a note that cannot be read or does not hold is no head start."""
    try:
        cwd = str(Path.cwd())
    except OSError:  # the working folder was removed: the command will say so
        return
    _state.argv, _state.cwd = list(argv), cwd
    if not argv or argv[0] != "up":
        return
    try:
        noted = _note_path(argv, cwd, environ)
        info = noted.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o022:
            return  # a note someone else could have written is not run
        note = json.loads(noted.read_text(encoding="utf-8"))
        if (note.get("format"), note.get("stamp"), note.get("docker")) != (FORMAT, _stamp(), docker_binary()):
            return
        salt = str(note["salt"])
        variables: Mapping[str, str | None] = note["variables"]
        if sorted(n for n in environ if n.startswith(PREFIXES)) != sorted(note["prefixed"]):
            return
        if any(_variable(salt, name, environ.get(name)) != value for name, value in variables.items()):
            return
        if any(_digest(Path(file)) != value for file, value in note["files"].items()):
            return
        project, command, inputs = (
            str(note["project"]),
            [str(a) for a in note["command"]],
            str(note["inputs"]),
        )
        if command[:2] != ["docker", "compose"] or not _last_up_allows(Path(note["record"]), inputs):
            return
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return
    try:
        if not locks.take_now(project):
            return  # another run holds it: the full `up` waits for it and says so
    except OSError:  # the lock's folder cannot be made: the full `up` will say so
        return
    try:
        _state.process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(environ)
        )
    except OSError:
        locks.release(project)
        return
    _state.project, _state.command, _state.inputs = project, command, inputs


def started_project() -> str:
    """The project whose bus the head start is starting ("" when none): for the interrupt message."""
    return _state.project if _state.process is not None else ""


def adopt(command: Sequence[str], inputs: str) -> subprocess.Popen[str] | None:
    """The early run, if it is the one the caller is about to start (the same command on the same
    inputs); otherwise None, once the early run, if any, has ended."""
    process = _state.process
    if process is None:
        return None
    _state.process = None
    if list(command) == _state.command and inputs == _state.inputs:
        return process
    process.communicate()
    return None


def finish() -> None:
    """Wait for an early run nobody adopted (an `up` that stopped before it started the bus): it
    must not outlive the command that started it unseen."""
    process, _state.process = _state.process, None
    if process is not None:
        process.communicate()


def remember(
    project: str,
    command: Sequence[str],
    inputs: str,
    read: Iterable[Path],
    variables: Iterable[str],
    record: Path,
    environ: Mapping[str, str],
) -> None:
    """After a cold `up` that succeeded, leave the note for the next `up` with this command line
    (only on the command line: :func:`begin` said which): the Compose ``command`` that started the
    bus on ``inputs`` (:func:`fastpath.inputs`), the files and ``variables`` the configuration and
    Compose read, and the project's ``.last-up``. A note that cannot be written only costs the next
    `up` its head start."""
    if _state.argv is None:
        return
    salt = secrets.token_hex(16)
    prefixed = sorted(n for n in environ if n.startswith(PREFIXES))
    note = {
        "format": FORMAT,
        "stamp": _stamp(),
        "docker": docker_binary(),
        "salt": salt,
        "prefixed": prefixed,
        "variables": {
            name: _variable(salt, name, environ.get(name)) for name in sorted({*variables, *prefixed})
        },
        "files": {str(path): _digest(path) for path in sorted(set(read))},
        "project": project,
        "command": list(command),
        "inputs": inputs,
        "record": str(record),
    }
    path = _note_path(_state.argv, _state.cwd, environ)
    temporary: Path | None = None
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle, name = tempfile.mkstemp(prefix=".note.", dir=path.parent)  # mode 0600
        temporary = Path(name)
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(note, stream)
        temporary.replace(path)
        _prune(path.parent)
    except OSError:
        if temporary is not None:
            temporary.unlink(missing_ok=True)


def _prune(folder: Path) -> None:
    cutoff = time.time() - KEEP_DAYS * 86400
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            if entry.name.endswith(".json") and entry.stat().st_mtime < cutoff:
                Path(entry.path).unlink(missing_ok=True)
