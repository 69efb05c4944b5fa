"""What a CI pipeline uses, on the real engine: outputs it can read, bus-only stacks side by side, the
Python API's teardown, and the pytest fixtures (run in a pytester subprocess, as a user's suite)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import yaml

from nachos_deploy.bus import natsclient
from nachos_deploy.interfaces import api
from nachos_deploy.io.files import read_env_file
from tests.commands import compose_down
from tests.test_lifecycle import PROBE, containers, volumes

BUS_ONLY = {
    # publish_monitor: the outputs carry a monitoring URL only when the port is published
    "bus": {"client_port": 0, "monitor_port": 0, "publish_monitor": True, "healthcheck_interval": "500ms"},
    "ingress": {"enabled": False},  # not this test's subject: no ingress on ports 80/443 (docs/ingress.md)
    "components": {"gateway": {"enabled": False}, "llm-proxy": {"enabled": False}},
}


def documented_fields() -> dict[str, set[str]]:
    """The table of the JSON documents' fields in docs/json-output.md, by document."""
    fields: dict[str, set[str]] = {}
    text = (Path(__file__).resolve().parent.parent / "docs" / "json-output.md").read_text()
    for match in re.finditer(r"^\| (up|status|service) \| `(\w+)` \|", text, re.MULTILINE):
        fields.setdefault(match[1], set()).add(match[2])
    return fields


def write_config(folder: Path, project: str, document: dict[str, Any] | None = None) -> Path:
    path = folder / "nachos-deploy.yaml"
    path.write_text(yaml.safe_dump({"project": project, **(document or BUS_ONLY)}))
    return path


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """The installed command in a child process, as a pipeline step runs it: with its output
    buffered (these machines set PYTHONUNBUFFERED; a runner does not), so that output a command
    did not flush before it ended would be missing here too."""
    inherited = {name: value for name, value in os.environ.items() if name != "PYTHONUNBUFFERED"}
    return subprocess.run(
        [sys.executable, "-m", "nachos_deploy", *args],
        capture_output=True,
        text=True,
        timeout=180,
        env={**inherited, **(env or {})},
    )


def remove(project: str) -> None:
    compose_down(project)


