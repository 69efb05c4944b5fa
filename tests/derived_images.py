"""Images of a test's own, derived from the shared offline images by adding one file of random content:
a test of the image lock, of bundles or of upgrades may rebuild and remove these, never the shared ones,
which the other tests' stacks run (tests/test_lock.py, tests/test_bundle.py, tests/test_upgrade.py)."""

from __future__ import annotations

import secrets
import subprocess
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests import mini_registry

PROBE = "nachos-deploy/probe:latest"


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


def build_with(tag: str, base: str, lines: str) -> str:
    """Build ``tag`` FROM ``base`` plus Dockerfile ``lines`` (a label, an environment variable the
    probe reads); its image id."""
    subprocess.run(
        ["docker", "build", "-q", "-t", tag, "-"],
        input=f"FROM {base}\n{lines}\n",
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return image_id(tag)


def pushed(tag: str, base: str) -> str:
    """``build(tag, base)``, pushed to the registry ``tag`` names (tests/mini_registry.py); its id."""
    made = build(tag, base)
    done = subprocess.run(["docker", "push", tag], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return made


def pushed_bus(part: str, tag: str) -> tuple[str, str, str]:
    """A bus image of the test's own pushed to an in-process registry that is stopped again (so it has
    a registry digest, and nothing to be pulled from), and the tag of the test's probe image to build
    later: (bus, the bus's id, probe)."""
    with mini_registry.running() as registry:
        bus, probe = f"{registry}/nachos-test/{part}-{tag}-bus:1", f"nachos-test/{part}-{tag}-probe:1"
        return bus, pushed(bus, "nats:alpine"), probe


@dataclass(frozen=True)
class OwnStack:
    """A deploy file whose bus and gateway run images of the test's own (the state store and llm-proxy
    off, no fixed host port): what tests/test_lock.py locks and tests/test_bundle.py bundles. A test that
    changes ``document`` writes it to ``file`` again itself."""

    project: str
    bus: str
    bus_id: str
    probe: str
    document: dict[str, object]
    file: Path

    def build_probe(self) -> str:
        """Build (again) the gateway's image FROM the shared probe, with a new marker; its id."""
        return build(self.probe, PROBE)


def own_stack(folder: Path, part: str, project_prefix: str) -> OwnStack:
    """Push the bus image (``pushed_bus``) and write folder/nachos-deploy.yaml. The gateway's image is not
    built yet: build it inside the test's ``try`` (``build_probe``) so that its ``finally`` removes it."""
    tag = uuid.uuid4().hex[:8]
    project = f"{project_prefix}-{tag}"
    bus, bus_id, probe = pushed_bus(part, tag)
    document: dict[str, object] = {
        "project": project,
        "bus": {"client_port": 0, "monitor_port": 0, "image": bus},
        "state": {"enabled": False},
        "components": {"gateway": {"image": probe}, "llm-proxy": {"enabled": False}},
    }
    file = folder / "nachos-deploy.yaml"
    file.write_text(yaml.safe_dump(document))
    return OwnStack(project, bus, bus_id, probe, document, file)


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
