"""Shared fixtures. Engine tests skip locally with a reason and a fix; under CI=true they fail instead,
so CI cannot go green by skipping. Markers follow from the fixtures a test uses.

Under pytest-xdist (`make pytest` runs two workers) the engine tests run beside the fast ones and beside
each other: each makes its own project with engine-chosen ports. Three rules keep that correct:
tests that share a module-scoped fixture (a swarm, a running stack, a set of nats-servers) go to one
worker, so the shared thing is made once and never torn down under another worker's feet; a test marked
``exclusive`` (one that fills the engine's address pools) runs while no other engine test does; and the
engine tests are handed out first, the grouped (longest) ones before the rest, so the fast tests fill
the gaps instead of leaving a long engine test alone at the end."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
SHARED_SCOPES = ("module", "class", "package")


def _shared_fixture(item: pytest.Item) -> str | None:
    """The first module- (or class-) scoped fixture ``item`` uses, as ``module::fixture``."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    for name in info.names_closure:
        definitions = info.name2fixturedefs.get(name)
        if definitions and definitions[-1].scope in SHARED_SCOPES:
            return f"{item.nodeid.split('::')[0]}::{name}"
    return None


def _in_parallel(config: pytest.Config) -> bool:
    return config.pluginmanager.hasplugin("xdist") and bool(getattr(config.option, "numprocesses", None))


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    xdist = config.pluginmanager.hasplugin("xdist")
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if "engine" in fixtures:
            item.add_marker(pytest.mark.engine)
        if any(name.startswith("nats_server") for name in fixtures):
            item.add_marker(pytest.mark.natsserver)
        shared = _shared_fixture(item)
        if xdist and shared is not None:
            item.add_marker(pytest.mark.xdist_group(shared))
    if _in_parallel(config) or os.environ.get("PYTEST_XDIST_WORKER"):

        def rank(item: pytest.Item) -> int:
            if item.get_closest_marker("exclusive"):
                return 3  # last: by then the other worker is mostly on fast tests, which take no lock
            if item.get_closest_marker("engine") is None:
                return 2
            return 0 if _shared_fixture(item) else 1

        items.sort(key=rank)  # stable: each file keeps its order


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """Across xdist workers, engine tests hold a shared lock and ``exclusive`` ones the only lock,
    from the setup of their fixtures to the teardown (a module fixture's too, on the last test)."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")  # one random id for all the workers of one run
    if not run or item.get_closest_marker("engine") is None:
        return (yield)
    path = Path(tempfile.gettempdir()) / f"nachos-deploy-tests-{run}.lock"
    with path.open("a") as handle:
        exclusive = item.get_closest_marker("exclusive") is not None
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            return (yield)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