def networks(project: str) -> list[str]:
    out = subprocess.run(
        ["docker", "network", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


def round_trip(nats_url: str) -> bool:
    """Request/reply with ourselves through the bus, logged in with the URL's credentials."""
    return natsclient.round_trip(nats_url, 2.0, 2.0) > 0


def test_three_bus_only_stacks_at_once_each_get_their_own_ports(engine: str, tmp_path: Path) -> None:
    projects = [f"ndt-ci-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    files = []
    with_a_component = {
        **BUS_ONLY,
        "components": {**BUS_ONLY["components"], "webchat": {"image": PROBE, "enabled": True}},
    }
    for project in projects:
        (tmp_path / project).mkdir()
        files.append(write_config(tmp_path / project, project, with_a_component))
    try:
        with ThreadPoolExecutor(3) as pool:
            runs = list(pool.map(lambda f: cli("up", "-c", str(f), "--only", "bus", "--json"), files))
        for run in runs:
            assert run.returncode == 0, run.stdout + run.stderr
        results = [json.loads(run.stdout) for run in runs]
        urls = [r["nats_url"] for r in results] + [r["monitor_url"] for r in results]
        ports = {url.rsplit(":", 1)[1] for url in urls}
        assert len(ports) == 6, urls
        assert all(round_trip(r["nats_url"]) for r in results)
        documented = documented_fields()
        assert set(results[0]) == documented["up"]
        # status judges what up --only started: the bus alone is a healthy stack.
        for file in files:
            status = cli("status", "-c", str(file), "--json")
            assert status.returncode == 0, status.stdout + status.stderr
            document = json.loads(status.stdout)
            assert [s["name"] for s in document["services"]] == ["bus", "bus-ports"]
            assert set(document) == documented["status"]
            for service in [*document["services"], *results[0]["services"]]:
                assert set(service) <= documented["service"]
                assert documented["service"] - set(service) <= {"tool_id", "restarted_by_up"}
    finally:
        for file, project in zip(files, projects, strict=True):
            cli("down", "-c", str(file), "--volumes", "--yes")
            remove(project)
    for project in projects:
        assert containers(project) == {} and volumes(project) == [] and networks(project) == []


def test_outputs_for_the_next_step_are_parsed_back_and_used(engine: str, tmp_path: Path) -> None:
    project = f"ndt-ci-{uuid.uuid4().hex[:8]}"
    file = write_config(tmp_path, project)
    github_output, github_env = tmp_path / "gh-output", tmp_path / "gh-env"
    github_output.write_text("earlier=kept\n")
    env_file = tmp_path / "nats.env"
    try:
        run = cli(
            "up",
            "-c",
            str(file),
            "--env-file",
            str(env_file),
            "--github",
            env={"GITHUB_OUTPUT": str(github_output), "GITHUB_ENV": str(github_env)},
        )
        assert run.returncode == 0, run.stdout + run.stderr
        values = read_env_file(env_file)
        assert set(values) == {"NATS_URL", "NATS_MONITOR_URL", "NACHOS_PROJECT"}
        assert values["NACHOS_PROJECT"] == project
        assert env_file.stat().st_mode & 0o777 == 0o600
        assert round_trip(values["NATS_URL"])
        password = values["NATS_URL"].split(":")[2].split("@")[0]
        # The log masks the password and never shows it otherwise.
        assert f"::add-mask::{password}" in run.stdout
        assert password not in run.stdout.replace(f"::add-mask::{password}", "") + run.stderr
        outputs = read_env_file(github_output)
        assert outputs["earlier"] == "kept"  # appended, not replaced
        assert outputs["nats_url"] == values["NATS_URL"] and outputs["project"] == project
        assert outputs["monitor_url"] == values["NATS_MONITOR_URL"]
        assert read_env_file(github_env) == values

        for fmt in ("dotenv", "json", "shell"):
            printed = cli("env", "-c", str(file), "--format", fmt)
            assert printed.returncode == 0, printed.stderr
            if fmt == "json":
                assert json.loads(printed.stdout) == values
            elif fmt == "shell":  # eval'd by a shell, the variables are exactly the values
                shown = subprocess.run(
                    ["sh", "-c", printed.stdout + 'printf "%s\\n" "$NATS_URL" "$NACHOS_PROJECT"'],
                    capture_output=True,
                    text=True,
                    check=True,
                ).stdout.split()
                assert shown == [values["NATS_URL"], project]
            else:
                assert dict(line.split("=", 1) for line in printed.stdout.split()) == values
    finally:
        cli("down", "-c", str(file), "--volumes", "--yes")
        remove(project)
    # The bus is gone: env says so, exit 1.
    gone = cli("env", "-c", str(file))
    assert gone.returncode == 1 and "is not running" in gone.stderr


def test_github_outputs_outside_actions_are_refused_before_anything_starts(
    engine: str, tmp_path: Path
) -> None:
    project = f"ndt-ci-{uuid.uuid4().hex[:8]}"
    file = write_config(tmp_path, project)
    env = {name: "" for name in ("GITHUB_OUTPUT", "GITHUB_ENV")}
    run = cli("up", "-c", str(file), "--github", env=env)
    assert run.returncode == 3 and "GITHUB_OUTPUT" in run.stderr
    assert containers(project) == {}


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt], ids=["exception", "ctrl-c"])
def test_the_api_context_manager_removes_the_stack_after_an_exception(
    engine: str, error: type[BaseException]
) -> None:
    project = f"ndt-api-{uuid.uuid4().hex[:8]}"
    running = api.running(BUS_ONLY, project=project, only=["bus"], timeout=60)
    with pytest.raises(error, match="inside the block"), running as bus:
        assert round_trip(bus.nats_url)
        assert bus.env["NACHOS_PROJECT"] == project
        assert set(containers(project)) == {"bus", "bus-ports"}
        raise error("inside the block")
    assert containers(project) == {} and volumes(project) == [] and networks(project) == []


def test_the_api_context_manager_removes_the_stack_after_a_bus_failure(engine: str, tmp_path: Path) -> None:
    project = f"ndt-api-{uuid.uuid4().hex[:8]}"
    broken = {**BUS_ONLY, "bus": {**BUS_ONLY["bus"], "image": PROBE}}  # not a nats-server: exits
    with pytest.raises(api.BusFailure) as failure, api.running(broken, project=project, timeout=30):
        pytest.fail("the block must not run when the bus fails")
    assert failure.value.exit_code == 5 and "did not become healthy" in failure.value.message
    assert "nachos_probe" in failure.value.details  # the bus's own log lines
    assert containers(project) == {} and volumes(project) == [] and networks(project) == []


def test_the_api_raises_typed_errors_for_bad_configuration(tmp_path: Path) -> None:
    with pytest.raises(api.ConfigError) as failure:
        api.start({"bus": {"max_payload": "lots"}})
    assert failure.value.exit_code == 3 and "bus.max_payload" in failure.value.message


FIXTURE_USER = """
import json, urllib.request
from nachos_deploy.bus.natsclient import round_trip


def test_the_bus_answers(nachos_bus):
    open("project.txt", "w").write(nachos_bus.project)
    with urllib.request.urlopen(nachos_bus.monitor_url + "/healthz") as answer:
        assert json.load(answer)["status"] == "ok"
    assert round_trip(nachos_bus.nats_url, 2.0, 2.0) > 0


def test_a_failure_gets_the_logs(nachos_bus):
    assert False, "failing on purpose"
"""


def test_the_pytest_fixture_serves_a_bus_and_leaves_nothing_behind(
    engine: str, pytester: pytest.Pytester
) -> None:
    pytester.makepyfile(test_user=FIXTURE_USER)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", timeout=300)
    result.assert_outcomes(passed=1, failed=1)
    project = (pytester.path / "project.txt").read_text()
    assert project.startswith("pytest-bus-")
    text = result.stdout.str()
    # The failing test's report carries the stack's recent logs; the passing one's does not need it.
    assert f"nachos-deploy logs (nachos_bus, project {project})" in text
    assert "Server is ready" in text
    assert containers(project) == {} and volumes(project) == [] and networks(project) == []


def test_the_pytest_fixture_skips_without_an_engine_and_fails_under_ci(
    engine: str, pytester: pytest.Pytester
) -> None:
    pytester.makepyfile(test_user="def test_needs_it(nachos_bus):\n    pass\n")
    nowhere = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in {**nowhere, "CI": "false"}.items():
            patch.setenv(name, value)
        skipped = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rs", timeout=120)
        patch.setenv("CI", "true")
        failed = pytester.runpytest_subprocess("-p", "no:cacheprovider", timeout=120)
    skipped.assert_outcomes(skipped=1)
    assert "need a Docker engine" in skipped.stdout.str()
    failed.assert_outcomes(errors=1)
    assert "failing instead of skipping" in failed.stdout.str()


LABEL_AND_LOGGING = '{{index .Config.Labels "org.example.team"}} {{.HostConfig.LogConfig.Type}}'


def test_the_override_file_is_applied_by_every_command(engine: str, tmp_path: Path) -> None:
    project = f"ndt-ov-{uuid.uuid4().hex[:8]}"
    file = write_config(tmp_path, project)
    override = tmp_path / "docker-compose.override.yml"
    override.write_text("services:\n  bus:\n    mem_limit: lots\n")  # Compose refuses this one
    run = cli("validate", "-c", str(file))
    assert run.returncode == 3 and "Docker Compose rejects" in run.stderr
    override.write_text(
        "services:\n  bus:\n    labels: {org.example.team: ops}\n    logging: {driver: local}\n"
    )
    try:
        run = cli("up", "-c", str(file), "--json")
        assert run.returncode == 0, run.stdout + run.stderr
        bus = containers(project)["bus"]
        inspect = subprocess.run(
            [
                "docker",
                "inspect",
                "-f",
                '{{index .Config.Labels "org.example.team"}} {{.HostConfig.LogConfig.Type}}',
                bus,
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert inspect == ["ops", "local"]
        assert cli("status", "-c", str(file)).returncode == 0
        # A second up sees the same files (the override included): nothing is recreated.
        assert cli("up", "-c", str(file)).returncode == 0
        assert containers(project)["bus"] == bus
    finally:
        cli("down", "-c", str(file), "--volumes", "--yes")
        remove(project)
    assert containers(project) == {}


ROOT = Path(__file__).resolve().parent.parent


def test_the_github_action_runs_up_with_its_inputs_and_exports_what_it_declares(
    engine: str, tmp_path: Path
) -> None:
    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    up_step = next(step for step in action["runs"]["steps"] if step.get("id") == "up")
    assert set(up_step["env"]) == {f"INPUT_{name.upper()}" for name in action["inputs"]}
    declared = {name: spec["value"] for name, spec in action["outputs"].items()}
    assert declared == {name: f"${{{{ steps.up.outputs.{name} }}}}" for name in declared}

    project = f"ndt-gha-{uuid.uuid4().hex[:8]}"
    file = write_config(tmp_path, project)
    github_output, github_env = tmp_path / "output", tmp_path / "env"
    env = {
        **os.environ,
        "INPUT_CONFIG": str(file),
        "INPUT_ONLY": "bus",
        "INPUT_PROJECT": "",
        "INPUT_TIMEOUT": "60",
        "GITHUB_OUTPUT": str(github_output),
        "GITHUB_ENV": str(github_env),
        "NACHOS_DEPLOY": f"{sys.executable} -m nachos_deploy",
    }
    try:
        run = subprocess.run(
            ["bash", str(ROOT / "scripts" / "github-action.sh"), "up"],
            capture_output=True,
            text=True,
            timeout=180,
            env=env,
        )
        assert run.returncode == 0, run.stdout + run.stderr
        outputs = read_env_file(github_output)
        assert set(outputs) == set(declared)  # every declared output is written, nothing else
        assert outputs["project"] == project and round_trip(outputs["nats_url"])
        assert read_env_file(github_env)["NATS_URL"] == outputs["nats_url"]
        assert cli("status", "-c", str(file)).returncode == 0  # only the bus was asked for
    finally:
        down = cli("down", "-c", str(file), "--volumes", "--yes")  # docs/ci.md's `if: always()` step
        remove(project)
    assert down.returncode == 0 and containers(project) == {}


def test_two_ups_of_one_new_project_at_once_are_serialized(engine: str, tmp_path: Path) -> None:
    project = f"ndt-lock-{uuid.uuid4().hex[:8]}"
    file = write_config(tmp_path, project)
    command = [sys.executable, "-m", "nachos_deploy", "up", "-c", str(file), "--only", "bus"]
    try:
        runs = [
            subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in "ab"
        ]
        results = [(run.wait(timeout=180), *run.communicate()) for run in runs]
        for code, out, err in results:
            assert code == 0, out + err
        # The project's lock: another up on this machine may also hold the networks' lock a moment.
        waited = [err for _, _, err in results if f"working on project {project} to finish" in err]
        assert len(waited) == 1, [err for _, _, err in results]
        # One set of networks, not two that make every later command ambiguous.
        names = subprocess.run(
            [
                "docker",
                "network",
                "ls",
                "--format",
                "{{.Name}}",
                "--filter",
                f"label=com.docker.compose.project={project}",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
        assert sorted(names) == sorted(set(names)) and len(names) == 3, names
        assert cli("status", "-c", str(file)).returncode == 0
    finally:
        cli("down", "-c", str(file), "--volumes", "--yes")
        remove(project)
