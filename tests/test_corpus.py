"""The hand-written hostile-input corpus: every key of the deploy file crossed with values an attacker
or a tired operator would try, plus odd --set paths, NACHOS_DEPLOY_* names and command-line
arguments. Each case ends in exit 0 with the value kept as written, or in one short message with a
documented exit code that names the key; never a traceback, never a file written on error.

The accepted values below were reviewed one by one: ``0755`` is 755 (YAML 1.2, not octal), ``NO``
is a string, a quoted ``'1'`` is read by the key's type, and free text (environment values,
commands) is kept byte for byte."""

from __future__ import annotations

import os
import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from nachos_deploy.core.config import DeployConfig
from nachos_deploy.core.plan_types import Plan
from nachos_deploy.core.units import duration_seconds
from nachos_deploy.interfaces.cli import app
from nachos_deploy.io.loader import load
from nachos_deploy.io.stack import prepare
from tests.yaml_strict import load_unique

runner = CliRunner()

# key path -> the deploy file with the value in place of {}
KEYS = {
    "project": "project: {}",
    "output": "output: {}",
    "images.tag": "images: {{tag: {}}}",
    "images.prefix": "images: {{prefix: {}}}",
    "bus.auth": "bus: {{auth: {}}}",
    "bus.image": "bus: {{image: {}}}",
    "bus.max_payload": "bus: {{max_payload: {}}}",
    "bus.max_pending": "bus: {{max_pending: {}}}",
    "bus.store_dir": "bus: {{store_dir: {}}}",
    "bus.client_port": "bus: {{client_port: {}}}",
    "bus.monitor_port": "bus: {{monitor_port: {}, publish_monitor: true}}",
    "bus.publish_monitor": "bus: {{publish_monitor: {}}}",
    "bus.bind_address": "bus: {{bind_address: {}}}",
    "bus.healthcheck_interval": "bus: {{healthcheck_interval: {}}}",
    "bus.resources.memory": "bus: {{resources: {{memory: {}}}}}",
    "bus.resources.cpus": "bus: {{resources: {{cpus: {}}}}}",
    "bus.resources.pids": "bus: {{resources: {{pids: {}}}}}",
    "bus.audit.enabled": "bus: {{audit: {{enabled: {}}}}}",
    "bus.audit.stream": "bus: {{audit: {{stream: {}}}}}",
    "bus.audit.storage": "bus: {{audit: {{storage: {}}}}}",
    "bus.audit.max_age": "bus: {{audit: {{max_age: {}}}}}",
    "bus.audit.max_bytes": "bus: {{audit: {{max_bytes: {}}}}}",
    "components.x": "components: {{x: {}}}",
    "components.x.image": "components: {{x: {{image: {}}}}}",
    "components.x.enabled": "components: {{x: {{image: i, enabled: {}}}}}",
    "components.x.role": "components: {{x: {{image: i, role: {}}}}}",
    "components.x.command": "components: {{x: {{image: i, command: {}}}}}",
    "components.x.environment": "components: {{x: {{image: i, environment: {}}}}}",
    "components.x.environment.A": "components: {{x: {{image: i, environment: {{A: {}}}}}}}",
    "components.x.secrets": "components: {{x: {{image: i, secrets: {}}}}}",
    "components.x.volumes": "components: {{x: {{image: i, volumes: {}}}}}",
    "components.x.networks": "components: {{x: {{image: i, networks: {}}}}}",
    "components.x.egress": "components: {{x: {{image: i, egress: {}}}}}",
    "components.x.user": "components: {{x: {{image: i, user: {}}}}}",
    "components.x.read_only": "components: {{x: {{image: i, read_only: {}}}}}",
    "components.x.connection_name": "components: {{x: {{image: i, connection_name: {}}}}}",
    "components.x.healthcheck": "components: {{x: {{image: i, healthcheck: {}}}}}",
    "components.x.healthcheck.interval": "components: {{x: {{image: i, healthcheck: {{test: [CMD, 'true'], interval: {}}}}}}}",  # noqa: E501
    "components.x.healthcheck.retries": "components: {{x: {{image: i, healthcheck: {{test: [CMD, 'true'], retries: {}}}}}}}",  # noqa: E501
    "components.x.permissions.publish": "components: {{x: {{image: i, permissions: {{publish: {}}}}}}}",
    "components.x.build.context": "components: {{x: {{build: {{context: {}}}}}}}",
    "components": "components: {{{}: {{image: i}}}}",
    "target": "target: {}",
    "components.x.replicas": "target: swarm\ncomponents: {{x: {{image: i, replicas: {}}}}}",
    "components.x.placement": "target: swarm\ncomponents: {{x: {{image: i, placement: {}}}}}",
}
VALUES = {
    "true": "true",
    "word": "abc",
    "negative": "-1",
    "zero": "0",
    "huge-int": "99999999999999999999999",
    "list": "[1]",
    "mapping": "{a: 1}",
    "null": "null",
    "markup": "'[/]'",
    "float-overflow": "1e400",
    "yaml11-octal": "0755",
    "yaml11-sexagesimal": "12:30",
    "yaml11-no": "NO",
    "empty": "''",
    "nul": '"\\0x"',
    "long": "'" + "x" * 5000 + "'",
    "dotdot": "'../../etc'",
    "space": "'a b'",
    "nanoseconds": "100ns",
    "quoted-one": "'1'",
    "half": "0.5",
    "emoji": "'😀'",
    "newline": '"a\\nb"',
    "date": "2024-01-01",
}

