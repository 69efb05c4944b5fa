"""The image lock on disk: ``nachos-deploy.lock`` beside the deploy file (docs/images.md).

It sits beside the deploy file, not in the output folder, because it is an input, like the deploy
file: it is committed, reviewed and carried to the machine that runs the stack.
"""

from __future__ import annotations

from pathlib import Path

from nachos_deploy.core import image_lock
from nachos_deploy.core.errors import ConfigError, OutputError
from nachos_deploy.io import files


def path_for(base_dir: Path) -> Path:
    """Where the lock of a deploy file in ``base_dir`` lives."""
    return base_dir / image_lock.LOCK_FILE


def read(path: Path) -> image_lock.ImageLock | None:
    """The lock at ``path``, or None when there is none; an unreadable one is a ConfigError."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"Cannot read the image lock {path} ({exc}). Fix its permissions, or delete it and run "
            f"`{image_lock.LOCK_COMMAND}` to write it again."
        ) from None
    return image_lock.loads(text, str(path))


def write(path: Path, lock: image_lock.ImageLock) -> bool:
    """Write the lock in one rename (readable by all: it holds no secret); whether it changed."""
    text = image_lock.dumps(lock)
    try:
        if path.read_text(encoding="utf-8") == text:
            return False
    except (OSError, UnicodeDecodeError):
        pass
    try:
        files.replace_private(path, text, mode=0o644)
    except OSError as exc:
        raise OutputError(
            f"Cannot write the image lock {path} ({exc.strerror or exc}); the old one, if any, is "
            "unchanged. Make the deploy file's folder writable and run the command again."
        ) from None
    return True
