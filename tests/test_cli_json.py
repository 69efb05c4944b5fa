"""`up --json` and `status --json` print exactly one JSON document on stdout for every exit code, so
that a script can always parse stdout and read ``ok`` first: the result on success (and for status'
exit 1), ``{"ok": false, "exit_code", "error"}`` on any failure. The engine-free codes (2, 3, 4) are
fast tests; 5, 6 and 7 need the engine to get that far (an output folder that cannot be
written is exit 3 on `up`: Compose's check of the files meets it first, before anything is written)."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from nachos_deploy.interfaces.cli import app
from tests.commands import docker
from tests.test_ci import remove
from tests.test_lifecycle import PROBE, probe

runner = CliRunner()
JSON_COMMANDS = ("up", "status")


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def failure(out: str, code: int) -> dict[str, Any]:
    """stdout as one JSON failure document with this exit code (json.loads refuses a second one)."""
    document: dict[str, Any] = json.loads(out)
    assert document["ok"] is False and document["exit_code"] == code, document
    extra = {"failed"} if code == 6 else set()  # exit 6 names each component and why (json-output.md)
    assert set(document) == {"ok", "exit_code", "error", *extra} and document["error"]
    return document


@pytest.mark.parametrize("command", JSON_COMMANDS)
def test_a_bad_configuration_is_one_document_exit_3(workdir: Path, command: str) -> None:
    (workdir / "nachos-deploy.yaml").write_text("bus:\n  max_paylod: 1MB\n")
    code, out, err = run(command, "--json")
    assert code == 3
    document = failure(out, 3)
    assert "bus.max_paylod is not a known key" in " ".join(document["error"].split())
    assert "bus.max_paylod is not a known key" in " ".join(err.split())  # people still read stderr
    assert not (workdir / ".nachos").exists()


def test_github_outside_actions_is_one_document_exit_3(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("GITHUB_OUTPUT", "GITHUB_ENV"):
        monkeypatch.delenv(name, raising=False)
    code, out, _ = run("up", "--json", "--github")
    assert code == 3 and "GITHUB_OUTPUT" in failure(out, 3)["error"]


@pytest.mark.parametrize("command", JSON_COMMANDS)
def test_no_engine_is_one_document_exit_4(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    monkeypatch.setenv("DOCKER_HOST", f"unix://{workdir}/no-docker.sock")
    code, out, err = run(command, "--json")
    assert code == 4, err
    assert "Cannot connect to the Docker daemon" in failure(out, 4)["error"]
    assert "Traceback" not in out + err


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("up", "--json", "--timeout", "soon"), "Invalid value for '--timeout'"),
        (("status", "--json", "--bogus"), "No such option: --bogus"),
    ],
)
def test_a_bad_command_line_is_one_document_exit_2(
    workdir: Path, args: tuple[str, ...], expected: str
) -> None:
    code, out, err = run(*args)
    assert code == 2
    assert expected in failure(out, 2)["error"]
    assert expected in err and "Usage:" in err  # Click's own report is unchanged


def test_without_json_a_failure_prints_nothing_on_stdout(workdir: Path) -> None:
    (workdir / "nachos-deploy.yaml").write_text("bus: [\n")
    for args in (("up",), ("status",), ("up", "--timeout", "soon")):
        code, out, _ = run(*args)
        assert code in (2, 3) and out == "", args


# --- on the engine: the codes only a started run can reach ----------------------------------------


@pytest.fixture
def deploy_file(engine: str, tmp_path: Path) -> Iterator[Path]:
    project = f"ndt-json-{uuid.uuid4().hex[:8]}"
    path = tmp_path / "nachos-deploy.yaml"
    path.write_text(yaml.safe_dump({"project": project}))
    try:
        yield path
    finally:
        remove(project)


def write(path: Path, components: dict[str, Any], **bus: Any) -> None:
    project = yaml.safe_load(path.read_text())["project"]
    document = {
        "project": project,
        "bus": {"client_port": 0, "monitor_port": 0, "healthcheck_interval": "500ms", **bus},
        "components": {"gateway": {"enabled": False}, "llm-proxy": {"enabled": False}, **components},
    }
    path.write_text(yaml.safe_dump(document))


def test_an_env_file_that_cannot_be_written_is_one_document_exit_7(deploy_file: Path) -> None:
    # The stack started, then --env-file failed: the failure document, not the result and then it.
    write(deploy_file, {})
    env_file = deploy_file.parent / "missing" / "nats.env"
    code, out, err = run("up", "-c", str(deploy_file), "--json", "--only", "bus", "--env-file", str(env_file))
    assert code == 7, out + err
    assert "Cannot write --env-file" in failure(out, 7)["error"]


def test_a_host_port_another_program_holds_is_one_document_exit_4_with_nothing_written(
    deploy_file: Path,
) -> None:
    # Refused before anything is written or started: else Compose fails publishing it, exit 5,
    # with the bus already running and the files written.
    with socket.create_server(("127.0.0.1", 0)) as holder:
        port = holder.getsockname()[1]
        write(deploy_file, {}, client_port=port)
        code, out, err = run("up", "-c", str(deploy_file), "--json", "--only", "bus")
    assert code == 4, out + err
    message = " ".join(failure(out, 4)["error"].split())
    assert f"127.0.0.1:{port} (bus.client_port, for the bus). Nothing was written or started." in message
    project = yaml.safe_load(deploy_file.read_text())["project"]
    assert not (deploy_file.parent / ".nachos").exists()
    assert docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={project}") == ""


def test_a_bus_that_cannot_start_is_one_document_exit_5(deploy_file: Path) -> None:
    write(deploy_file, {}, image=PROBE)  # no nats-server: it exits at once on the bus's flags
    code, out, err = run("up", "-c", str(deploy_file), "--json", "--timeout", "30")
    assert code == 5, out + err
    assert "The bus did not become healthy" in " ".join(failure(out, 5)["error"].split())


def test_a_failing_component_is_one_document_exit_6(deploy_file: Path) -> None:
    write(deploy_file, {"crasher": probe(environment={"PROBE_FAIL_AT_START": 3})}, auth=False)
    code, out, err = run("up", "-c", str(deploy_file), "--json", "--timeout", "60")
    assert code == 6, out + err
    assert "crasher did not come up" in " ".join(failure(out, 6)["error"].split())
    code, out, _ = run("status", "-c", str(deploy_file), "--json")  # exit 1: the status document itself
    document = json.loads(out)
    assert code == 1 and document["ok"] is False and document["problems"]
