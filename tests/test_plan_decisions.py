"""`plan`'s decisions without an engine: the engine's rule over what runs and what the files ask for
(core/changes.py), the file diffs, the readers of Docker's JSON it compares, the command's exit code
and JSON document through the fake target, and that it writes nothing."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from nachos_deploy.core.changes import (
    CONFIGURATION,
    CREDENTIALS,
    ENVIRONMENT,
    IMAGE,
    MOUNTS,
    NOT_RUNNING,
    ORPHAN,
    Objects,
    Observed,
    PlanResult,
    ServiceChange,
    Wanted,
    decide,
    decide_one,
    diff_files,
    started_over,
)
from nachos_deploy.docker.running_specs import container_mounts, container_of, swarm_spec_of
from nachos_deploy.io.stack import Stack, prepare
from nachos_deploy.lifecycle import preview
from nachos_deploy.targets.compose_changes import wanted_environment, wanted_mounts
from tests.fake_target import FakeTarget, container

BIND = ("bind", "/srv/out/nats.conf", "/etc/nats/nats.conf", True)
DATA = ("volume", "p_bus-data", "/data", False)


def wanted(**fields: Any) -> Wanted:
    base: dict[str, Any] = {
        "name": "gateway",
        "image": "probe:1 sha256:aa",
        "environment": {"A": "1"},
        "mounts": frozenset({BIND}),
        "configuration": "h1",
    }
    return Wanted(**{**base, **fields})


def observed(**fields: Any) -> Observed:
    base: dict[str, Any] = {
        "running": True,
        "image": "probe:1 sha256:aa",
        "environment": {"A": "1"},
        "mounts": frozenset({BIND}),
        "configuration": "h1",
    }
    return Observed(**{**base, **fields})


def test_the_same_container_is_kept_and_a_missing_one_created() -> None:
    assert decide_one(wanted(), observed()) == ServiceChange("gateway", "keep")
    assert decide_one(wanted(), None) == ServiceChange("gateway", "create")
    assert not decide_one(wanted(), observed()).changes
    assert decide_one(wanted(), None).changes


@pytest.mark.parametrize(
    ("change", "reasons"),
    [
        ({"image": "probe:1 sha256:bb"}, (IMAGE,)),  # a re-tag: same reference, another image id
        ({"environment": {"A": "2"}, "configuration": "h2"}, (ENVIRONMENT,)),
        ({"mounts": frozenset({BIND, DATA}), "configuration": "h2"}, (MOUNTS,)),
        ({"configuration": "h2"}, (CONFIGURATION,)),  # the hash alone: a command, a label, a limit
        ({"environment": {}, "mounts": frozenset(), "configuration": "h2"}, (ENVIRONMENT, MOUNTS)),
    ],
)
def test_a_difference_recreates_and_says_why(change: dict[str, Any], reasons: tuple[str, ...]) -> None:
    found = decide_one(wanted(**change), observed())
    assert found == ServiceChange("gateway", "recreate", reasons)
    assert found.changes


def test_what_cannot_be_read_is_not_a_difference() -> None:
    assert (
        decide_one(wanted(image=None, environment=None), observed(image="x", environment={})).action == "keep"
    )


def test_a_stopped_container_is_started_and_a_finished_one_shot_kept() -> None:
    stopped = decide_one(wanted(), observed(running=False))
    assert stopped == ServiceChange("gateway", "keep", (NOT_RUNNING,)) and stopped.changes
    init = wanted(name="volume-init", one_shot=True)
    assert decide_one(init, observed(running=False, finished=True)) == ServiceChange("volume-init", "keep")
    assert decide_one(init, observed(running=False)).changes  # exited non-zero: run again


def test_orphans_are_removed_and_one_left_would_be_no_change() -> None:
    running = {"gateway": observed(), "old": observed()}
    removed = decide([wanted()], running, orphans="remove")  # what up does on both targets
    assert removed == [ServiceChange("gateway", "keep"), ServiceChange("old", "remove", (ORPHAN,))]
    left = decide([wanted()], running, orphans="keep")  # Swarm with no component to deploy
    assert left[-1] == ServiceChange("old", "keep", (ORPHAN,)) and not left[-1].changes


def test_file_diffs_name_new_changed_and_stale_files() -> None:
    found = diff_files(
        {"a.yml": "x: 1\n", "b.conf": None, "same": "s\n"},
        {"a.yml": "x: 2\n", "b.conf": "new\n", "same": "s\n"},
        {"old.toml": "gone\n"},
    )
    assert [(f.name, f.state) for f in found] == [
        ("a.yml", "changed"),
        ("b.conf", "new"),
        ("old.toml", "stale"),
    ]
    assert "-x: 1\n+x: 2\n" in found[0].diff and found[0].diff.startswith("--- a/a.yml\n+++ b/a.yml\n")
    assert found[1].diff.startswith("--- /dev/null\n+++ b/b.conf\n")
    assert "+++ /dev/null" in found[2].diff and "-gone" in found[2].diff


def test_the_plan_document_says_whether_up_would_change_anything() -> None:
    kept = PlanResult("p", "compose", "/o", (), (ServiceChange("bus", "keep"),))
    assert not kept.changes
    assert kept.as_json() == {
        "project": "p",
        "target": "compose",
        "output_dir": "/o",
        "changes": False,
        "files": [],
        "services": [{"name": "bus", "action": "keep", "reasons": []}],
        "create": {"volumes": [], "networks": [], "configs": [], "secrets": [], "replaced_networks": []},
    }
    assert PlanResult("p", "compose", "/o", (), (), Objects(networks=("p_x",))).changes


def test_container_readers_compare_as_the_files_resolve() -> None:
    """A container's Mounts without the image's anonymous volumes, against the resolved service."""
    item = {
        "Id": "c1",
        "Image": "sha256:aa",
        "Config": {
            "Image": "probe:1",
            "Env": ["A=1", "PATH=/bin", "EMPTY"],
            "Labels": {"com.docker.compose.service": "gateway", "com.docker.compose.config-hash": "h1"},
        },
        "State": {"Status": "running", "ExitCode": 0},
        "Mounts": [
            {
                "Type": "bind",
                "Source": "/srv/out/nats.conf",
                "Destination": "/etc/nats/nats.conf",
                "RW": False,
            },
            {"Type": "volume", "Name": "p_bus-data", "Destination": "/data", "RW": True},
            {"Type": "volume", "Name": "f" * 64, "Destination": "/anon", "RW": True},
        ],
    }
    found = container_of(item)
    assert found.image == "probe:1 sha256:aa" and found.config_hash == "h1"
    assert found.environment == {"A": "1", "PATH": "/bin", "EMPTY": ""}
    assert found.mounts == container_mounts(item["Mounts"]) == frozenset({BIND, DATA})
    resolved = {"volumes": {"bus-data": {"name": "p_bus-data"}}}
    service = {
        "environment": {"A": "1", "UNSET": None},
        "volumes": [
            {
                "type": "bind",
                "source": "/srv/out/nats.conf",
                "target": "/etc/nats/nats.conf",
                "read_only": True,
            },
            {"type": "volume", "source": "bus-data", "target": "/data"},
        ],
    }
    assert wanted_mounts(resolved, "p", service) == found.mounts
    assert wanted_environment(service, {"PATH": "/bin", "A": "0"}) == {"A": "1", "PATH": "/bin"}


def test_a_swarm_spec_reads_as_its_stack_file() -> None:
    spec = swarm_spec_of(
        {
            "Spec": {
                "Name": "p_bus",
                "TaskTemplate": {
                    "ContainerSpec": {
                        "Image": "nats:alpine@sha256:00",
                        "Env": ["A=1"],
                        "Mounts": [
                            {"Type": "tmpfs", "Target": "/tmp"},
                            {"Type": "volume", "Source": "p_d", "Target": "/d"},
                        ],
                        "Configs": [{"File": {"Name": "/etc/nats/nats.conf"}, "ConfigName": "p-nats-conf-1"}],
                    }
                },
            }
        },
        "p",
    )
    assert (spec.service, spec.image, dict(spec.environment)) == ("bus", "nats:alpine", {"A": "1"})
    assert spec.mounts == frozenset({("tmpfs", "", "/tmp", False), ("volume", "p_d", "/d", False)})


def _stack(tmp_path: Path, components: dict[str, Any] | None = None) -> Stack:
    document = {
        "project": "fake-plan",
        "ingress": {"enabled": False},
        "components": {"gateway": {"enabled": False}, "llm-proxy": {"enabled": False}, **(components or {})},
    }
    (tmp_path / "nachos-deploy.yaml").write_text(yaml.safe_dump(document))
    return prepare(tmp_path / "nachos-deploy.yaml", cwd=tmp_path, environ={})


def _tree(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_plan_over_the_fake_target_writes_nothing_and_reads_its_decisions(tmp_path: Path) -> None:
    stack = _stack(tmp_path, {"webchat": {"enabled": True, "image": "probe"}})
    target = FakeTarget(stack, None, tmp_path / "servers")  # type: ignore[arg-type]  # no bus is started
    before = _tree(tmp_path)
    fresh = preview.plan_on(target)
    assert _tree(tmp_path) == before  # not even the output folder was made
    assert fresh.changes and {f.state for f in fresh.files} == {"new"}
    assert {s.action for s in fresh.services} == {"create"} and fresh.create.networks

    for service in stack.plan.services:
        target.now[service.name] = container(service.name)
    target.now["old"] = container("old")
    target.differs = {"webchat": (ENVIRONMENT,)}
    found = {s.name: s for s in preview.plan_on(target).services}
    assert found["webchat"] == ServiceChange("webchat", "recreate", (ENVIRONMENT,))
    assert found["bus"] == ServiceChange("bus", "keep")
    assert found["old"] == ServiceChange("old", "remove", (ORPHAN,))
    assert _tree(tmp_path) == before


def test_the_command_exits_2_with_changes_and_prints_one_document(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nachos_deploy.interfaces import api
    from tests.commands import cli

    stack = _stack(tmp_path)
    pending = PlanResult("fake-plan", "compose", str(stack.output_dir), (), (ServiceChange("bus", "create"),))
    quiet = PlanResult("fake-plan", "compose", str(stack.output_dir), (), (ServiceChange("bus", "keep"),))
    for result, code in ((pending, 2), (quiet, 0)):
        monkeypatch.setattr(api, "plan", lambda stack, only=(), result=result: result)
        exit_code, stdout, _ = cli("plan", "-c", str(tmp_path / "nachos-deploy.yaml"), "--json")
        assert exit_code == code
        document = json.loads(stdout)
        assert document["exit_code"] == code and document["ok"] is True
        assert document["services"] == [s.as_json() for s in result.services]
        exit_code, stdout, _ = cli("plan", "-c", str(tmp_path / "nachos-deploy.yaml"))
        assert exit_code == code and ("would apply" in stdout) is (code == 2)


def test_the_hash_input_has_each_env_file_merged_under_the_services_own_environment(tmp_path: Path) -> None:
    """Compose's `up` hashes a service with its env_file read into its environment; `config --hash`
    does not, so every `up` of the gateway (its state store URL comes from an env_file) looked like
    a change, and an `up` after an outage "upgraded" it."""
    from nachos_deploy.docker.running_specs import _env_files_merged

    env = tmp_path / "gateway.env"
    env.write_text("# the state store\nRUNTIME_REDIS_URL=redis://gateway:secret@state:6379\nMODE=file\n")
    resolved = {
        "name": "p",
        "services": {
            "gateway": {
                "image": "probe",
                "environment": {"MODE": "own"},
                "env_file": [{"path": str(env), "required": False}, {"path": str(tmp_path / "gone.env")}],
            },
            "bus": {"image": "nats"},
        },
    }
    merged = _env_files_merged(resolved)
    gateway = merged["services"]["gateway"]  # type: ignore[index]
    assert "env_file" not in gateway
    assert gateway["environment"] == {"RUNTIME_REDIS_URL": "redis://gateway:secret@state:6379", "MODE": "own"}
    assert merged["services"]["bus"] == {"image": "nats"}  # type: ignore[index]
    assert "env_file" in resolved["services"]["gateway"]  # the caller's mapping is left as it was


def test_a_stack_started_over_recreates_every_service_it_starts_and_still_removes_orphans() -> None:
    """`up` removes the stack's containers first when the bus's credentials changed under it
    (ComposeTarget.clear_for_cold_start): `plan` shows each service recreated for that reason."""
    found = [
        ServiceChange("bus", "keep"),
        ServiceChange("webchat", "keep", (NOT_RUNNING,)),
        ServiceChange("gateway", "recreate", (ENVIRONMENT,)),
        ServiceChange("old", "remove", (ORPHAN,)),
    ]
    assert started_over(found) == [
        ServiceChange("bus", "recreate", (CREDENTIALS,)),
        ServiceChange("webchat", "recreate", (CREDENTIALS,)),
        ServiceChange("gateway", "recreate", (ENVIRONMENT, CREDENTIALS)),
        ServiceChange("old", "remove", (ORPHAN,)),
    ]


def test_the_passwords_servers_started_with_are_told_apart_from_new_ones() -> None:
    """A component added brings its leaf login (a new entry) and keeps every other password: the
    stack is not started over for it. A value changed under a running server (a folder made anew,
    a file edited) is. The record holds digests, never a value."""
    from nachos_deploy.targets.compose_record import credential_entries, credentials_differ

    before = credential_entries({"bus.env": "NACHOS_OPERATOR_PASSWORD=a\nNACHOS_LEAF_X_PASSWORD=b\n"})
    assert "a" not in before.values() and set(before) == {
        "bus.env:NACHOS_OPERATOR_PASSWORD",
        "bus.env:NACHOS_LEAF_X_PASSWORD",
    }
    added = credential_entries(
        {"bus.env": "NACHOS_OPERATOR_PASSWORD=a\nNACHOS_LEAF_X_PASSWORD=b\nNACHOS_LEAF_Y_PASSWORD=c\n"}
    )
    removed = credential_entries({"bus.env": "NACHOS_OPERATOR_PASSWORD=a\n"})
    edited = credential_entries({"bus.env": "NACHOS_OPERATOR_PASSWORD=z\nNACHOS_LEAF_X_PASSWORD=b\n"})
    assert not credentials_differ(before, added) and not credentials_differ(before, removed)
    assert credentials_differ(before, edited)