# what a path (output, build.context) takes: one line of text, no control characters, no name over
# 255 bytes, not empty
PATH_TEXT = {
    "quoted-one",
    "dotdot",
    "date",
    "yaml11-sexagesimal",
    "word",
    "emoji",
    "markup",
    "space",
    "yaml11-no",
    "nanoseconds",
}
ACCEPTED = {
    "project": {"quoted-one", "word", "nanoseconds", "date"},
    "output": PATH_TEXT,
    "images.tag": {"quoted-one", "date", "word", "yaml11-no", "nanoseconds"},
    "images.prefix": {"quoted-one", "date", "yaml11-sexagesimal", "word", "empty", "nanoseconds"},
    "bus.auth": {"true"},
    "bus.image": {"quoted-one", "date", "yaml11-sexagesimal", "word", "nanoseconds"},
    "bus.max_payload": {"quoted-one", "yaml11-octal"},
    "bus.max_pending": set(),
    "bus.store_dir": set(),
    "bus.client_port": {"yaml11-octal", "zero", "quoted-one"},
    "bus.monitor_port": {"yaml11-octal", "zero", "quoted-one"},
    "bus.publish_monitor": {"true"},
    "bus.bind_address": set(),
    "bus.healthcheck_interval": {"yaml11-octal", "half", "quoted-one", "null"},  # null: nachos-deploy's
    "bus.resources.memory": {"null"},
    "bus.resources.cpus": {"null", "half", "yaml11-octal", "quoted-one"},
    "bus.resources.pids": {"null", "yaml11-octal", "quoted-one"},
    "bus.audit.enabled": {"true"},
    "bus.audit.stream": {"quoted-one", "date", "word", "yaml11-no", "nanoseconds"},
    "bus.audit.storage": set(),
    "bus.audit.max_age": {"yaml11-octal", "half", "quoted-one"},
    "bus.audit.max_bytes": {"quoted-one", "yaml11-octal"},
    "components.x": set(),
    "components.x.image": {"quoted-one", "date", "yaml11-sexagesimal", "word", "null", "nanoseconds"},
    "components.x.enabled": {"true", "null"},
    "components.x.role": {"null"},
    "components.x.command": set(VALUES)
    - {
        "true",
        "negative",
        "zero",
        "huge-int",
        "list",
        "mapping",
        "float-overflow",
        "yaml11-octal",
        "nul",
        "half",
    },
    "components.x.environment": {"mapping"},
    "components.x.environment.A": set(VALUES) - {"list", "mapping", "null", "nul"},
    "components.x.secrets": set(),
    "components.x.volumes": set(),
    "components.x.networks": set(),
    "components.x.egress": {"true", "null"},
    "components.x.user": {
        "quoted-one",
        "date",
        "yaml11-sexagesimal",
        "word",
        "null",
        "yaml11-no",
        "nanoseconds",
    },
    "components.x.read_only": {"true"},
    "components.x.connection_name": {
        "quoted-one",
        "dotdot",
        "date",
        "yaml11-sexagesimal",
        "word",
        "emoji",
        "markup",
        "space",
        "null",
        "yaml11-no",
        "nanoseconds",
    },
    "components.x.healthcheck": {"null"},
    "components.x.healthcheck.interval": {"yaml11-octal", "half", "quoted-one", "null"},
    "components.x.healthcheck.retries": {"quoted-one", "yaml11-octal"},
    "components.x.permissions.publish": set(),
    "components.x.build.context": PATH_TEXT,
    "components": {"word"},
    "target": set(),
    "components.x.replicas": {"quoted-one"},
    "components.x.placement": set(),
}

