"""Shared fixtures. Engine tests skip locally with a reason and a fix; under CI=true they fail instead,
so CI cannot go green by skipping. Markers follow from the fixtures a test uses."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "engine" in fixtures:
            item.add_marker(pytest.mark.engine)
        if any(name.startswith("nats_server") for name in fixtures):
            item.add_marker(pytest.mark.natsserver)


def unavailable(reason: str) -> None:
    """Skip with the reason and the fix, or fail under CI where nothing may be skipped."""
    if IN_CI:
        pytest.fail(f"{reason} (CI=true: engine and NATS tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def engine() -> str:
    """A reachable Docker engine with Compose v2; returns the engine's version."""
    fix = "run `bash scripts/install-engine.sh` as root (or `make engine`)"
    if shutil.which("docker") is None:
        unavailable(f"no docker CLI; {fix}")
    info = subprocess.run(
        ["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, timeout=30
    )
    if info.returncode != 0:
        unavailable(f"the Docker engine does not answer ({info.stderr.strip()[:200]}); {fix}")
    compose = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, timeout=30)
    if compose.returncode != 0:
        unavailable(f"Compose v2 is missing; {fix}")
    return info.stdout.strip()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty working folder with no NACHOS_DEPLOY_* variables leaking in from the caller."""
    for name in list(os.environ):
        if name.startswith("NACHOS_DEPLOY_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    yield tmp_path


PROBE_DIR = ROOT / "images" / "probe"
