"""Each component's own copy of nachos.toml, and the secrets kept out of every copy (issue 19, item 4):
what each role's copy holds, how a secret written in nachos.toml reaches its one reader, the warning,
and the TOML writer. The engine test that repeats the attack is tests/test_channel_boundary.py."""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import tomllib
from pathlib import Path, PurePath

import pytest
import yaml

from nachos_deploy.core import platform_config
from nachos_deploy.core.catalog import NOT_PLATFORM
from nachos_deploy.core.config import DeployConfig
from nachos_deploy.core.errors import ConfigError
from nachos_deploy.core.plan import make_plan, platform_copy
from nachos_deploy.core.plan_types import Plan
from nachos_deploy.core.render import render
from nachos_deploy.io import loader, platform_secrets
from nachos_deploy.io.stack import prepare

TOKEN = "wa-token-0123456789"
DOCUMENT = f"""
[nachos]
name = "x"
version = "1.0"
[llm]
provider = "bedrock"
model = "m"
region = "eu-west-1"
max_tokens = 1000
[security]
mode = "standard"
dlp = {{ enabled = true }}
[channels.whatsapp]
token = "{TOKEN}"
verify_token = "vt-0123"
app_secret = "${{WHATSAPP_APP_SECRET}}"
phone_number_id = "42"
webhook_path = "/whatsapp/webhook"
dm = {{ user_allowlist = ["1"] }}
[channels.slack]
enabled = false
bot_token = "xoxb-1"
[tools.filesystem]
paths = ["/workspace"]
[tools.code_runner]
languages = ["python"]
[runtime]
redis_url = "redis://user:pw@redis:6379"
state_dir = "/app/state"
"""


def planned(tmp_path: Path, text: str = DOCUMENT) -> tuple[Plan, platform_config.Platform]:
    (tmp_path / "nachos.toml").write_text(text)
    platform = loader.read_platform(tmp_path / "nachos.toml")
    config = DeployConfig.model_validate(
        {"components": {"whatsapp": {"enabled": True}, "webchat": {"enabled": True, "image": "x"}}}
    )
    plan = make_plan(config, platform, base_dir=PurePath(tmp_path), output_dir=PurePath(tmp_path / "out"))
    return plan, platform


def copies(plan: Plan) -> dict[str, dict[str, object]]:
    return {name: tomllib.loads(text) for name, text in plan.platform_files}


def test_each_component_gets_only_its_sections_and_no_secret(tmp_path: Path) -> None:
    plan, _ = planned(tmp_path)
    own = copies(plan)
    needed = {
        "nachos": {"name": "x", "version": "1.0"},
        "llm": {"provider": "bedrock", "model": "m", "region": "eu-west-1"},
        "security": {"mode": "standard"},
    }
    assert own[platform_copy("whatsapp")] == {
        **needed,
        "channels": {
            "whatsapp": {
                "app_secret": "${WHATSAPP_APP_SECRET}",  # a reference, expanded in the channel only
                "phone_number_id": "42",
                "webhook_path": "/whatsapp/webhook",
                "dm": {"user_allowlist": ["1"]},
            }
        },
    }
    assert own[platform_copy("webchat")] == needed
    gateway = own[platform_copy("gateway")]
    assert "channels" not in gateway  # it takes its channels from GATEWAY_CHANNELS
    assert gateway["runtime"] == {"state_dir": "/app/state"}  # the Redis password went to its env
    assert gateway["tools"] == {
        "filesystem": {"paths": ["/workspace"]},
        "code_runner": {"languages": ["python"]},
    }
    assert own[platform_copy("llm-proxy")]["llm"] == {
        "provider": "bedrock",
        "model": "m",
        "region": "eu-west-1",
        "max_tokens": 1000,
    }
    assert "runtime" not in own[platform_copy("llm-proxy")]
    # every platform component mounts its own copy, and only it
    for service in plan.components:
        if service.role in NOT_PLATFORM:  # Redis and Caddy read no nachos.toml
            assert not any(m.target == "/etc/nachos/nachos.toml" for m in service.mounts)
            continue
        sources = [m.source for m in service.mounts if m.target == "/etc/nachos/nachos.toml"]
        assert sources == [f"./{platform_copy(service.name)}"]
    files = render(plan)
    assert not [name for name, text in files.items() if TOKEN in text or "vt-0123" in text or ":pw@" in text]