CASES = [(key, value) for key in KEYS for value in VALUES]

# What an accepted value is once read by its key's type (YAML 1.2: `0755` is 755, `NO` a string; a
# quoted '1' is read by the key's type; a duration without a unit is in seconds). null is None: the
# key's default, which KEPT below says.
TEXT = {
    "true": "true",
    "word": "abc",
    "negative": "-1",
    "zero": "0",
    "huge-int": "99999999999999999999999",
    "markup": "[/]",
    "float-overflow": "1e400",
    "yaml11-octal": "0755",
    "yaml11-sexagesimal": "12:30",
    "yaml11-no": "NO",
    "empty": "",
    "long": "x" * 5000,
    "dotdot": "../../etc",
    "space": "a b",
    "nanoseconds": "100ns",
    "quoted-one": "1",
    "half": "0.5",
    "emoji": "\U0001f600",
    "newline": "a\nb",
    "date": "2024-01-01",
}
NUMBER = {"quoted-one": 1, "yaml11-octal": 755, "zero": 0}
FLOAT = {"quoted-one": 1.0, "yaml11-octal": 755.0, "half": 0.5}
DURATION = {"quoted-one": "1s", "yaml11-octal": "755s", "half": "0.5s"}
BOOL = {"true": True}
TYPED = {
    **dict.fromkeys(("bus.max_payload", "bus.client_port", "bus.monitor_port", "bus.resources.pids"), NUMBER),
    **dict.fromkeys(
        ("bus.audit.max_bytes", "components.x.healthcheck.retries", "components.x.replicas"), NUMBER
    ),
    "bus.resources.cpus": FLOAT,
    **dict.fromkeys(
        ("bus.healthcheck_interval", "bus.audit.max_age", "components.x.healthcheck.interval"), DURATION
    ),
    **dict.fromkeys(("bus.auth", "bus.audit.enabled", "components.x.enabled", "components.x.egress"), BOOL),
    "bus.publish_monitor": BOOL,
    "components.x.read_only": BOOL,
    "components.x.environment": {"mapping": {"a": "1"}},
    "components": {"word": ["abc"]},
}


def expected(key: str, value: str) -> Any:
    """The accepted value as the loaded configuration must hold it."""
    if value == "null":
        return None
    return TYPED.get(key, TEXT)[value]


@dataclass(frozen=True)
class Rendered:
    """What one accepted case produced, for KEPT to look into."""

    folder: Path  # the deploy file's
    config: DeployConfig
    plan: Plan
    files: dict[str, str]  # name -> text of what render wrote
    document: dict[str, Any]  # the Compose file (or, for target: swarm, the stack file), parsed

    @property
    def services(self) -> dict[str, Any]:
        services: dict[str, Any] = self.document["services"]
        return services

    @property
    def x(self) -> dict[str, Any]:
        service: dict[str, Any] = self.services["x"]
        return service


def _published(out: Rendered, target: int) -> int:
    """The host port bus-ports publishes for ``target``; 0 when the engine picks it (no key)."""
    (port,) = [p for p in out.services["bus-ports"]["ports"] if p["target"] == target]
    return int(port.get("published", 0))


def _nats_conf(out: Rendered, key: str) -> int:
    found = re.search(rf"^{key}: (\d+)$", out.files["nats.conf"], re.MULTILINE)
    assert found, out.files["nats.conf"]
    return int(found.group(1))


