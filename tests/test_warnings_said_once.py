"""The configuration's warnings are said where the configuration is judged or applied (render,
validate, up, doctor), once, and never by the commands that only look at or talk to a running stack
(issue 18: on Swarm every `request` printed a 300-character warning about ports)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from nachos_deploy.interfaces.cli import app

runner = CliRunner()
PORTS_WARNING = "Swarm publishes the bus's ports on every interface"


def deploy_file(folder: Path) -> Path:
    """A Swarm stack whose telegram channel lacks its token: `up` stops before touching the engine."""
    path = folder / "nachos-deploy.yaml"
    document = {
        "project": f"h18w-{uuid.uuid4().hex[:8]}",
        "target": "swarm",
        "components": {"telegram": {"enabled": True}},
    }
    path.write_text(yaml.safe_dump(document))
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def file(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    return deploy_file(workdir)


@pytest.mark.parametrize("command", [("render",), ("validate",), ("up",)])
def test_commands_that_judge_the_configuration_say_it_once(file: Path, command: tuple[str, ...]) -> None:
    code, _, err = run(*command, "-c", str(file))
    said = " ".join(err.split())
    assert said.count(PORTS_WARNING) == 1, err
    if command == ("up",):
        assert code == 3 and "TELEGRAM_BOT_TOKEN" in said  # refused before anything was deployed


def test_doctor_reports_it_as_a_config_warning(file: Path, engine: str) -> None:
    _, out, err = run("doctor", "-c", str(file), "--json")
    warned = [c for c in json.loads(out)["checks"] if c["level"] == "warn" and PORTS_WARNING in c["detail"]]
    assert [c["name"] for c in warned] == ["config"], out
    assert PORTS_WARNING not in err


@pytest.mark.parametrize(
    "command",
    [("status",), ("request", "nachos.health.ping.gateway"), ("env",), ("logs",), ("down",), ("bench",)],
)
def test_commands_on_a_running_stack_do_not_repeat_it(
    file: Path, engine: str, command: tuple[str, ...]
) -> None:
    # No swarm runs this project (or none at all): each fails on the engine, saying only that.
    _, out, err = run(*command, "-c", str(file))
    assert PORTS_WARNING not in out + err
    assert "warning" not in err.lower(), err
