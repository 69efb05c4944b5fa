"""pytest fixtures for test suites that need a Nachos bus or a whole stack on the local engine.

Registered through the ``pytest11`` entry point, so installing nachos-deploy is enough:

- ``nachos_bus`` (session): a bus alone, on ports the engine picks;
- ``nachos_stack`` (session): the stack of the deploy file named by the ini option
  ``nachos_deploy_config`` (relative to the rootdir), or of whatever a ``nachos_deploy_config``
  fixture of your own returns (a path or a mapping).

Each yields a :class:`nachos_deploy.interfaces.api.RunningStack` (``nats_url``, ``monitor_url``, ``env``,
``logs()``; with TLS on the bus (bus.tls) ``nats_url`` is ``tls://`` and ``ca_file`` the CA to trust,
also ``NATS_CA_FILE`` in ``env``). Project names are unique per session and per xdist worker. Stacks
are removed with their volumes at the end of the session, also when tests fail or the run is
interrupted, unless ``--nachos-keep`` is given (the command that removes them is printed). A failed
test that used one gets the stack's recent logs in its report. Without a Docker engine the fixtures
skip with the reason; under ``CI=true`` they fail instead, so a pipeline cannot pass by skipping.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from nachos_deploy.core.errors import DeployError, EnvironmentProblem
from nachos_deploy.interfaces import api

FIXTURES = ("nachos_bus", "nachos_stack")
INI_CONFIG = "nachos_deploy_config"
INI_TIMEOUT = "nachos_deploy_timeout"
LOG_LINES = 40
_running: dict[str, api.RunningStack] = {}  # project -> stack still to remove


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("nachos-deploy")
    group.addoption(
        "--nachos-keep",
        action="store_true",
        help="Keep the stacks of the nachos_bus/nachos_stack fixtures after the run (for debugging).",
    )
    parser.addini(INI_CONFIG, "Deploy file for the nachos_stack fixture (relative to the rootdir).")
    parser.addini(INI_TIMEOUT, "Seconds each fixture's stack may take to start (default 120).")


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _require_engine() -> None:
    try:
        api.require_engine()
    except EnvironmentProblem as exc:
        reason = f"nachos-deploy fixtures need a Docker engine: {exc.message}"
        if _in_ci():
            pytest.fail(f"{reason} (CI=true: failing instead of skipping)", pytrace=False)
        pytest.skip(reason)


def _project(kind: str) -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return f"pytest-{kind}-{worker}-{uuid.uuid4().hex[:8]}".lower()


def _start(
    config: pytest.Config, folder: Path, source: Path | Mapping[str, Any], kind: str, only: list[str]
) -> Iterator[api.RunningStack]:
    _require_engine()
    if isinstance(source, Mapping):  # written down, so that a kept stack has a file to name
        path = folder / "nachos-deploy.yaml"
        path.write_text(yaml.safe_dump(dict(source)), encoding="utf-8")
        source = path
    timeout = float(config.getini(INI_TIMEOUT) or 120)
    name = _project(kind)
    try:
        stack = api.start(source, project=name, output=folder / "rendered", only=only, timeout=timeout)
    except DeployError as exc:
        _remove(api.load(source, project=name, output=folder / "rendered"), keep=False)
        pytest.fail(f"nachos-deploy could not start {kind}: {exc.message}\n{exc.details}", pytrace=False)
    _running[stack.project] = stack
    try:
        yield stack
    finally:
        if _running.pop(stack.project, None) is not None:
            _finish(config, stack, source)


def _finish(config: pytest.Config, stack: api.RunningStack, source: Path) -> None:
    if config.getoption("--nachos-keep"):
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        line = (
            f"nachos-deploy: kept project {stack.project}; remove it with: nachos-deploy down "
            f"-c {shlex.quote(str(source))} -p {stack.project} -o {shlex.quote(str(stack.stack.output_dir))} "
            "--volumes --yes"
        )
        if reporter is not None:
            reporter.write_line(line)
        return
    _remove(stack.stack, keep=False)


def _remove(stack: api.Stack, *, keep: bool) -> None:
    with contextlib.suppress(DeployError):  # best effort: the engine may be gone
        api.down(stack, volumes=not keep)


@pytest.fixture(scope="session")
def nachos_bus(
    pytestconfig: pytest.Config, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[api.RunningStack]:
    """A bus alone (no components) on engine-picked ports, for the whole session; its HTTP monitoring
    is published on 127.0.0.1 too, for the tests' own use (``monitor_url``)."""
    document = {
        "bus": {"client_port": 0, "monitor_port": 0, "publish_monitor": True},
        "components": {"gateway": {"enabled": False}, "llm-proxy": {"enabled": False}},
    }
    yield from _start(pytestconfig, tmp_path_factory.mktemp("nachos-bus"), document, "bus", ["bus"])


@pytest.fixture(scope="session")
def nachos_deploy_config(pytestconfig: pytest.Config) -> Path | Mapping[str, Any]:
    """The deploy file of ``nachos_stack``: the ini option, or override this fixture."""
    value = pytestconfig.getini(INI_CONFIG)
    if not value:
        pytest.fail(
            f"nachos_stack needs a deploy file: set `{INI_CONFIG} = path/to/nachos-deploy.yaml` in the "
            "pytest ini file, or define a `nachos_deploy_config` fixture returning a path or a mapping.",
            pytrace=False,
        )
    return pytestconfig.rootpath / str(value)


@pytest.fixture(scope="session")
def nachos_stack(
    pytestconfig: pytest.Config,
    tmp_path_factory: pytest.TempPathFactory,
    nachos_deploy_config: Path | Mapping[str, Any],
) -> Iterator[api.RunningStack]:
    """The whole stack of ``nachos_deploy_config``, for the whole session."""
    folder = tmp_path_factory.mktemp("nachos-stack")
    yield from _start(pytestconfig, folder, nachos_deploy_config, "stack", [])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that used a stack gets its recent logs in the report."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if not report.failed:
        return
    funcargs: dict[str, Any] = getattr(item, "funcargs", {})
    for name in FIXTURES:
        stack = funcargs.get(name)
        if isinstance(stack, api.RunningStack):
            try:
                text = stack.logs(tail=LOG_LINES)
            except DeployError as exc:
                text = f"(no logs: {exc.message})"
            report.sections.append((f"nachos-deploy logs ({name}, project {stack.project})", text))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """A safety net: remove what an interrupted session's fixtures did not get to remove."""
    if session.config.getoption("--nachos-keep", default=False):
        return
    while _running:
        _, stack = _running.popitem()
        _remove(stack.stack, keep=False)
