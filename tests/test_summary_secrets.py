"""What `up` prints for people never shows the operator's password: the summary names the NATS URL
with ``***`` in its place. Machine outputs carry it on purpose (`--json`'s ``nats_url``, --env-file,
`env`), and `--github` masks it in the job's log. The stack's result is made here; the printing is
the CLI's own, through the real `up` command."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from nachos_deploy.core.results import BusReport, Endpoints, ServiceReport, StatusResult, UpResult
from nachos_deploy.interfaces import api, report
from nachos_deploy.interfaces.cli import app

PASSWORD = "pW-8f3kZq1xYc0Lm9s7T"  # made up: the output must never show it
URL = f"nats://nachos-deploy:{PASSWORD}@127.0.0.1:41222"
SHOWN = "nats://nachos-deploy:***@127.0.0.1:41222"
MONITOR = "http://127.0.0.1:48222"


def result(project: str) -> UpResult:
    nodes = ((f"{project}-bus-1", URL, MONITOR), (f"{project}-bus-2", URL.replace("41222", "41223"), MONITOR))
    return UpResult(
        project=project,
        endpoints=Endpoints(URL, MONITOR, nodes),
        services=[
            ServiceReport("bus", "running", "healthy", None, None),
            ServiceReport("gateway", "running", "healthy", "gateway", True),
        ],
        phases={"prepare": 0.1, "bus": 0.5, "components": 0.7, "total": 1.3},
        bus=BusReport(True, None, "2.10.0", True, 10 * 1024 * 1024, 1, 0.42),
        warnings=[f"a warning that names {SHOWN}"],
    )


@pytest.fixture
def started(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`up` of the default configuration, whose start returns the result above."""
    monkeypatch.setattr(api, "up", lambda stack, **_: result(stack.project))


def test_the_summary_shows_the_url_without_the_password(started: None) -> None:
    done = CliRunner().invoke(app, ["up", "-p", "secrets"])
    assert done.exit_code == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    assert f"NATS:       {SHOWN}" in done.stdout and "Project secrets is up." in done.stdout


def test_json_carries_the_password_in_nats_url_only(started: None) -> None:
    # Documented: `up --json` gives the operator's URL usable as it is; nowhere else in the document.
    done = CliRunner().invoke(app, ["up", "-p", "secrets", "--json"])
    assert done.exit_code == 0, done.stderr
    document = json.loads(done.stdout)
    assert document["nats_url"] == URL
    rest = {key: value for key, value in document.items() if key not in ("nats_url", "nodes")}
    assert PASSWORD not in json.dumps(rest) and PASSWORD not in done.stderr


def test_github_masks_the_password_on_stderr_with_json(
    started: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_OUTPUT", str(tmp_path / "output"))
    monkeypatch.delenv("GITHUB_ENV", raising=False)
    done = CliRunner().invoke(app, ["up", "-p", "secrets", "--json", "--github"])
    assert done.exit_code == 0, done.stderr
    assert f"::add-mask::{PASSWORD}" in done.stderr
    json.loads(done.stdout)  # still one document


def test_status_shows_the_url_without_the_password() -> None:
    console = Console(file=io.StringIO(), width=200)
    report.print_status(console, StatusResult("secrets", Endpoints(URL, MONITOR), [], None, None, []))
    shown = console.file.getvalue()  # type: ignore[attr-defined]
    assert PASSWORD not in shown and SHOWN in shown
