"""The platform's gateway runs subagents in Docker when nachos.toml asks for the full sandbox; it would
need the Docker socket, which nachos-deploy never gives a component: `validate` and `doctor` say so,
naming the key, what will fail and why."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from nachos_deploy.core.platform_config import subagents_need_docker
from nachos_deploy.interfaces.cli import app

runner = CliRunner()
PLATFORM = """[nachos]
name = "n"
version = "1"
[llm]
provider = "anthropic"
model = "m"
[security]
mode = "standard"
"""
FULL = '[runtime.subagents]\nenabled = true\n[runtime.subagents.sandbox]\nmode = "full"\n'


@pytest.mark.parametrize(
    ("document", "needs"),
    [
        ({"runtime": {"subagents": {"enabled": True, "sandbox": {"mode": "full"}}}}, True),
        ({"runtime": {"subagents": {"enabled": False, "sandbox": {"mode": "full"}}}}, False),
        ({"runtime": {"subagents": {"enabled": True, "sandbox": {"mode": "off"}}}}, False),
        ({"runtime": {"subagents": {"enabled": True}}}, False),
        ({"runtime": {"subagents": {"enabled": "true", "sandbox": {"mode": "full"}}}}, False),
        ({"runtime": {"subagents": "yes"}}, False),
        ({"runtime": []}, False),
        ({}, False),
    ],
)
def test_only_enabled_subagents_in_the_full_sandbox_need_docker(
    document: dict[str, Any], needs: bool
) -> None:
    assert subagents_need_docker(document) is needs


def write(folder: Path, platform: str, *, gateway: bool = True) -> Path:
    (folder / "nachos.toml").write_text(platform)
    deploy = folder / "nachos-deploy.yaml"
    deploy.write_text(
        "project: h18-subagents\n" + ("" if gateway else "components: {gateway: {enabled: false}}\n")
    )
    return deploy


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_validate_warns_naming_the_key_what_fails_and_why(workdir: Path) -> None:
    deploy = write(workdir, PLATFORM + FULL)
    code, out, err = run("validate", "-c", str(deploy))
    said = " ".join(err.split())
    assert code == 0, out + err
    assert f"warning: {workdir / 'nachos.toml'}: runtime.subagents.enabled = true with" in said
    assert 'runtime.subagents.sandbox.mode = "full"' in said
    assert "every subagent run will fail" in said and "Docker socket" in said
    assert said.count("runtime.subagents") == 4  # the two keys, then the two fixes


@pytest.mark.parametrize(
    ("platform", "gateway"),
    [(PLATFORM, True), (PLATFORM + FULL.replace('"full"', '"none"'), True), (PLATFORM + FULL, False)],
)
def test_no_warning_without_the_full_sandbox_or_without_a_gateway(
    workdir: Path, platform: str, gateway: bool
) -> None:
    code, out, err = run("validate", "-c", str(write(workdir, platform, gateway=gateway)))
    assert code == 0, out + err
    assert "subagents" not in err


def test_doctor_warns_too(workdir: Path, engine: str) -> None:
    deploy = write(workdir, PLATFORM + FULL)
    _, out, _ = run("doctor", "-c", str(deploy), "--json")
    checks = json.loads(out)["checks"]
    warned = [c for c in checks if "runtime.subagents.sandbox.mode" in c["detail"]]
    assert [(c["name"], c["level"]) for c in warned] == [("config", "warn")], checks
