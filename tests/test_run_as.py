"""The uids the containers run under (issue 19, item 1 and the uid half of item 2): a dedicated range
by default, configurable under ``run_as``, a component's own ``user`` still winning, and a warning
when a host account has one of them (the engine half is tests/test_host_uids.py)."""

from __future__ import annotations

import json
import pwd
import uuid
from pathlib import Path, PurePath

import pytest
import yaml
from typer.testing import CliRunner

from nachos_deploy.core.config import DEFAULT_RUN_AS, DeployConfig
from nachos_deploy.core.errors import ConfigError
from nachos_deploy.core.plan import make_plan
from nachos_deploy.core.plan_types import Plan
from nachos_deploy.interfaces.cli import app
from nachos_deploy.io import host_accounts
from nachos_deploy.io.loader import load

runner = CliRunner()


def plan_of(data: dict[str, object]) -> Plan:
    config = DeployConfig.model_validate(data)
    return make_plan(config, None, base_dir=PurePath("/srv/app"), output_dir=PurePath("/srv/app/.nachos"))


def users(plan: Plan) -> dict[str, str | None]:
    return {service.name: service.user for service in plan.services}


def test_components_sidecars_and_forwarder_each_have_a_dedicated_uid_by_default() -> None:
    plan = plan_of({"components": {"x": {"image": "x"}}})
    assert users(plan) == {
        "bus": None,  # root in its container, with no capability (docs/security.md#user-ids)
        "bus-ports": "61002:61002",
        "bus-gateway": "61001:61001",
        "bus-llm-proxy": "61001:61001",
        "bus-x": "61001:61001",
        "gateway": "61000:61000",
        "llm-proxy": "61000:61000",
        "state": "61005:61005",  # Redis, the gateway's (docs/state-store.md)
        "x": None,  # an extra keeps its image's user
    }
    assert {(p.volume, p.owner) for p in plan.prepared_volumes} == {
        ("gateway-data", "61000:61000"),
        ("gateway-state", "61000:61000"),  # RUNTIME_STATE_DIR (docs/components.md#state-folders)
        ("state-data", "61005:61005"),  # Redis's append-only file
    }


def test_the_default_range_is_one_no_distribution_hands_out() -> None:
    """useradd stops at 60000 (login.defs UID_MAX), Debian's adduser at 59999; systemd-homed takes
    60001-60513, nspawn's bound users 60514-60577, greeters 60578-60705, DynamicUser 61184-65519."""
    for ids in DEFAULT_RUN_AS.values():
        uid, gid = map(int, ids.split(":"))
        assert uid == gid and 60706 <= uid <= 61183


def test_run_as_moves_everything_and_a_components_own_user_wins() -> None:
    plan = plan_of(
        {
            "run_as": {"components": 62000, "sidecars": "62001", "forwarder": "62002:62012"},
            "components": {"llm-proxy": {"user": "3000:3000"}},
        }
    )
    assert users(plan)["gateway"] == "62000:62000" and users(plan)["llm-proxy"] == "3000:3000"
    assert users(plan)["bus-gateway"] == "62001:62001" and users(plan)["bus-ports"] == "62002:62012"
    assert {(p.volume, p.owner) for p in plan.prepared_volumes} == {
        ("gateway-data", "62000:62000"),
        ("gateway-state", "62000:62000"),  # its RUNTIME_STATE_DIR (docs/components.md#state-folders)
        ("state-data", "61005:61005"),
    }


def errors_for(tmp_path: Path, text: str, sets: list[str] | None = None) -> str:
    path = tmp_path / "nachos-deploy.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(path, cwd=tmp_path, environ={}, sets=sets or [])
    assert "\n" not in info.value.message
    return info.value.message


@pytest.mark.parametrize("value", ["0", "65534", "0:61000", "61000:70000", "abc", "true", "'-5'", "1001:x"])
def test_a_uid_that_is_root_nobody_beyond_a_remap_or_not_a_number_is_refused(
    tmp_path: Path, value: str
) -> None:
    message = errors_for(tmp_path, f"run_as:\n  components: {value}\n")
    assert str(tmp_path / "nachos-deploy.yaml") in message
    assert "run_as.components: must be" in message and "e.g. 61000:61000" in message


