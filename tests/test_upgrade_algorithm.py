"""Upgrades that roll themselves back, and `rollback`, in-process over the fake target (no Docker).

The fake's ``differs`` plays what the engine compares (a component whose image or environment
changed is recreated) and its ``broken`` a new version that exits at once. The bus is a real
nats-server and each component "on the bus" a real connection, as in tests/test_algorithm.py, so
the one rule judges every step. The engine tests (tests/test_upgrade.py) keep what only an engine
shows: the images, the gaps, Swarm."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from nachos_deploy.core.errors import ComponentFailure, DeployError, ExitCode
from nachos_deploy.core.names import RELEASES_FILE
from nachos_deploy.io import releases
from nachos_deploy.lifecycle import rollback, upgrade
from nachos_deploy.lifecycle import up as algorithm
from nachos_deploy.lifecycle.status import status_on
from nachos_deploy.targets import upgrade_files
from tests.commands import nachos
from tests.fake_target import FakeTarget
from tests.natsserver import NatsServer, start_nats_server
from tests.test_algorithm import MAX_PAYLOAD, Make, stack_of

V1: dict[str, Any] = {"bus": {"auth": False}}
V2: dict[str, Any] = {"bus": {"auth": False}, "components": {"gateway": {"environment": {"MODE": "two"}}}}


@pytest.fixture(autouse=True)
def no_settle(monkeypatch: pytest.MonkeyPatch) -> None:
    """The settle after each replacement (upgrade.SETTLE, 3 s) is real time; these tests act in it
    where it is their subject, and skip it elsewhere."""
    monkeypatch.setattr(upgrade, "_pause", lambda seconds: None)


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    """One real bus for the file, as in tests/test_algorithm.py."""
    config = f"max_payload: {MAX_PAYLOAD}\nleafnodes {{ listen: 127.0.0.1:-1 }}\n"
    with start_nats_server(tmp_path_factory.mktemp("hub"), config_text=config) as server:
        yield server


@pytest.fixture
def make(hub: NatsServer, tmp_path: Path) -> Iterator[Make]:
    made: list[FakeTarget] = []

    def factory() -> FakeTarget:
        made.append(FakeTarget(stack_of(tmp_path, V1), hub, tmp_path / "servers"))
        return made[-1]

    yield factory
    for target in made:
        target.close()


def first_up(make: Make) -> FakeTarget:
    """A stack up and proven once, each component on an image id of its own (the "old" version)."""
    target = make()
    target.online |= {"gateway", "llm-proxy"}

    def old_images(t: FakeTarget) -> None:
        for name in ("gateway", "llm-proxy"):
            t.now[name] = replace(t.now[name], image_id=f"old-{name}")

    target.hook("start_components", old_images)
    algorithm.up_on(target, timeout=10)
    target.hooks.clear()
    target.calls.clear()
    return target


def upgrade_to(
    target: FakeTarget, tmp_path: Path, document: dict[str, Any], **differs: tuple[str, ...]
) -> None:
    """The same output folder, a new configuration, and the engine finding ``differs`` changed."""
    target.stack = stack_of(tmp_path, document)
    target.differs = dict(differs)


def events(target: FakeTarget, *kinds: str) -> list[tuple[str, ...]]:
    return [call for call in target.calls if call[0] in kinds]


def test_changed_components_are_replaced_one_at_a_time_each_proven_first(make: Make, tmp_path: Path) -> None:
    target = first_up(make)
    upgrade_to(target, tmp_path, V2, gateway=("environment",), **{"llm-proxy": ("image",)})
    proven_before: dict[str, bool] = {}

    def on_replace(t: FakeTarget) -> None:
        # When llm-proxy is replaced, the new gateway is already up and on the bus.
        if t.calls[-1] == ("replace", "llm-proxy"):
            proven_before["gateway"] = t.now["gateway"].image_id == "new-gateway"

    target.hook("replace", on_replace)
    result = algorithm.up_on(target, timeout=10)
    assert events(target, "hold", "replace", "start_components") == [
        ("hold", "gateway", "llm-proxy"),
        ("start_components", "gateway", "llm-proxy"),  # the fake skips the held ones
        ("replace", "gateway"),
        ("replace", "llm-proxy"),
    ]
    assert proven_before == {"gateway": True}
    assert list(result.upgraded) == ["gateway", "llm-proxy"]
    assert result.as_json()["rolled_back"] == []
    assert all(r.ok for r in result.services)
    known = releases.load(target.stack.output_dir)
    assert known.current is not None and known.previous is not None
    assert known.previous.images["gateway"].image_id == "old-gateway"
    assert known.current.images["gateway"].image_id == "new-gateway"
    assert "MODE" in known.current.files["docker-compose.yml"]
    assert "MODE" not in known.previous.files["docker-compose.yml"]
    assert (target.stack.output_dir / RELEASES_FILE).stat().st_mode & 0o777 == 0o600


def test_a_held_component_failing_beside_the_change_is_replaced_not_judged_first(
    make: Make, tmp_path: Path
) -> None:
    """The old container of a component the upgrade replaces next is not held to the one rule while
    the rest starts: on Swarm, `credentials rotate` restarts the state store with new passwords (its
    stage, before the components), and the old gateway, still on the old one, fails its healthcheck
    until the new gateway replaces it. Judged there, `up` failed with exit 6 (found by
    tests/test_swarm.py's rotation once it had a gateway)."""
    target = first_up(make)
    upgrade_to(target, tmp_path, V2, gateway=("environment",))

    def old_gateway_fails(t: FakeTarget) -> None:
        t.now["gateway"] = replace(t.now["gateway"], status="exited", exit_code=1)

    target.hook("start_sidecars", old_gateway_fails)
    result = algorithm.up_on(target, timeout=10)
    assert events(target, "hold", "replace") == [("hold", "gateway"), ("replace", "gateway")]
    assert list(result.upgraded) == ["gateway"] and all(r.ok for r in result.services)


def test_a_broken_new_version_puts_back_every_component_this_up_changed(make: Make, tmp_path: Path) -> None:
    target = first_up(make)
    old_files = dict(target.stack.files)
    upgrade_to(target, tmp_path, V2, gateway=("environment",), **{"llm-proxy": ("image",)})
    target.broken = {"llm-proxy": 3}
    with pytest.raises(ComponentFailure) as failed:
        algorithm.up_on(target, timeout=10)
    error = failed.value
    assert error.exit_code == ExitCode.COMPONENT
    assert error.fields["rolled_back"] == ["gateway", "llm-proxy"]
    assert "llm-proxy" in error.message and "Rolled back gateway, llm-proxy" in error.message
    assert "the fake's log of llm-proxy" in error.details  # the new version's last lines
    ((names, files, images),) = target.restored
    assert names == ("gateway", "llm-proxy")
    assert files["docker-compose.yml"] == old_files["docker-compose.yml"]  # the previous files
    assert images == {"gateway": "old-gateway", "llm-proxy": "old-llm-proxy"}
    assert target.now["llm-proxy"].image_id == "old-llm-proxy"
    assert status_on(target, only=None).ok
    # the record is left as it was: the failed version never became a release
    known = releases.load(target.stack.output_dir)
    assert known.previous is None and known.current is not None
    assert known.current.files["docker-compose.yml"] == old_files["docker-compose.yml"]


def test_an_up_that_changes_nothing_running_replaces_nothing(make: Make) -> None:
    target = first_up(make)
    result = algorithm.up_on(target, timeout=10)
    assert not events(target, "hold", "replace", "restore") and result.upgraded == {}


def test_rollback_refuses_without_a_previous_deployment(make: Make) -> None:
    target = first_up(make)
    with pytest.raises(DeployError) as refused:
        rollback.previous_stack(target.stack)
    assert refused.value.exit_code == ExitCode.FAILED
    assert (
        "no previous deployment" in refused.value.message and "Nothing was changed" in refused.value.message
    )


def test_rollback_is_an_up_of_the_previous_files_and_swaps_the_record(
    make: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = first_up(make)
    v1_files = dict(target.stack.files)
    upgrade_to(target, tmp_path, V2, gateway=("environment",))
    algorithm.up_on(target, timeout=10)
    # The fake's image ids name no image anywhere; a rollback to an image the engine lacks is refused
    # (exit 4), which tests/test_upgrade.py shows on the real engine.
    monkeypatch.setattr(rollback.engine, "missing_images", lambda images: [])
    previous = rollback.previous_stack(target.stack)
    # The recorded files, each component pinned to the image id it ran: its reference (nachos/...)
    # names no image on this engine now.
    compose = previous.files["docker-compose.yml"]
    assert '    image: "old-gateway"\n' in compose and '    image: "old-llm-proxy"\n' in compose
    assert {n: f for n, f in previous.files.items() if n != "docker-compose.yml"} == {
        n: f for n, f in v1_files.items() if n != "docker-compose.yml"
    }
    assert (
        compose.replace('"old-gateway"', '"nachos/gateway:latest"').replace(
            '"old-llm-proxy"', '"nachos/llm-proxy:latest"'
        )
        == v1_files["docker-compose.yml"]
    )
    assert "gateway" not in previous.loaded.config.components  # V1's configuration, as deployed
    target.stack = previous
    target.differs = {"gateway": ("environment",)}
    result = algorithm.up_on(target, timeout=10)
    assert list(result.upgraded) == ["gateway"]
    known = releases.load(target.stack.output_dir)
    assert known.current is not None and known.previous is not None
    assert "MODE" not in known.current.files["docker-compose.yml"]
    assert "MODE" in known.previous.files["docker-compose.yml"]  # a second rollback returns
    document = json.loads((target.stack.output_dir / ".deployed").read_text())
    assert "gateway" not in document["config"]["components"]


def test_a_new_version_that_crashed_before_the_first_look_is_still_rolled_back(
    make: Make, tmp_path: Path
) -> None:
    """Its container was restarted by the policy between `replace` and the wait's first look: the
    restart counts (a new container has no count to start from), though it runs and is on the bus."""
    target = first_up(make)
    upgrade_to(target, tmp_path, V2, gateway=("environment",), **{"llm-proxy": ("image",)})

    def crashed_once(t: FakeTarget) -> None:
        if t.calls[-1] == ("replace", "gateway"):
            t.now["gateway"] = replace(t.now["gateway"], restart_count=1)

    target.hook("replace", crashed_once)
    with pytest.raises(ComponentFailure) as failed:
        algorithm.up_on(target, timeout=10)
    # Caught at the gateway's own step: llm-proxy was never touched.
    assert failed.value.fields["rolled_back"] == ["gateway"]
    assert ("replace", "llm-proxy") not in target.calls
    assert "restarted" in failed.value.message


def test_a_new_version_that_dies_just_after_it_passed_the_gate_is_rolled_back(
    make: Make, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A version that joins the bus and dies a moment later passes a gate that looks once: each new
    container must still be up, with no restart, once the settle is over (in CI, the probe with
    PROBE_FAIL_AFTER_UPGRADE passed the single look 0.9 s after its start)."""
    target = first_up(make)
    upgrade_to(target, tmp_path, V2, gateway=("environment",), **{"llm-proxy": ("image",)})

    def dies_in_the_settle(seconds: float) -> None:
        assert seconds > 0  # the settle is there
        target.now["gateway"] = replace(target.now["gateway"], restart_count=1)

    monkeypatch.setattr(upgrade, "_pause", dies_in_the_settle)
    with pytest.raises(ComponentFailure) as failed:
        algorithm.up_on(target, timeout=10)
    assert failed.value.fields["rolled_back"] == ["gateway"]
    assert ("replace", "llm-proxy") not in target.calls


def test_a_pin_changes_only_the_image_line_of_the_services_named() -> None:
    """A rollback whose tag moved on runs the old image by id: one line of the rendered file changes."""
    text = (Path(__file__).parent.parent / "compose/demo/rendered/docker-compose.yml").read_text()
    pinned = upgrade_files.pin_images(text, {"gateway": "sha256:" + "a" * 64})
    changed = [
        (old, new) for old, new in zip(text.splitlines(), pinned.splitlines(), strict=True) if old != new
    ]
    assert changed == [('    image: "nachos-deploy/probe:latest"', f'    image: "sha256:{"a" * 64}"')]
    assert yaml.safe_load(pinned)["services"]["gateway"]["image"] == "sha256:" + "a" * 64
    assert yaml.safe_load(pinned)["services"]["llm-proxy"]["image"] == "nachos-deploy/probe:latest"
    alone = yaml.safe_load(upgrade_files.only_services(text, ["gateway"]))
    assert list(alone["services"]) == ["gateway"] and alone["networks"] == yaml.safe_load(text)["networks"]


def test_an_equal_deployment_does_not_become_the_rollback_target(tmp_path: Path) -> None:
    one = releases.Release(1.0, "d1", {"gateway": releases.ServiceImage("g:1", "id1")}, {"f": "1"})
    two = releases.Release(2.0, "d2", {"gateway": releases.ServiceImage("g:2", "id2")}, {"f": "2"})
    releases.record(tmp_path, one)
    releases.record(tmp_path, two)
    releases.record(tmp_path, replace(two, at=3.0))  # the same deployment proven again
    known = releases.load(tmp_path)
    assert known.current is not None and known.current.at == 3.0
    assert known.previous == one


def test_the_rollback_command_refuses_with_exit_1_and_one_json_document(tmp_path: Path) -> None:
    (tmp_path / "nachos-deploy.yaml").write_text("project: h21up-none\n")
    done = nachos(tmp_path, "rollback", "--json", timeout=60)
    assert done.returncode == 1, done.stdout + done.stderr
    document = json.loads(done.stdout)
    assert document["ok"] is False and "no previous deployment of project h21up-none" in document["error"]
    assert not (tmp_path / ".nachos").exists() or not any((tmp_path / ".nachos").iterdir())
