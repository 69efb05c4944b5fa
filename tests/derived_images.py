"""Images of a test's own, derived from the shared offline images by adding one file of random content:
a test of the image lock or of bundles may rebuild and remove these, never the shared ones, which the
other tests' stacks run (tests/test_lock.py, tests/test_bundle.py)."""

from __future__ import annotations

import secrets
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path


def build(tag: str, base: str) -> str:
    """Build ``tag`` FROM ``base`` plus /nachos-test-marker with new random content; its image id."""
    with tempfile.TemporaryDirectory(prefix="nachos-derived-") as folder:
        Path(folder, "marker").write_text(secrets.token_hex(16), encoding="utf-8")
        Path(folder, "Dockerfile").write_text(
            f"FROM {base}\nCOPY marker /nachos-test-marker\n", encoding="utf-8"
        )
        subprocess.run(
            ["docker", "build", "-q", "-t", tag, folder],
            check=True,
            capture_output=True,
            text=True,
            timeout=180,
        )
    return image_id(tag)


def image_id(reference: str) -> str:
    """The image id of ``reference``, or "" when the engine does not have it."""
    done = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{.Id}}", reference],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return done.stdout.strip() if done.returncode == 0 else ""


def remove(references: Sequence[str]) -> None:
    """Remove the test's own images (and the images left untagged by a rebuild, by id)."""
    if references:
        subprocess.run(["docker", "image", "rm", "-f", *references], capture_output=True, timeout=120)
