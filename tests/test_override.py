"""The Compose override file beside the deploy file: refused when it is not an override of this
stack's services, and every key that weakens what nachos-deploy sets is said out loud."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from nachos_deploy.interfaces.cli import app

runner = CliRunner()
DEPLOY = "project: ov\ncomponents: {llm-proxy: {enabled: false}}\n"


def run(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_harmless_keys_pass_without_a_word(workdir: Path) -> None:
    (workdir / "nachos-deploy.yaml").write_text(DEPLOY)
    (workdir / "docker-compose.override.yml").write_text(
        "services:\n  gateway:\n    logging: {driver: local}\n    extra_hosts: ['api.example:10.0.0.5']\n"
        "    labels: {team: ops}\n    sysctls: {net.core.somaxconn: 1024}\nx-notes: anything\n"
    )
    code, out, err = run("validate")
    assert code == 0, out + err
    assert "warning" not in err
    code, out, _ = run("doctor", "--json")
    check = next(c for c in json.loads(out)["checks"] if c["name"] == "override")
    assert check["level"] == "pass" and "changes nothing" in check["detail"]


def test_keys_that_weaken_the_defaults_are_named_by_every_command(workdir: Path) -> None:
    (workdir / "nachos-deploy.yaml").write_text(DEPLOY)
    (workdir / "docker-compose.override.yml").write_text(
        "services:\n  gateway:\n    privileged: true\n    environment: {NATS_URL: 'nats://bus:4222'}\n"
        "  bus:\n    ports: ['4222:4222']\n"
    )
    code, _, err = run("render")
    assert code == 0
    text = " ".join(err.split())
    assert "services.gateway.privileged overrides the unprivileged default" in text
    assert "services.gateway.environment.NATS_URL overrides the bus address" in text
    assert "services.bus.ports overrides the published ports" in text
    _, out, _ = run("doctor", "--json")
    check = next(c for c in json.loads(out)["checks"] if c["name"] == "override")
    assert check["level"] == "warn" and "privileged" in check["detail"]


def test_an_override_of_something_else_is_refused_and_nothing_is_written(workdir: Path) -> None:
    (workdir / "nachos-deploy.yaml").write_text(DEPLOY)
    override = workdir / "docker-compose.override.yml"
    for text, expected in (
        ("services:\n  nosuch: {labels: {a: b}}\n", "services.nosuch is not a service of this stack"),
        ("networks:\n  nachos-internal: {internal: false}\n", "top-level key(s) networks are not allowed"),
        ("- a list\n", "must be a mapping"),
        ("services: [\n", "is not valid YAML"),
    ):
        override.write_text(text)
        code, _, err = run("render")
        assert code == 3, text
        assert expected in " ".join(err.split()) and str(override) in err.replace("\n", "")
        assert "Traceback" not in err
        assert not (workdir / ".nachos").exists()
