"""Issue 18 sections 3 and 4 without an engine: the record `up` leaves of what it deployed, the choice
between the configuration in front of a command and the one the project runs, the one line that says
they differ, and the one rule for missing bind sources on both targets. The engine side (labels, the
commands from another folder, Swarm) is tests/test_status_anywhere.py."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from nachos_deploy.core.bind_sources import bind_sources
from nachos_deploy.core.errors import ConfigError
from nachos_deploy.core.names import DEPLOYED_FILE
from nachos_deploy.docker.parse import most_named
from nachos_deploy.interfaces.cli.guard import running_note
from nachos_deploy.io import bind_folders, deployed
from nachos_deploy.io.stack import Stack, prepare
from nachos_deploy.targets.deployment import choose

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p.parent for p in (ROOT / "compose").glob("*/nachos-deploy.yaml"))


def stack_in(folder: Path, document: dict[str, object], *sets: str) -> Stack:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "nachos-deploy.yaml").write_text(yaml.safe_dump(document))
    return prepare(folder / "nachos-deploy.yaml", cwd=folder, environ={}, sets=sets)


def recorded(stack: Stack) -> Stack:
    stack.output_dir.mkdir(parents=True, exist_ok=True)
    deployed.save(stack)
    return stack


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_the_record_gives_back_every_example_as_deployed(example: Path, tmp_path: Path) -> None:
    """Saved, read and rendered again without the deploy file: the same files, byte for byte."""
    folder = tmp_path / example.name
    shutil.copytree(example, folder, ignore=shutil.ignore_patterns("rendered"))
    stack = prepare(folder / "nachos-deploy.yaml", cwd=folder, environ={}, sets=["bus.max_payload=2MB"])
    recorded(stack)
    (folder / "nachos-deploy.yaml").unlink()  # the deploy file may be gone or changed since
    assert (stack.output_dir / DEPLOYED_FILE).stat().st_mode & 0o777 == 0o600
    record = deployed.read(stack.output_dir)
    assert record is not None and record.project == stack.project
    again = deployed.stack_of(record, environ={})
    assert again.files == stack.files
    assert record.digest == deployed.digest(stack) == deployed.digest(again)


@pytest.mark.parametrize("content", ["", "{", '{"format": 0}', '{"format": 1, "project": "x"}', "[]"])
def test_a_record_that_cannot_be_trusted_is_none(tmp_path: Path, content: str) -> None:
    (tmp_path / DEPLOYED_FILE).write_text(content)
    assert deployed.read(tmp_path) is None
    assert deployed.read(tmp_path / "missing") is None


def test_nothing_running_or_the_same_stack_keeps_the_configuration_in_front(tmp_path: Path) -> None:
    stack = recorded(stack_in(tmp_path, {"project": "same"}))
    assert choose(stack, []).stack is stack
    located = choose(stack, [stack.output_dir])
    assert located.stack is stack and not located.differs and located.running_from is None


def test_a_set_that_is_missing_now_is_judged_by_what_was_deployed(tmp_path: Path) -> None:
    """Section 3 (b): after `up --set bus.nodes=3`, a plain `status` judges the three nodes."""
    running = recorded(stack_in(tmp_path, {"project": "three"}, "bus.nodes=3"))
    plain = prepare(tmp_path / "nachos-deploy.yaml", cwd=tmp_path, environ={})
    located = choose(plain, [running.output_dir], environ={})
    assert located.differs and located.running_from == running.output_dir
    assert [n.name for n in located.stack.plan.bus.nodes] == ["bus", "bus-2", "bus-3"]
    assert located.stack.files == running.files
    note = running_note(plain, located, (), None, "status")
    assert note is not None and note.count("\n") == 0
    assert "status works on what runs" in note
    assert f"`nachos-deploy up -c {tmp_path / 'nachos-deploy.yaml'} -p three` applies it" in note


def test_another_folder_with_p_finds_the_deployed_folder_and_says_nothing(tmp_path: Path) -> None:
    """Section 3 (a): the defaults with -p from another folder reach the deployed folder (and its
    credentials), and there is no deploy file in front to compare: no note."""
    running = recorded(
        stack_in(tmp_path / "deploy", {"project": "far", "components": {"webchat": {"enabled": True}}})
    )
    elsewhere = prepare(cwd=tmp_path / "elsewhere", environ={}, project="far")
    located = choose(elsewhere, [running.output_dir], environ={})
    assert located.stack.output_dir == running.output_dir
    assert "webchat" in {s.name for s in located.stack.plan.services}
    assert running_note(elsewhere, located, (), None, "status") is None


def test_a_changed_deploy_file_in_another_folder_is_named_with_the_up_that_applies_it(tmp_path: Path) -> None:
    running = recorded(stack_in(tmp_path / "a", {"project": "p1"}))
    other = stack_in(tmp_path / "b", {"project": "p1", "bus": {"max_payload": "1MB"}})
    located = choose(other, [running.output_dir], environ={})
    note = running_note(other, located, ["bus.nodes=1"], None, "logs")
    assert note is not None
    assert f"deployed from {tmp_path / 'a' / 'nachos-deploy.yaml'}" in note
    assert f"-c {tmp_path / 'b' / 'nachos-deploy.yaml'} --set bus.nodes=1 -p p1" in note


def test_another_projects_deploy_file_in_front_is_not_offered_for_this_project(tmp_path: Path) -> None:
    """`status -p p1` in project p2's folder: its file differs from what p1 runs, but applying it to p1
    (`up -c <p2's file> -p p1`) is not what anyone there wants; the note says whose file it is."""
    running = recorded(stack_in(tmp_path / "a", {"project": "p1"}))
    other = stack_in(tmp_path / "b", {"project": "p2"}, "project=p1")  # as -p p1 sets it
    located = choose(other, [running.output_dir], environ={})
    assert located.differs
    note = running_note(other, located, (), None, "status")
    assert note is not None and "is project p2's, not p1's" in note, note
    assert "nachos-deploy up" not in note and "applies it" not in note, note
    assert f"deployed from {tmp_path / 'a' / 'nachos-deploy.yaml'}" in note


def test_a_folder_without_a_record_is_used_and_said(tmp_path: Path) -> None:
    """Deployed by an older nachos-deploy or Compose alone: at least its folder (its credentials)."""
    folder = tmp_path / "old"
    folder.mkdir()
    given = prepare(cwd=tmp_path, environ={}, project="old")
    located = choose(given, [folder], environ={})
    assert located.unrecorded and located.stack.output_dir == folder
    note = running_note(given, located, (), None, "status")
    assert note is not None and "keeps no record" in note


def test_a_record_of_another_project_is_no_record(tmp_path: Path) -> None:
    running = recorded(stack_in(tmp_path / "a", {"project": "mine"}))
    given = prepare(cwd=tmp_path, environ={}, project="theirs")
    assert choose(given, [running.output_dir], environ={}).unrecorded


def test_the_labels_most_services_name_come_first() -> None:
    assert most_named(["/b", "", "/a", "/b", "relative", "/a", "/b"]) == [Path("/b"), Path("/a")]
    assert most_named(["", "  "]) == []


# --- section 4: bind sources --------------------------------------------------------------------


def test_the_default_workspace_is_the_deploys_and_is_created(tmp_path: Path) -> None:
    stack = stack_in(tmp_path, {"components": {"filesystem": {"enabled": True}}})
    sources = bind_sources(stack.plan, stack.output_dir)
    assert [(s.service, s.key, s.path, s.owned) for s in sources] == [
        ("filesystem", "components.filesystem.volumes (unset: ./workspace)", tmp_path / "workspace", True)
    ]
    assert bind_folders.to_create(stack) == sources and not bind_folders.refused(stack)
    assert bind_folders.prepare(stack) == [str(tmp_path / "workspace")]
    assert (tmp_path / "workspace").is_dir()
    assert bind_folders.missing(stack) == []


def test_rendered_files_and_named_volumes_are_not_bind_sources_of_the_deploy(tmp_path: Path) -> None:
    stack = stack_in(tmp_path, {"components": {"gateway": {"volumes": ["cache:/cache"]}}})
    assert bind_sources(stack.plan, stack.output_dir) == []


def test_a_missing_absolute_source_is_refused_naming_key_and_path(tmp_path: Path) -> None:
    absent = tmp_path / "not-there"
    stack = stack_in(
        tmp_path,
        {"components": {"webchat": {"enabled": True, "volumes": [f"{absent}:/data", "./mine:/mine:ro"]}}},
    )
    assert [s.path for s in bind_folders.refused(stack)] == [absent]
    with pytest.raises(ConfigError) as raised:
        bind_folders.prepare(stack)
    assert "components.webchat.volumes (webchat) names " + str(absent) in raised.value.message
    assert not (tmp_path / "mine").exists()  # refused before anything is made
    absent.mkdir()
    assert bind_folders.prepare(stack) == [str(tmp_path / "mine")]


def test_validate_and_doctor_say_what_up_will_do(tmp_path: Path) -> None:
    stack = stack_in(tmp_path, {"components": {"filesystem": {"enabled": True}}})
    level, detail, _ = bind_folders.verdict(stack)
    assert (
        level == "pass"
        and f"`up` creates the missing bind source folder(s) {tmp_path / 'workspace'}" in detail
    )
    (tmp_path / "workspace").mkdir()
    assert bind_folders.verdict(stack)[1] == "every bind source the deploy file names exists"
    foreign = stack_in(
        tmp_path / "b", {"components": {"webchat": {"enabled": True, "volumes": ["/nowhere-h18:/d"]}}}
    )
    level, detail, fix = bind_folders.verdict(foreign)
    assert level == "fail" and "/nowhere-h18" in detail and "components.webchat.volumes" in fix
