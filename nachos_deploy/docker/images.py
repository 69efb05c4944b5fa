"""What the engine says an image is (its id, its registry digest), and moving images without a
registry (``docker save`` / ``docker load``), for the image lock and bundles (docs/images.md).

An image's id is the digest of its configuration, so it is the same on every engine that has the
same image, whether pulled, built from the same layers, or loaded from a bundle. Its registry
digest (``RepoDigests``) exists only for an image pulled from (or pushed to) a registry, and Docker's
classic image store does not keep it through ``docker save``/``docker load``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from nachos_deploy.core.errors import DeployError
from nachos_deploy.core.image_lock import repository
from nachos_deploy.docker import runner
from nachos_deploy.docker.errors import classify
from nachos_deploy.docker.runner import DockerFailure

_FORMAT = "{{.Id}} {{json .RepoDigests}}"
SAVE_TIMEOUT = 1800.0  # seconds: a few GB of layers through a slow disk
_LOADED = re.compile(r"^Loaded image(?: ID)?: (\S+)$", re.MULTILINE)


@dataclass(frozen=True)
class ImageIdentity:
    """An image as the engine has it under ``reference``."""

    reference: str
    image_id: str  # sha256:... (the same on every engine with this image)
    digest: (
        str | None
    )  # sha256:... of the registry manifest for the reference's repository; None: local build


def _familiar(name: str) -> str:
    """Docker Hub's long spellings shortened as ``RepoDigests`` writes them (docker.io/library/nats
    → nats)."""
    for prefix in ("docker.io/library/", "index.docker.io/library/", "docker.io/", "index.docker.io/"):
        if name.startswith(prefix):
            return name[len(prefix) :]
    return name


def _digest_of(reference: str, repo_digests: Sequence[str]) -> str | None:
    """The registry digest of ``reference``'s repository among ``RepoDigests`` (an image pushed to
    several repositories has one per repository; one from another repository says nothing of this
    one's)."""
    if "@" in reference:
        return reference.split("@", 1)[1]
    wanted = _familiar(repository(reference))
    for entry in repo_digests:
        name, _, digest = entry.partition("@")
        if _familiar(name) == wanted and digest:
            return digest
    return None


def _parse(reference: str, line: str) -> ImageIdentity:
    image_id, _, digests = line.strip().partition(" ")
    found = json.loads(digests) if digests else None
    return ImageIdentity(reference, image_id, _digest_of(reference, found if isinstance(found, list) else []))


def identify(references: Sequence[str]) -> dict[str, ImageIdentity | None]:
    """Each reference's image on this engine (None: the engine does not have it), in one
    ``docker image inspect`` when all are there, else one each (Docker's output for several does
    not say which one was missing). No engine: an EnvironmentProblem naming the fix."""
    names = sorted(set(references))
    if not names:
        return {}
    done = runner.run(["docker", "image", "inspect", "--format", _FORMAT, *names], check=False)
    lines = done.stdout.splitlines()
    if done.returncode == 0 and len(lines) == len(names):
        return {name: _parse(name, line) for name, line in zip(names, lines, strict=True)}
    found: dict[str, ImageIdentity | None] = {}
    for name in names:
        one = runner.run(["docker", "image", "inspect", "--format", _FORMAT, name], check=False)
        if one.returncode == 0 and one.stdout.strip():
            found[name] = _parse(name, one.stdout)
        elif "no such image" in (one.stderr + one.stdout).lower():
            found[name] = None
        else:
            raise classify(
                DockerFailure(one.argv, one.returncode, one.stdout, one.stderr), f"Cannot inspect {name}"
            )
    return found


def save(references: Sequence[str], target: Path) -> None:
    """``docker save`` of ``references`` into one tar at ``target`` (tags kept, layers shared)."""
    names = sorted(set(references))
    try:
        runner.run(["docker", "save", "--output", str(target), *names], timeout=SAVE_TIMEOUT)
    except DockerFailure as exc:
        raise classify(exc, f"docker save of {', '.join(names)} failed") from None


def load(archive: Path, progress: Callable[[str], None] = lambda _: None) -> list[str]:
    """``docker load`` of a tar made by :func:`save`; the references (or ids) Docker says it loaded."""
    try:
        done = runner.run(["docker", "load", "--input", str(archive)], timeout=SAVE_TIMEOUT)
    except DockerFailure as exc:
        raise classify(exc, f"docker load of {archive} failed") from None
    except DeployError:
        raise
    loaded = _LOADED.findall(done.stdout)
    for name in loaded:
        progress(f"Loaded {name}")
    return loaded