def test_a_uid_shared_between_components_and_sidecars_is_refused(tmp_path: Path) -> None:
    message = errors_for(tmp_path, "run_as:\n  sidecars: 61000\n")
    assert "run_as.components and run_as.sidecars share uid 61000" in message
    message = errors_for(tmp_path, "", sets=["run_as.forwarder=61001:5"])
    assert "--set" in message and "run_as.sidecars and run_as.forwarder share uid 61001" in message


def test_the_warning_names_the_account_the_key_and_both_fixes() -> None:
    config = DeployConfig.model_validate({"components": {"x": {"image": "x", "user": "4000"}}})
    plan = make_plan(config, None, base_dir=PurePath("/a"), output_dir=PurePath("/a/.nachos"))
    accounts = {61000: "alice", 4000: "bob"}
    warnings = host_accounts.uid_warnings(config, plan, accounts.get)
    assert len(warnings) == 2
    alice, bob = warnings
    assert alice.startswith(
        "host account alice has uid 61000, which run_as.components runs gateway, llm-proxy"
    )
    assert "/proc/<pid>/environ" in alice and "`usermod -u NEW_UID alice`" in alice
    assert "set run_as.components in the deploy file" in alice
    assert bob.startswith("host account bob has uid 4000, which components.x.user runs x under")
    assert "change components.x.user in the deploy file" in bob
    assert host_accounts.uid_warnings(config, plan, lambda uid: None) == []


def test_the_state_store_and_the_ingress_are_named_by_their_own_keys() -> None:
    config = DeployConfig.model_validate({"components": {"webchat": {"enabled": True}}})
    plan = make_plan(config, None, base_dir=PurePath("/a"), output_dir=PurePath("/a/.nachos"))
    warnings = host_accounts.uid_warnings(config, plan, {61005: "carol", 61003: "dave"}.get)
    assert sorted(w.split(",")[0] for w in warnings) == [
        "host account carol has uid 61005",
        "host account dave has uid 61003",
    ]
    assert any("which run_as.state runs state under" in w for w in warnings), warnings
    assert any("which run_as.ingress runs ingress under" in w for w in warnings), warnings


def an_account() -> pwd.struct_passwd:
    """An account of this machine whose uid run_as accepts (daemon, bin, ... exist everywhere)."""
    return next(entry for entry in pwd.getpwall() if 1 <= entry.pw_uid <= 65533)


@pytest.fixture
def file(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The forwarder under a real account's uid; the telegram channel lacks its token, so `up` stops
    before touching the engine."""
    monkeypatch.delenv("TELEGRAM_BOT_TOKEN", raising=False)
    path = workdir / "nachos-deploy.yaml"
    document = {
        "project": f"h19a-{uuid.uuid4().hex[:8]}",
        "run_as": {"forwarder": an_account().pw_uid},
        "components": {"telegram": {"enabled": True}},
    }
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize("command", [("render",), ("validate",), ("up",)])
def test_render_validate_and_up_say_it_once(file: Path, command: tuple[str, ...]) -> None:
    result = runner.invoke(app, [*command, "-c", str(file)])
    said = " ".join(result.stderr.split())
    account = an_account()
    assert said.count(f"host account {account.pw_name} has uid {account.pw_uid}, which run_as.forwarder") == 1
    if command == ("up",):
        assert result.exit_code == 3 and "TELEGRAM_BOT_TOKEN" in said


def test_doctor_reports_it_as_its_own_check(file: Path, engine: str) -> None:
    result = runner.invoke(app, ["doctor", "-c", str(file), "--json"])
    checks = [c for c in json.loads(result.stdout)["checks"] if c["name"] == "host uids"]
    assert [c["level"] for c in checks] == ["warn"]
    assert f"host account {an_account().pw_name}" in checks[0]["detail"]
    assert "host account" not in result.stderr