Check = tuple[Callable[[Rendered], Any], Callable[[Any], Any]]
# key -> (where the rendered output (or, for what is not rendered, the plan) keeps the value, what
# it must be there given the loaded value; None being the key's default)
KEPT: dict[str, Check] = {
    "project": (lambda o: o.document["name"], str),
    "output": (
        lambda o: sorted(p.name for p in (o.folder / o.config.output).iterdir()),
        lambda _: [
            ".gitignore",
            "credentials",  # made by render too, so that the folder runs with Compose alone
            "docker-compose.yml",
            "nachos-gateway.toml",  # each platform component's own copy of nachos.toml
            "nachos-llm-proxy.toml",
            "nats.conf",
            "sidecar-gateway.conf",
            "sidecar-llm-proxy.conf",
        ],
    ),
    "images.tag": (lambda o: o.services["gateway"]["image"], lambda v: f"nachos/gateway:{v}"),
    "images.prefix": (lambda o: o.services["gateway"]["image"], lambda v: f"{v}gateway:latest"),
    "bus.auth": (lambda o: "bus-gateway" in o.services and "authorization" in o.files["nats.conf"], bool),
    "bus.image": (
        lambda o: [o.services[n]["image"] for n in ("bus", "bus-ports", "bus-gateway")],
        lambda v: [v] * 3,
    ),
    "bus.max_payload": (lambda o: _nats_conf(o, "max_payload"), int),
    "bus.client_port": (lambda o: _published(o, 4222), int),
    "bus.monitor_port": (lambda o: _published(o, 8222), int),
    "bus.publish_monitor": (lambda o: _published(o, 8222) == 8222, bool),
    "bus.healthcheck_interval": (lambda o: o.services["bus"]["healthcheck"]["interval"], lambda v: v or "1s"),
    "bus.resources.memory": (lambda o: o.services["bus"]["mem_limit"], lambda v: v or 512 * 1024**2),
    "bus.resources.cpus": (lambda o: o.services["bus"].get("cpus"), lambda v: v),
    "bus.resources.pids": (lambda o: o.services["bus"]["pids_limit"], lambda v: v or 256),
    "bus.audit.enabled": (lambda o: o.plan.bus.audit is not None, bool),
    "bus.audit.stream": (lambda o: o.plan.bus.audit and o.plan.bus.audit.stream, str),
    "bus.audit.max_age": (lambda o: o.plan.bus.audit and o.plan.bus.audit.max_age, duration_seconds),
    "bus.audit.max_bytes": (lambda o: o.plan.bus.audit and o.plan.bus.audit.max_bytes, int),
    "components.x.image": (lambda o: o.x["image"], lambda v: v or "nachos/x:latest"),
    "components.x.enabled": (lambda o: "x" in o.services, lambda v: v is not False),
    "components.x.role": (lambda o: o.x["environment"]["NACHOS_ROLE"], lambda v: v or "extra"),
    "components.x.command": (lambda o: o.x.get("command"), lambda v: v),
    "components.x.environment": (lambda o: {k: o.x["environment"].get(k) for k in ("a",)}, lambda v: v),
    "components.x.environment.A": (lambda o: o.x["environment"]["A"], lambda v: v),
    "components.x.egress": (lambda o: "egress" in o.x["networks"], bool),
    "components.x.user": (lambda o: o.x.get("user"), lambda v: v),
    "components.x.read_only": (lambda o: o.x.get("read_only", False), bool),
    "components.x.connection_name": (
        lambda o: (o.x["environment"]["NACHOS_CONNECTION_NAME"], o.plan.component("x").connection_name),
        lambda v: (v or "x",) * 2,
    ),
    "components.x.healthcheck": (lambda o: o.x.get("healthcheck"), lambda v: v),
    "components.x.healthcheck.interval": (lambda o: o.x["healthcheck"]["interval"], lambda v: v or "5s"),
    "components.x.healthcheck.retries": (lambda o: o.x["healthcheck"]["retries"], int),
    "components.x.build.context": (lambda o: o.x["build"]["context"], lambda v: v),  # see _context
    "components": (lambda o: [n for n, s in o.services.items() if s["image"] == "i"], lambda v: v),
    "components.x.replicas": (lambda o: o.x["deploy"]["replicas"], int),
}


