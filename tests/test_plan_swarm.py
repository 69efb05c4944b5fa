"""`plan` on a Swarm stack (one stack, changed twice): an unchanged stack plans nothing (exit 0); a
new environment recreates that service's tasks and nothing else; a removed component is pruned with
its sidecar; each as `up` then does it (a recreated service runs a new container, a kept one the
same), with no file written by `plan`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.test_plan_engine import tree
from tests.test_swarm import PROBE, SwarmStack, swarm  # noqa: F401  (the module's one-node swarm)


def running(project: str) -> dict[str, str]:
    """Service → the id of its running container on this node."""
    out = subprocess.run(
        [
            "docker", "ps", "--filter", f"label=com.docker.stack.namespace={project}",
            "--format", '{{.ID}} {{.Label "com.docker.swarm.service.name"}}',
        ],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout  # fmt: skip
    return {
        name.removeprefix(f"{project}_"): cid for cid, name in (line.split() for line in out.splitlines())
    }


def plan(
    stack: SwarmStack, folder: Path
) -> tuple[int, dict[str, tuple[str, tuple[str, ...]]], dict[str, object]]:
    before = tree(folder)
    done = stack.run("plan", "--json")
    assert done.returncode in (0, 2), done.stdout + done.stderr
    assert tree(folder) == before, "plan wrote a file"
    document = json.loads(done.stdout)
    found = {s["name"]: (s["action"], tuple(s["reasons"])) for s in document["services"]}
    return done.returncode, found, document


def rewrite(stack: SwarmStack, **filesystem: object) -> None:
    document = yaml.safe_load(stack.file.read_text())
    if filesystem:
        document["components"]["filesystem"].update(filesystem)
    else:
        document["components"].pop("filesystem")
    stack.file.write_text(yaml.safe_dump(document))


def test_swarm_plan_matches_the_next_up(swarm: None, tmp_path: Path) -> None:  # noqa: F811
    components = {
        "filesystem": {"enabled": True, "image": PROBE, "egress": False},
        "webchat": {"enabled": True, "image": PROBE, "egress": False},  # left when filesystem goes
    }
    stack = SwarmStack(tmp_path, components)
    try:
        code, found, document = plan(stack, tmp_path)
        assert code == 2 and {a for a, _ in found.values()} == {"create"}
        assert document["create"]["configs"] and document["create"]["secrets"]
        done = stack.run("up", "--timeout", "120")
        assert done.returncode == 0, done.stdout + done.stderr

        code, found, document = plan(stack, tmp_path)
        assert code == 0 and {a for a, _ in found.values()} == {"keep"}, document

        rewrite(stack, environment={"PLAN_CASE": "swarm"})
        code, found, _ = plan(stack, tmp_path)
        assert code == 2 and found["filesystem"] == ("recreate", ("environment",))
        assert [n for n, (a, _) in found.items() if a != "keep"] == ["filesystem"]
        before = running(stack.project)
        done = stack.run("up", "--timeout", "120")
        assert done.returncode == 0, done.stdout + done.stderr
        after = running(stack.project)
        assert after["filesystem"] != before["filesystem"]
        assert {n: after.get(n) for n in before if n != "filesystem"} == {
            n: c for n, c in before.items() if n != "filesystem"
        }

        rewrite(stack)  # the component removed: `up`'s last deploy prunes it and its sidecar
        code, found, document = plan(stack, tmp_path)
        assert code == 2 and found["filesystem"] == found["bus-filesystem"] == ("remove", ("orphan",))
        # Only the bus (its leaf logins) changes: the networks the component leaves behind are no
        # other stack's, so the stack's block stays (all of them moved with it before).
        assert {n: w for n, (a, w) in found.items() if a == "recreate"} == {"bus": ("configuration",)}
        assert document["create"]["networks"] == [], document["create"]
        done = stack.run("up", "--timeout", "120")
        assert done.returncode == 0, done.stdout + done.stderr
        assert "overlaps" not in done.stderr  # its networks, still there, are no other stack's
        assert not {"filesystem", "bus-filesystem"} & set(stack.services())
        removed = stack.run("down", "--volumes", "--yes")
        assert removed.returncode == 0, removed.stdout + removed.stderr
        left = subprocess.run(
            ["docker", "volume", "ls", "-q", "--filter", f"label=com.docker.stack.namespace={stack.project}"],
            capture_output=True, text=True, check=True, timeout=60,
        ).stdout.split()  # fmt: skip
        assert left == [], removed.stdout + removed.stderr
    finally:
        subprocess.run(
            [sys.executable, "-m", "nachos_deploy", "down", "-c", str(stack.file), "--volumes", "--yes"],
            capture_output=True,
            timeout=300,
        )
