"""`plan` on the real engine (Compose): it writes no file and causes no engine event, and what it
predicts is what the following `up` does, for each kind of change, on one stack changed in turn:
nothing, a new component, an environment, a mount, a re-tagged image, a removed component. What `up`
did is read from the containers' ids: a recreated service has a new one, a kept one the same.

The components run an image of this test's own (the probe plus one file, under a unique tag), so
that re-tagging it touches no other test's image, and a rebuild of the shared probe meanwhile does
not change the prediction."""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.commands import compose_down, docker, nachos
from tests.test_lifecycle import PROBE, Deployment, containers

PLAN = 2  # exit code: something would change


class Planned:
    """The stack, its own image, and the runs of `plan` and `up` on it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.deployment = Deployment(folder, f"ndt-plan-{uuid.uuid4().hex[:8]}")
        self.image = f"nachos-test/plan-{uuid.uuid4().hex[:8]}:1"
        self.image_ids: list[str] = []
        self.components: dict[str, Any] = {}

    def build(self, marker: str) -> str:
        """Build this test's image (FROM the probe, one file more) under its one tag: a re-tag."""
        context = self.folder / f"image-{marker}"
        context.mkdir()
        (context / "marker").write_text(marker)
        (context / "Dockerfile").write_text(f"FROM {PROBE}\nCOPY marker /plan-marker\n")
        image_id = docker("build", "-q", "-t", self.image, str(context))
        self.image_ids.append(image_id)
        return image_id

    def write(self, **components: Any) -> None:
        """The deploy file; networks from the engine's pools, as a stack's own subnets grow with a new
        component and Compose then replaces a network in use (a failing `up` on Engine 20.10: see
        docs/plan.md), which is not what this test is about."""
        self.components = components
        document = {
            "project": self.deployment.project,
            "bus": {"client_port": 0, "monitor_port": 0, "healthcheck_interval": "500ms"},
            "ingress": {"enabled": False},
            "networks": {"pool": "docker"},
            "components": {
                "gateway": {"enabled": False},
                "llm-proxy": {"enabled": False},
                "filesystem": {"enabled": True, "image": self.image, "egress": False},
                **components,
            },
        }
        self.deployment.file.write_text(yaml.safe_dump(document))

    def plan(self) -> tuple[int, dict[str, Any]]:
        """One `plan --json`, checked to have written nothing and caused no engine event."""
        before = tree(self.folder)
        since = time.time()
        done = nachos(self.folder, "plan", "--json", "-c", str(self.deployment.file))
        until = time.time()
        assert done.returncode in (0, PLAN), done.stdout + done.stderr
        assert tree(self.folder) == before, "plan wrote a file"
        assert engine_events(self.deployment.project, since, until) == []
        return done.returncode, json.loads(done.stdout)

    def up(self) -> None:
        done = nachos(self.folder, "up", "-c", str(self.deployment.file), "--timeout", "90")
        assert done.returncode == 0, done.stdout + done.stderr