def _context(folder: Path, written: str) -> str:
    """A build context as the rendered file gives it: relative to the output folder `out`."""
    return posixpath.relpath(posixpath.normpath(f"{folder}/{written}"), f"{folder}/out")


def _written(folder: Path) -> list[str]:
    """Files (not folders) anywhere below ``folder`` besides the deploy file."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.name != "nachos-deploy.yaml"
    )


def _config_value(config: DeployConfig, key: str) -> Any:
    if key == "components":
        return list(config.components)
    node: Any = config
    for part in key.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


@pytest.mark.parametrize(("key", "value"), CASES, ids=[f"{k}={v}" for k, v in CASES])
def test_every_key_against_every_odd_value(workdir: Path, key: str, value: str) -> None:
    # `output` is the key under test there: the deploy file sits two folders down, so ../../etc
    # stays inside this test's folder, and the files go where the key says.
    folder = workdir / "a" / "b" if key == "output" else workdir
    folder.mkdir(parents=True, exist_ok=True)
    deploy = folder / "nachos-deploy.yaml"
    deploy.write_text(KEYS[key].format(VALUES[value]) + "\n", encoding="utf-8")
    args = ["render", "-c", str(deploy)] if key == "output" else ["render", "--output", "out"]
    result = runner.invoke(app, args)
    message = " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if value in ACCEPTED[key]:
        assert result.exit_code == 0, message
        _assert_kept(folder, key, value)
        return
    assert result.exit_code == 3, (result.exit_code, message)
    assert "nachos-deploy.yaml" in message and len(message) < 2000, message
    # the key is named, or the YAML error's line and column (a key that is a list, a 5,000-character key)
    assert key in message or "at line 1, column" in message, message
    assert _written(workdir) == [], "files were written although the deploy file was refused"


def _assert_kept(folder: Path, key: str, value: str) -> None:
    """The value is in the loaded configuration as written (read by its key's type), and in what was
    rendered from it: a value accepted and then lost or changed on the way is a defect too."""
    config = load(cwd=folder, environ={}).config
    want = expected(key, value)
    got = _config_value(config, key)
    assert got == want and type(got) is type(want), (got, want)
    stack = (
        prepare(cwd=folder, environ={})
        if key == "output"
        else prepare(cwd=folder, environ={}, output=folder / "out")
    )
    files = {p.name: p.read_text(encoding="utf-8") for p in stack.output_dir.iterdir() if p.is_file()}
    document = load_unique(files.get("docker-compose.yml") or files["docker-stack.yml"])
    out = Rendered(folder, config, stack.plan, files, document)
    extract, rendered = KEPT[key]
    want_rendered = _context(folder, want) if key == "components.x.build.context" else rendered(want)
    assert extract(out) == want_rendered, (extract(out), want_rendered)


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("0755", "0755"),
        ("1.10", "1.10"),
        ("1e400", "1e400"),
        ("99999999999999999999999", "99999999999999999999999"),
        ("NO", "NO"),
        ("12:30", "12:30"),
        ("2024-01-01", "2024-01-01"),
        ("true", "true"),
        ("-0", "-0"),
        ("'[/]'", "[/]"),
        ('"a\\nb"', "a\nb"),
    ],
)
def test_environment_values_are_kept_as_written(workdir: Path, yaml_text: str, expected: str) -> None:
    """YAML 1.1 turned `1.10` into 1.1 and `0755` into 493 before they reached the container."""
    (workdir / "nachos-deploy.yaml").write_text(
        f"components: {{x: {{image: i, environment: {{A: {yaml_text}}}}}}}\n"
    )
    assert runner.invoke(app, ["render"]).exit_code == 0
    compose = yaml.safe_load((workdir / ".nachos" / "docker-compose.yml").read_text())
    assert compose["services"]["x"]["environment"]["A"] == expected.replace("$", "$$")


BOMB = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcde", "bcdef", strict=True)
)

# (arguments, NACHOS_DEPLOY_* variables, files to create, exit code, fragment of the message)
COMMAND_LINES = [
    (["render", "--set", ".."], {}, {}, 3, "is not of the form key.path=value"),
    (["render", "--set", "a..b=1"], {}, {}, 3, "is not of the form key.path=value"),
    (["render", "--set", "components.=x"], {}, {}, 3, "is not of the form key.path=value"),
    (["render", "--set", "=1"], {}, {}, 3, "is not of the form key.path=value"),
    (["render", "--set", "bus.client_port.x=1"], {}, {}, 3, "bus.client_port: must be a port number"),
    (["render", "--set", "bus.nope=1"], {}, {}, 3, "bus.nope is not a known key"),
    (["render", "--set", "bus.auth=yes"], {}, {}, 3, "bus.auth: must be true or false"),
    (["render", "--set", "bus.auth=NO"], {}, {}, 3, "bus.auth: must be true or false"),
    (["render", "--set", "bus.client_port=12:30"], {}, {}, 3, "bus.client_port: must be a port number"),
    (["render", "--set", "bus.resources.memory=1"], {}, {}, 3, "memory: must be at least 6MB"),
    (["render", "--set", "bus.resources.cpus=1e400"], {}, {}, 3, "bus.resources.cpus"),
    (["render", "--set", "bus.resources.cpus=nan"], {}, {}, 3, "bus.resources.cpus"),
    (["render", "--set", "bus.healthcheck_interval=100ns"], {}, {}, 3, "is not a duration"),
    (["render", "--set", "bus.healthcheck_interval=0.0000001"], {}, {}, 3, "below 1ms"),
    (["render", "--set", "bus.healthcheck_interval=2"], {}, {}, 0, ""),
    (["render", "--set", "bus.healthcheck_interval=100us"], {}, {}, 3, "below 1ms"),
    (["render", "--set", "bus.audit.max_age=200000h"], {}, {}, 3, "longer than 100000h"),
    (["render", "--set", "bus.max_pending=99999999999999999999GB"], {}, {}, 3, "too large"),
    (["render", "--set", "bus.max_pending=9999999999999999999"], {}, {}, 3, "too large"),
    (["render", "--set", "components.x.image=[/]"], {}, {}, 3, "components.x.image: must be an image"),
    (["render", "--set", "components.x.image=Upper/Case"], {}, {}, 3, "must be an image reference"),
    (["render", "--set", "components.x.environment.A=\x00"], {}, {}, 3, "NUL character"),
    (["render", "--set", "components.x.user=root;rm"], {}, {}, 3, "components.x.user: must be a user"),
    (["render", "--set", "project=" + "a" * 100], {}, {}, 3, "project: must be a Compose project name"),
    (["render", "--set", "images.prefix=Bad Prefix/"], {}, {}, 3, "images.prefix: must make an image"),
    (["render", "--set", "bus.client_port=0755"], {}, {}, 0, ""),
    (["render"], {"NACHOS_DEPLOY_": "x"}, {}, 3, "NACHOS_DEPLOY_ names no key"),
    (["render"], {"NACHOS_DEPLOY___": "x"}, {}, 3, "names no key"),
    (["render"], {"NACHOS_DEPLOY_BUS____AUTH": "true"}, {}, 3, "names no key"),
    (["render"], {"NACHOS_DEPLOY_BUS__NOPE": "x"}, {}, 3, "bus.nope is not a known key"),
    (["render"], {"NACHOS_DEPLOY_COMPONENTS__X__IMAGE": "[/]"}, {}, 3, "must be an image reference"),
    (["render"], {"NACHOS_DEPLOY_BUS__AUTH": "NO"}, {}, 3, "must be true or false"),
    (["render"], {"NACHOS_DEPLOY_BUS__CLIENT_PORT": "12:30"}, {}, 3, "must be a port number"),
    (["render"], {"NACHOS_DEPLOY_BUS__CLIENT_PORT": "[" * 5000}, {}, 3, "client_port"),
    (["render"], {"NACHOS_DEPLOY_CONFIG": "/nonexistent.yaml"}, {}, 3, "does not exist"),
    (["down"], {"NACHOS_DEPLOY_PROJECT": "[/]"}, {}, 3, "project: must be a Compose project name"),
    (["status"], {"NACHOS_DEPLOY_BUS__RESOURCES__MEMORY": "1"}, {}, 3, "at least 6MB"),
    (["render", "-p", "[/]"], {}, {}, 3, "project: must be a Compose project name"),
    (["render", "-p", ""], {}, {}, 3, "project: must be a Compose project name"),
    (["render", "-c", "adir"], {}, {"adir/": ""}, 3, "is not a regular file"),
    (["render", "-c", "/dev/null"], {}, {}, 3, "is not a regular file"),
    (["render", "-c", "missing.yaml"], {}, {}, 3, "does not exist"),
    (["render", "-c", "latin1.yaml"], {}, {"latin1.yaml": b"project: \xff\xfe\n"}, 3, "cannot be read"),
    (["render", "-c", "bomb.yaml"], {}, {"bomb.yaml": BOMB}, 3, "expands to more than 100000 values"),
    (["render", "-c", "empty.yaml"], {}, {"empty.yaml": ""}, 0, ""),
    (["render", "-c", "list.yaml"], {}, {"list.yaml": "[1, 2]\n"}, 3, "must be a mapping"),
    (["render", "-c", "scalar.yaml"], {}, {"scalar.yaml": "hello\n"}, 3, "must be a mapping"),
    (["render", "-c", "multi.yaml"], {}, {"multi.yaml": "a: 1\n---\nb: 2\n"}, 3, "not valid YAML"),
    (
        ["render", "-c", "tag.yaml"],
        {},
        {"tag.yaml": "project: !!python/name:os.system\n"},
        3,
        "not valid YAML",
    ),
    (["render", "-c", "merge.yaml"], {}, {"merge.yaml": "x: &x {auth: 1}\nbus: {<<: *x}\n"}, 3, "x is not"),
    (["render", "-c", "bom.yaml"], {}, {"bom.yaml": "\ufeffproject: bom\n"}, 0, ""),
    (["render", "-o", "/dev/null"], {}, {}, 7, "is a file, not a folder"),
    (["render", "-o", "theirs"], {}, {"theirs/docker-compose.yml": "services: {}\n"}, 7, "did not write"),
    (["render", "-o", "."], {}, {"docker-compose.yml": "services: {}\n"}, 7, "did not write"),
    (["up", "--only", "nope"], {}, {}, 3, "--only names nope"),
    (["status", "--only", "[/]"], {}, {}, 3, "--only names [/]"),
    (["up", "--timeout", "-1"], {}, {}, 2, "Invalid value for '--timeout'"),
    (["up", "--timeout", "abc"], {}, {}, 2, "Invalid value for '--timeout'"),
    (["env", "--format", "xml"], {}, {}, 2, "Invalid value for '--format'"),
    (["logs", "[/]"], {}, {}, 2, "No service named [/]"),
    (["nonsense"], {}, {}, 2, "No such command 'nonsense'"),
]


@pytest.mark.parametrize(
    ("args", "env", "files", "code", "fragment"),
    COMMAND_LINES,
    ids=[str(i) for i in range(len(COMMAND_LINES))],
)
def test_odd_command_lines(
    workdir: Path,
    args: list[str],
    env: dict[str, str],
    files: dict[str, str | bytes],
    code: int,
    fragment: str,
) -> None:
    for name, content in files.items():
        path = workdir / name
        if name.endswith("/"):
            path.mkdir()
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
    result = runner.invoke(app, args, env=env)
    message = " ".join(result.stderr.split())
    assert result.exit_code == code, (result.exit_code, message)
    assert fragment in message and "Traceback" not in result.stderr and len(message) < 3000, message
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    if code != 0:
        after = sorted(str(p.relative_to(workdir)) for p in workdir.rglob("*"))
        assert after == before, "a refused command wrote files"
    for name, content in files.items():
        if not name.endswith("/") and isinstance(content, str):
            assert (workdir / name).read_text() == content, f"{name} was changed"
    assert os.environ.get("NACHOS_DEPLOY_") is None
