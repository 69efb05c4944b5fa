"""Writing rendered files all or nothing, and comparing them with what is on disk.

Everything is written to a temporary folder beside the output first; only when every file is written
are they moved into place, each with an atomic rename. A failure leaves no half-written file behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Collection, Iterator, Mapping
from pathlib import Path

from nachos_deploy.core.errors import OutputError
from nachos_deploy.core.names import SELECTION_FILE


def differences(output_dir: Path, files: Mapping[str, str], remove: Collection[str] = ()) -> list[str]:
    """Names of the rendered files that are missing from ``output_dir`` or differ from it, and of
    the files in ``remove`` (written by an earlier render, no longer produced) still there. A symbolic
    link counts as different whatever it points to: render replaces the link, never writes through it."""
    changed = [name for name in sorted(remove) if (output_dir / name).exists()]
    for name, content in sorted(files.items()):
        path = output_dir / name
        try:
            same = not path.is_symlink() and path.read_bytes() == content.encode("utf-8")
        except OSError:
            same = False
        if not same:
            changed.append(name)
    return changed


def stale(output_dir: Path, files: Mapping[str, str], candidates: Collection[str], marker: str) -> list[str]:
    """Files an earlier render wrote (they are among ``candidates`` and carry ``marker`` in their
    first lines) that this render no longer produces: left there, they would be mistaken for output,
    e.g. a generated nachos.toml after the user put their own beside the deploy file."""
    found = []
    for name in sorted(set(candidates) - set(files)):
        try:
            with (output_dir / name).open(encoding="utf-8", errors="replace") as handle:
                head = handle.read(512)
        except OSError:
            continue
        if marker in head:
            found.append(name)
    return found


def _cannot(output_dir: Path, exc: OSError, done: Collection[str] = ()) -> OutputError:
    """The failed write, saying truthfully what was already replaced."""
    reason = exc.strerror or str(exc)
    where = f" ({exc.filename})" if exc.filename and str(exc.filename) not in reason else ""
    if done:
        state = f"Already replaced: {', '.join(sorted(done))}; the other files are as they were"
    else:
        state = "Nothing was changed there"
    return OutputError(
        f"Cannot write the rendered files to {output_dir}: {reason}{where}. {state}. Fix the folder "
        "(permissions, free space, what stands in the way) and run the command again, or choose "
        "another folder with --output."
    )


def _obstacles(output_dir: Path, names: Collection[str]) -> None:
    """Refuse before writing anything when a rendered file's place is taken by a folder (a rename
    onto it would fail half way through)."""
    if not output_dir.is_dir():
        kind = "a file" if output_dir.exists() or output_dir.is_symlink() else "missing"
        raise OutputError(
            f"The output folder {output_dir} is {kind}, not a folder. Remove it or choose another "
            "folder with --output. Nothing was written."
        )
    for name in sorted(names):
        target = output_dir / name
        if target.is_dir() and not target.is_symlink():
            raise OutputError(
                f"{target} is a folder where nachos-deploy writes a file. Remove it (or choose "
                "another output folder with --output) and run the command again. Nothing was written."
            )


def _foreign(output_dir: Path, names: Collection[str], marker: str) -> None:
    """Refuse to replace a file nachos-deploy did not write (its first lines lack ``marker``): an
    ``--output`` naming a folder of the user's own, or an empty one from an unset variable that
    means the working folder, must not cost them their docker-compose.yml."""
    theirs = []
    for name in sorted(names):
        target = output_dir / name
        if target.is_symlink() or not target.is_file():
            continue
        try:
            with target.open(encoding="utf-8", errors="replace") as handle:
                head = handle.read(512)
        except OSError:
            continue
        if marker not in head:
            theirs.append(name)
    if theirs:
        raise OutputError(
            f"{output_dir} holds {', '.join(theirs)} that nachos-deploy did not write. Move "
            "them away, or choose another folder with --output (or the `output` key). Nothing was "
            "written."
        )


def write_all(
    output_dir: Path, files: Mapping[str, str], remove: Collection[str] = (), *, marker: str = ""
) -> list[str]:
    """Write every file or none, then remove ``remove``; returns the names that changed.

    The files are staged in a temporary folder in the same file system as their destination (inside
    the output folder when it exists, so a mount point works too: a rename across file systems fails
    with EXDEV) and renamed into place one by one; a rename replaces a symbolic link itself. With a
    ``marker``, files that lack it are the user's and are never replaced."""
    changed = differences(output_dir, files, remove)
    if not changed:
        return []
    exists = output_dir.exists() or output_dir.is_symlink()
    if exists:
        _obstacles(output_dir, [name for name in changed if name in files])
        if marker:
            _foreign(output_dir, [name for name in changed if name in files], marker)
    home = output_dir if exists else output_dir.parent
    try:
        home.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.staging-", dir=home))
    except OSError as exc:
        raise _cannot(output_dir, exc) from None
    done: list[str] = []
    try:
        for name, content in files.items():
            (staging / name).write_text(content, encoding="utf-8")
            (staging / name).chmod(0o644)
        if not exists:
            staging.chmod(0o755)
            staging.rename(output_dir)
            return changed
        for name in changed:
            if name in files:
                (staging / name).replace(output_dir / name)
            else:
                (output_dir / name).unlink()
            done.append(name)
    except OSError as exc:
        raise _cannot(output_dir, exc, done) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return changed


