"""Shared fixtures. Engine tests skip locally with a reason and a fix; under CI=true they fail instead,
so CI cannot go green by skipping. Markers follow from the fixtures a test uses.

Under pytest-xdist (`make pytest` runs two workers) the engine tests run beside the fast ones and beside
each other: each makes its own project with engine-chosen ports. Three rules keep that correct:
the tests of a file that shares a module-scoped fixture (a swarm, a running stack, a set of
nats-servers) go to one worker, so the shared thing is made once and never torn down under another
worker's feet; a test marked ``exclusive`` (one that fills the engine's address pools) runs while no
other engine test does, and a file that makes a swarm runs while no other engine test does, from
its first test to its swarm's ``leave``; and the engine tests are handed out first, the shared
(longest) ones before the rest, so the fast tests fill the gaps instead of leaving a long engine
test alone at the end."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ["pytester"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

SHARED_FILES = tuple(
    f"tests/{name}.py"
    for name in (
        "test_swarm_nodes",
        "test_swarm",
        "test_bus_upgrade_swarm",
        "test_fastpath",
        "test_security",
        "test_host_uids",
        "test_outage",
        "test_algorithm",
        "test_monitor_access",
        "test_channel_boundary",
        "test_ingress",
        "test_flood",
        "test_refused_attacks",
        "test_bus_tls",
        "test_state_store",
        "test_backup",
        "test_backup_swarm",
        "test_plan_engine",
        "test_plan_swarm",
        "test_upgrade_swarm",
        "test_upgrade",
        "test_upgrade_algorithm",
    )
)
"""The files with a module-scoped fixture, longest first: each runs whole on one worker, and the longest
start first. Collection fails if a file gets one without being listed here (xdist's own
``xdist_group`` does not work with pytest 9's node ids)."""


def _shared_fixture(item: pytest.Item) -> str | None:
    """The first module- (or class-) scoped fixture ``item`` uses."""
    info = getattr(item, "_fixtureinfo", None)
    if info is None:
        return None
    for name in info.names_closure:
        definitions = info.name2fixturedefs.get(name)
        if definitions and definitions[-1].scope in ("module", "class", "package"):
            return str(name)
    return None


EXCLUSIVE_FILES = ("tests/test_fastpath.py",)
"""Files whose engine tests run while no other engine test does. test_fastpath's cases time each
`up` through the published ports of a stack they change again and again; beside another worker's
stacks (networks and containers made and removed, the engine's port rules rewritten), its `up`s saw
the bus's monitoring port time out for the whole 90 s in 3 CI runs of 5, and never alone (issue 18
takes up why)."""


def pytest_itemcollected(item: pytest.Item) -> None:
    fixtures = getattr(item, "fixturenames", ())
    if "engine" in fixtures:
        item.add_marker(pytest.mark.engine)
        if item.nodeid.split("::")[0] in EXCLUSIVE_FILES:
            item.add_marker(pytest.mark.exclusive)
    if any(name.startswith("nats_server") for name in fixtures):
        item.add_marker(pytest.mark.natsserver)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    unlisted = {
        item.nodeid.split("::")[0]
        for item in items
        if _shared_fixture(item) and item.nodeid.split("::")[0] not in SHARED_FILES
    }
    if unlisted:
        raise pytest.UsageError(
            f"{', '.join(sorted(unlisted))} share a module-scoped fixture: add them to SHARED_FILES in "
            "tests/conftest.py, so that each runs on one worker"
        )

    def rank(item: pytest.Item) -> tuple[int, int]:
        if item.get_closest_marker("exclusive"):
            return 3, 0  # last: by then the other worker is mostly on fast tests, which take no lock
        if item.get_closest_marker("engine") is None:
            return 2, 0
        path = item.nodeid.split("::")[0]
        return (0, SHARED_FILES.index(path)) if path in SHARED_FILES else (1, 0)

    items.sort(key=rank)  # stable: each file keeps its order


@pytest.hookimpl(tryfirst=True, optionalhook=True)  # a hook of pytest-xdist, when installed
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """For ``--dist loadgroup``: one work unit per file of SHARED_FILES, one per test otherwise, handed
    out in the order the workers collected them (run with ``--no-loadscope-reorder``)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling  # type: ignore[import-untyped]

    class SharedFiles(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return path if path in SHARED_FILES else nodeid

    return SharedFiles(config, log)


_SWARM_HELD: dict[str, Any] = {}
"""The file whose swarm this worker holds the only lock for, and its open lock file."""


def _uses_swarm(item: pytest.Item) -> bool:
    return "swarm" in getattr(item, "fixturenames", ())


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, object, object]:
    """Across xdist workers, engine tests hold a shared lock and ``exclusive`` ones the only lock,
    from the setup of their fixtures to the teardown (a module fixture's too, on the last test).
    A file that makes a swarm holds the only lock from its first test's setup to its last test's
    teardown (the swarm's ``leave``): beside a swarm, a Compose stack's ``bus-ports`` started on
    the other worker failed every lookup of ``bus`` (docs/testing.md), so Swarm runs alone."""
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")  # one random id for all the workers of one run
    if not run or item.get_closest_marker("engine") is None:
        return (yield)
    path = Path(tempfile.gettempdir()) / f"nachos-deploy-tests-{run}.lock"
    file = item.nodeid.split("::")[0]
    if _uses_swarm(item) and file not in _SWARM_HELD:
        handle = path.open("a")
        fcntl.flock(handle, fcntl.LOCK_EX)
        _SWARM_HELD[file] = handle
    if file in _SWARM_HELD:  # the file's other tests run under it too (a second lock would wait on it)
        try:
            return (yield)
        finally:
            if nextitem is None or nextitem.nodeid.split("::")[0] != file:
                held = _SWARM_HELD.pop(file)
                fcntl.flock(held, fcntl.LOCK_UN)
                held.close()
    with path.open("a") as handle:
        exclusive = item.get_closest_marker("exclusive") is not None
        fcntl.flock(handle, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            return (yield)
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def without_networks_wait(text: str) -> list[str]:
    """The non-blank lines of a command's stderr but the notice that it waited for another
    nachos-deploy placing its networks (io/locks.networks_lock): any `up` on this machine can hold
    that lock for a moment (another test's on another worker, another CI job on a shared engine),
    so a test that reads stderr line by line leaves it aside."""
    return [
        line
        for line in text.splitlines()
        if line.strip()
        and not (line.startswith("Waiting for another nachos-deploy (") and "placing its networks" in line)
    ]


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
