"""Writing rendered files all or nothing, and comparing them with what is on disk.

Everything is written to a temporary folder beside the output first; only when every file is written
are they moved into place, each with an atomic rename. A failure leaves no half-written file behind.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from nachos_deploy.errors import OutputError


def differences(output_dir: Path, files: Mapping[str, str]) -> list[str]:
    """Names of the rendered files that are missing from ``output_dir`` or differ from it."""
    changed = []
    for name, content in sorted(files.items()):
        path = output_dir / name
        try:
            same = path.read_bytes() == content.encode("utf-8")
        except OSError:
            same = False
        if not same:
            changed.append(name)
    return changed


def write_all(output_dir: Path, files: Mapping[str, str]) -> list[str]:
    """Write every file or none; returns the names whose content changed."""
    changed = differences(output_dir, files)
    if not changed:
        return []
    parent = output_dir.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=parent))
    except OSError as exc:
        raise OutputError(
            f"Cannot create the output folder {output_dir} ({exc.strerror}). Choose another folder "
            "with --output or fix the permissions of its parent."
        ) from None
    try:
        for name, content in files.items():
            (staging / name).write_text(content, encoding="utf-8")
            (staging / name).chmod(0o644)
        if not output_dir.exists():
            staging.chmod(0o755)
            staging.rename(output_dir)
            return changed
        for name in changed:
            (staging / name).replace(output_dir / name)
    except OSError as exc:
        raise OutputError(
            f"Cannot write the rendered files to {output_dir} ({exc.strerror or exc}). Nothing was "
            "changed there; fix the folder's permissions or choose another with --output."
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return changed


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