def tree(folder: Path) -> str:
    """A digest of every path and file under ``folder`` (names, modes and contents)."""
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        stat = path.lstat()
        digest.update(f"{path.relative_to(folder)}\0{stat.st_mode}\0".encode())
        if path.is_file() and not path.is_symlink():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def engine_events(project: str, since: float, until: float) -> list[str]:
    """What the engine did to the project's containers, networks and volumes in that window; the
    engine's own healthcheck runs (exec_*, health_status) are no one's doing."""
    out = subprocess.run(
        [
            "docker",
            "events",
            "--since",
            f"{since:.3f}",
            "--until",
            f"{until + 0.5:.3f}",
            "--format",
            "{{json .}}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    found = []
    for line in out.splitlines():
        event = json.loads(line)
        attributes = event.get("Actor", {}).get("Attributes", {})
        action = str(event.get("Action", ""))
        mine = attributes.get("com.docker.compose.project") == project or project in attributes.get(
            "name", ""
        )
        if mine and not action.startswith(("exec_", "health_status")):
            found.append(f"{event.get('Type')} {action} {attributes.get('name', '')}")
    return found


@pytest.fixture(scope="module")
def planned(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Planned]:
    planned = Planned(tmp_path_factory.mktemp("plan"))
    planned.build("first")
    try:
        yield planned
    finally:
        compose_down(planned.deployment.project)
        subprocess.run(["docker", "image", "rm", "-f", *planned.image_ids], capture_output=True, timeout=60)


def actions(document: dict[str, Any]) -> dict[str, tuple[str, tuple[str, ...]]]:
    return {s["name"]: (s["action"], tuple(s["reasons"])) for s in document["services"]}


def check_prediction(planned: Planned, document: dict[str, Any]) -> dict[str, str]:
    """Run `up` and compare what it did with ``document``: recreated and created services have a new
    container, kept ones the same; returns the containers after."""
    before = containers(planned.deployment.project)
    planned.up()
    after = containers(planned.deployment.project)
    for name, (action, _) in actions(document).items():
        if action == "keep":
            assert after.get(name) == before.get(name), f"{name}: predicted kept, but up replaced it"
        elif action in ("recreate", "create"):
            assert name in after and after[name] != before.get(name), f"{name}: predicted {action}"
        else:
            assert name not in after, f"{name}: predicted removed"
    assert set(after) <= set(before) | set(actions(document)), "up made a container plan did not name"
    return after


def test_plan_predicts_each_kind_of_change_without_changing_anything(planned: Planned) -> None:
    planned.write()
    code, document = planned.plan()  # nothing runs yet: everything is to be created
    assert code == PLAN and {a for a, _ in actions(document).values()} == {"create"}
    assert {f["state"] for f in document["files"]} == {"new"}
    assert any(n.endswith("_nachos-internal") for n in document["create"]["networks"])
    check_prediction(planned, document)

    code, document = planned.plan()  # what up left: nothing would change
    assert (code, document["changes"], document["files"]) == (0, False, [])
    assert {a for a, _ in actions(document).values()} == {"keep"}

    planned.write(webchat={"enabled": True, "image": planned.image, "egress": False})
    code, document = planned.plan()  # a new component, with its sidecar
    found = actions(document)
    assert code == PLAN and found["webchat"] == ("create", ()) and found["bus-webchat"] == ("create", ())
    assert found["filesystem"] == ("keep", ())
    # The bus's config (its leaf accounts) changes with a new component: Compose replaces it.
    assert found["bus"] == ("recreate", ("configuration",))
    assert {f["name"] for f in document["files"]} >= {"docker-compose.yml", "sidecar-webchat.conf"}
    check_prediction(planned, document)

    webchat = planned.components["webchat"]
    planned.write(webchat={**webchat, "environment": {"PLAN_CASE": "environment"}})
    code, document = planned.plan()
    found = actions(document)
    assert code == PLAN and found["webchat"] == ("recreate", ("environment",))
    assert [n for n, (a, _) in found.items() if a != "keep"] == ["webchat"]
    diff = next(f["diff"] for f in document["files"] if f["name"] == "docker-compose.yml")
    assert '+      PLAN_CASE: "environment"' in diff
    check_prediction(planned, document)

    webchat = planned.components["webchat"]
    planned.write(webchat={**webchat, "volumes": ["plan-extra:/extra"]})
    code, document = planned.plan()
    found = actions(document)
    assert code == PLAN and found["webchat"] == ("recreate", ("mounts",))
    assert f"{planned.deployment.project}_plan-extra" in document["create"]["volumes"]
    check_prediction(planned, document)

    planned.build("second")  # the same reference names another image now
    code, document = planned.plan()
    found = actions(document)
    assert code == PLAN and document["files"] == []
    assert found["webchat"] == found["filesystem"] == ("recreate", ("image",))
    assert found["bus-webchat"] == ("keep", ())
    check_prediction(planned, document)

    planned.write()  # webchat removed: its containers are orphans, which up removes
    code, document = planned.plan()
    found = actions(document)
    assert found["webchat"] == found["bus-webchat"] == ("remove", ("orphan",))
    assert code == PLAN
    assert any(f["state"] == "stale" and f["name"] == "nachos-webchat.toml" for f in document["files"])
    after = check_prediction(planned, document)
    assert "webchat" not in after and "bus-webchat" not in after
    code, document = planned.plan()
    assert code == 0 and "webchat" not in actions(document)