def read_env_file(path: Path) -> dict[str, str]:
    """The variables a Compose ``.env``-style file sets (``KEY=value``, ``export KEY=...``, quoted
    or not; comments and blank lines skipped). A missing file sets nothing."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return {}
    values: dict[str, str] = {}
    for line in lines:
        text = line.strip().removeprefix("export ").strip()
        if not text or text.startswith("#") or "=" not in text:
            continue
        name, _, value = text.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        elif value.startswith("#"):
            value = ""
        values[name.strip()] = value
    return values


def dotenv_names(path: Path) -> set[str]:
    """Names that a ``.env`` file sets to a non-empty value."""
    return {name for name, value in read_env_file(path).items() if value}


@contextlib.contextmanager
def staged(output_dir: Path, files: Mapping[str, str]) -> Iterator[Path]:
    """A folder holding the files as rendered now: the output folder when it is up to date, else a
    temporary copy, so that reading commands (validate, status, down) never rewrite the output."""
    if not differences(output_dir, files):
        yield output_dir
        return
    with tempfile.TemporaryDirectory(prefix="nachos-deploy-") as tmp:
        folder = Path(tmp) / output_dir.name
        write_all(folder, files)
        yield folder


SELECTION = SELECTION_FILE


def read_selection(output_dir: Path) -> list[str]:
    """The services the last ``up --only`` started (empty: the whole stack)."""
    try:
        text = (output_dir / SELECTION).read_text(encoding="utf-8")
    except OSError:
        return []
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]


def write_selection(output_dir: Path, only: Collection[str]) -> None:
    """Remember ``up --only`` so that ``status`` judges what was asked for; forget it on a full up."""
    path = output_dir / SELECTION
    try:
        if only:
            path.write_text(
                "# services the last `nachos-deploy up --only` started; status judges these\n"
                + "".join(f"{name}\n" for name in sorted(only)),
                encoding="utf-8",
            )
        else:
            path.unlink(missing_ok=True)
    except OSError as exc:
        raise OutputError(f"Cannot write {path} ({exc.strerror or exc}); check the output folder.") from None


def replace_private(target: Path, text: str, mode: int = 0o600) -> None:
    """Put ``text`` at ``target`` in one rename, so a reader (a reloading server, the next command)
    never sees half a file. The temporary file is created 0600 by mkstemp, so a secret is never
    readable by others even for a moment, and only then given ``mode``. Raises ``OSError``, leaving
    no temporary file behind: each caller decides whether a failed write stops it."""
    handle, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    temporary = Path(name)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        if mode != 0o600:
            temporary.chmod(mode)
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