def test_secrets_reach_their_one_reader_through_its_env_file(tmp_path: Path) -> None:
    plan, platform = planned(tmp_path)
    assert [(s.key, s.variable, s.component) for s in platform.secrets] == [
        ("channels.slack.bot_token", "CHANNEL_SLACK_BOT_TOKEN", "slack"),
        ("channels.whatsapp.token", "CHANNEL_WHATSAPP_TOKEN", "whatsapp"),
        ("channels.whatsapp.verify_token", "CHANNEL_WHATSAPP_VERIFY_TOKEN", "whatsapp"),
        ("runtime.redis_url", "RUNTIME_REDIS_URL", "gateway"),
    ]
    assert TOKEN not in repr(platform.secrets)
    whatsapp, webchat, gateway = (plan.component(n) for n in ("whatsapp", "webchat", "gateway"))
    assert whatsapp.env_files == ("credentials/platform-whatsapp.env",)
    assert gateway.env_files == ("credentials/platform-gateway.env",)
    assert webchat.env_files == ()
    # a variable not written in the file comes from the host, optionally; one that is, from the file
    env = {var.name: var for var in whatsapp.environment}
    assert env["CHANNEL_WHATSAPP_APP_SECRET"].reference and not env["CHANNEL_WHATSAPP_APP_SECRET"].required
    assert "CHANNEL_WHATSAPP_TOKEN" not in env  # Compose's environment would override the env file
    # webchat's only overlay variable is its port, which the ingress routes to: no secret
    assert [var.name for var in webchat.environment if var.name.startswith("CHANNEL_")] == [
        "CHANNEL_WEBCHAT_PORT"
    ]

    output = tmp_path / "out"
    platform_secrets.write(output, platform.secrets)
    written = output / "credentials" / "platform-whatsapp.env"
    assert written.read_text() == f"CHANNEL_WHATSAPP_TOKEN={TOKEN}\nCHANNEL_WHATSAPP_VERIFY_TOKEN=vt-0123\n"
    assert written.stat().st_mode & 0o777 == 0o600
    assert (output / "credentials").stat().st_mode & 0o777 == 0o700
    # a secret taken out of nachos.toml does not stay behind
    platform_secrets.write(output, [s for s in platform.secrets if s.component != "whatsapp"])
    assert not written.exists() and (output / "credentials" / "platform-gateway.env").exists()


def test_inline_secrets_are_one_warning_that_says_how_to_move_them(tmp_path: Path) -> None:
    plan, _ = planned(tmp_path)
    (warning,) = [w for w in plan.warnings if "secrets written as values" in w]
    path = str(tmp_path / "nachos.toml")
    for part in (path, "channels.whatsapp.token → CHANNEL_WHATSAPP_TOKEN (read by whatsapp)", ".env"):
        assert part in warning
    assert TOKEN not in warning
    clean, _ = planned(
        tmp_path, DOCUMENT.replace(f'token = "{TOKEN}"', 'token = "${TOKEN}"').split("[runtime]")[0]
    )
    assert [w for w in clean.warnings if "written as values" in w and "whatsapp.token" in w] == []


def test_a_value_the_env_file_cannot_carry_is_refused_naming_the_key(tmp_path: Path) -> None:
    (tmp_path / "nachos.toml").write_text(DOCUMENT.replace(TOKEN, "two words"))
    with pytest.raises(ConfigError, match=r"channels\.whatsapp\.token .*CHANNEL_WHATSAPP_TOKEN"):
        loader.read_platform(tmp_path / "nachos.toml")


def test_without_a_nachos_toml_each_copy_is_the_minimal_configuration(tmp_path: Path) -> None:
    plan = make_plan(DeployConfig.model_validate({"project": "p"}), base_dir=PurePath(tmp_path))
    own = copies(plan)
    assert set(own) == {platform_copy("gateway"), platform_copy("llm-proxy")}
    assert own[platform_copy("gateway")] == platform_config.default_document("p")


