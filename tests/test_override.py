"""The Compose override file beside the deploy file: refused when it is not an override of this
stack's services, and every key that weakens what nachos-deploy sets is said out loud."""

from __future__ import annotations

import json
from pathlib import Path, PurePath

import pytest
from typer.testing import CliRunner

from nachos_deploy.core import override
from nachos_deploy.core.config import DeployConfig
from nachos_deploy.core.errors import ConfigError
from nachos_deploy.core.plan import make_plan
from nachos_deploy.core.plan_types import Plan
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


# Every key whose override weakens or bypasses what nachos-deploy sets, with what the warning says it
# overrides; written out here (not read from override.GUARDED), so that a key dropped from the
# guarded list, or a warning that names the wrong default, fails its own case.
GUARDED_KEYS = {
    "privileged": "the unprivileged default",
    "cap_add": "cap_drop: [ALL]",
    "cap_drop": "cap_drop: [ALL]",
    "security_opt": "no-new-privileges",
    "read_only": "the read-only root filesystem",
    "user": "the non-root user",
    "network_mode": "the network layout",
    "networks": "the network layout",
    "ports": "the published ports",
    "pid": "process isolation",
    "ipc": "process isolation",
    "devices": "device isolation",
    "volumes": "the mounts",
    "depends_on": "the start order",
    "healthcheck": "the healthcheck up and status rely on",
    "image": "the image that runs",
    "entrypoint": "what runs",
    "command": "what runs",
    "env_file": "the environment (credentials, NATS_URL)",
    "mem_limit": "the memory limit",
    "pids_limit": "the pids limit",
    "deploy": "the limits",
    "dns": "the DNS settings",
}
# a value of the shape Compose takes for each (the check is on the key, but an honest override)
VALUES: dict[str, object] = {
    "privileged": True,
    "cap_add": ["NET_ADMIN"],
    "cap_drop": [],
    "security_opt": ["seccomp:unconfined"],
    "read_only": False,
    "user": "root",
    "network_mode": "host",
    "networks": ["default"],
    "ports": ["4222:4222"],
    "pid": "host",
    "ipc": "host",
    "devices": ["/dev/kmsg"],
    "volumes": ["/:/host"],
    "depends_on": [],
    "healthcheck": {"disable": True},
    "image": "evil:latest",
    "entrypoint": ["sh"],
    "command": ["sh"],
    "env_file": ["other.env"],
    "mem_limit": "64g",
    "pids_limit": -1,
    "deploy": {"resources": {}},
    "dns": ["8.8.8.8"],
}


def _plan(**settings: object) -> Plan:
    return make_plan(DeployConfig.model_validate(settings), output_dir=PurePath("out"))


def test_the_guarded_list_is_the_one_tested() -> None:
    """A key added to the guarded list gets a case here, with what its warning says."""
    assert set(override.GUARDED) == set(GUARDED_KEYS) and len(GUARDED_KEYS) == 23


@pytest.mark.parametrize("service", ["gateway", "bus", "bus-ports", "bus-gateway"])
@pytest.mark.parametrize("key", GUARDED_KEYS)
def test_every_guarded_key_is_warned_about_on_every_kind_of_service(key: str, service: str) -> None:
    document = {"services": {service: {key: VALUES[key], "labels": {"team": "ops"}}}}
    warnings = override.findings(document, _plan(), "ov.yml")
    assert len(warnings) == 1, warnings  # labels are harmless
    (warning,) = warnings
    assert warning.startswith(f"ov.yml: services.{service}.{key} overrides ")
    assert GUARDED_KEYS[key] in warning and warning.endswith(" that nachos-deploy sets.")


def test_volume_init_is_a_service_of_the_stack_only_when_it_runs() -> None:
    document = {"services": {"volume-init": {"user": "1000"}}}
    prepared = _plan(components={"x": {"image": "i", "user": "1000:1000", "volumes": ["data:/data"]}})
    assert prepared.prepared_volumes
    assert override.findings(document, prepared, "ov.yml") == [
        "ov.yml: services.volume-init.user overrides the non-root user that nachos-deploy sets."
    ]
    unprepared = _plan(components={"gateway": {"enabled": False}, "x": {"image": "i"}})
    assert not unprepared.prepared_volumes
    with pytest.raises(ConfigError, match=r"services\.volume-init is not a service of this stack"):
        override.findings(document, unprepared, "ov.yml")


@pytest.mark.parametrize("variable", ["NATS_URL", "NATS_SERVERS"])
@pytest.mark.parametrize("form", ["mapping", "list"])
def test_the_bus_address_is_guarded_in_both_forms_of_environment(variable: str, form: str) -> None:
    environment = {variable: "nats://bus:4222"} if form == "mapping" else [f"{variable}=nats://bus:4222"]
    warnings = override.findings({"services": {"gateway": {"environment": environment}}}, _plan(), "ov.yml")
    assert warnings == [
        f"ov.yml: services.gateway.environment.{variable} overrides the bus address nachos-deploy sets "
        "(the component's own sidecar)."
    ]
    other = {"LOG_LEVEL": "debug"} if form == "mapping" else ["LOG_LEVEL=debug"]
    assert override.findings({"services": {"gateway": {"environment": other}}}, _plan(), "ov.yml") == []


@pytest.mark.parametrize("document", [None, {"services": None}, {"services": {}}, {"x-anchor": {"a": 1}}])
def test_an_empty_override_changes_nothing(document: object) -> None:
    assert override.findings(document, _plan(), "ov.yml") == []


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ({"services": ["gateway"]}, "'services' must be a mapping of service names"),
        ({"services": {"gateway": ["privileged"]}}, "services.gateway must be a mapping of Compose keys"),
        ({"volumes": {"bus-data": {}}}, "top-level key(s) volumes are not allowed"),
        ("services", "must be a mapping with a 'services:' key"),
    ],
)
def test_malformed_overrides_are_refused(document: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        override.findings(document, _plan(), "ov.yml")
    assert fragment in error.value.message and error.value.message.startswith("ov.yml")