@pytest.mark.parametrize(
    "document",
    [
        {"a": {"b": {"c": 1}}, "top": "x"},
        {"s": {"q": 'quo"te \\ back\nnew\ttab \x7f \x01 é', "f": 1.5, "inf": float("inf"), "e": 1e300}},
        {"t": {"when": datetime.datetime(2026, 1, 2, 3, 4, 5), "day": datetime.date(2026, 1, 2)}},
        {"arr": {"servers": [{"id": "1", "ids": ["a"], "nested": {"k": True}}], "empty": []}},
        {"keys": {"with space": {"a.b": 1}, "": 2}, "empty": {}},
    ],
)
def test_the_toml_writer_reads_back_equal(document: dict[str, object]) -> None:
    text = platform_config.toml_text(document, "a header\nof two lines")
    assert text.startswith("# a header\n# of two lines\n")
    assert tomllib.loads(text) == document


def test_on_swarm_each_copy_is_a_config_of_its_own_and_the_secret_an_env_file(tmp_path: Path) -> None:
    (tmp_path / "nachos.toml").write_text(DOCUMENT)
    platform = loader.read_platform(tmp_path / "nachos.toml")
    config = DeployConfig.model_validate({"target": "swarm", "components": {"whatsapp": {"enabled": True}}})
    plan = make_plan(config, platform, base_dir=PurePath(tmp_path), output_dir=PurePath(tmp_path / "out"))
    stack = yaml.safe_load(render(plan)["docker-stack.yml"])
    for name in ("gateway", "llm-proxy", "whatsapp"):
        (mounted,) = stack["services"][name]["configs"]
        assert mounted["target"] == "/etc/nachos/nachos.toml"
        assert stack["configs"][mounted["source"]]["file"] == f"./{platform_copy(name)}"
    assert stack["services"]["whatsapp"]["env_file"] == ["credentials/platform-whatsapp.env"]
    assert "env_file" not in stack["services"]["llm-proxy"]


@pytest.mark.parametrize("command", ["render", "validate"])
def test_render_and_validate_say_the_warning_once(tmp_path: Path, command: str) -> None:
    (tmp_path / "nachos.toml").write_text(DOCUMENT)
    secrets = {"WHATSAPP_TOKEN": "t", "WHATSAPP_PHONE_NUMBER_ID": "1", "WHATSAPP_VERIFY_TOKEN": "v"}
    done = subprocess.run(
        [sys.executable, "-m", "nachos_deploy", command, "--set", "project=h19d-once"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, **secrets},
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (done.stdout + done.stderr).count("holds secrets written as values") == 1
    assert TOKEN not in done.stdout + done.stderr


def test_a_secret_in_nachos_toml_or_its_overlay_variable_is_the_channels_secret_given(tmp_path: Path) -> None:
    plan, _ = planned(tmp_path)
    required = {var.name: var.required for var in plan.component("whatsapp").environment if var.reference}
    assert required["WHATSAPP_TOKEN"] is False and required["WHATSAPP_VERIFY_TOKEN"] is False  # in the file
    assert required["WHATSAPP_PHONE_NUMBER_ID"] is True  # not a secret nachos-deploy moves
    # moved out of the file as the warning says: the overlay variable is enough
    (tmp_path / "nachos.toml").write_text("[channels.whatsapp]\nwebhook_path = '/w'\n")
    given = {
        "CHANNEL_WHATSAPP_TOKEN": "t",
        "CHANNEL_WHATSAPP_VERIFY_TOKEN": "v",
        "WHATSAPP_PHONE_NUMBER_ID": "1",
    }
    assert prepare(cwd=tmp_path, environ=given).missing_secrets() == []
    with pytest.raises(ConfigError, match=r"whatsapp needs WHATSAPP_TOKEN \(or CHANNEL_WHATSAPP_TOKEN\)"):
        prepare(cwd=tmp_path, environ={}).require_secrets()
