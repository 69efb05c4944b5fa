"""Issue 18 sections 3 and 4 on the real engine: the commands judge and reach the stack as it was
deployed, from any folder, and a missing bind-source folder gets the same rule on Compose and Swarm.

- `up --set bus.nodes=3` from the deploy file's folder (with a relative `-c`); every hint it prints,
  pasted into a shell in another folder, works: `request` authenticates (the credentials are found
  through the deployed folder), `status` with a component stopped exits 1 listing every service,
  `logs -f` follows, `down` removes all three bus nodes; a plain `status` in the deploy folder (no
  `--set`) judges the three nodes and says in one line that the deploy file differs.
- From a folder holding another project's broken deploy file, `status -p` still judges what runs
  (one warning names the file); from one holding another project's valid file, its note offers no
  `up` that would apply that file to this project; a mistyped `-p` is said to find nothing by `down`
  and `logs`.
- A missing absolute bind source is refused before anything is deployed (Compose would have made
  an empty folder). The Swarm side (the default ``./workspace`` created before the deploy, the stack
  found by its services' labels) is in tests/test_swarm.py, on that module's one-node swarm.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import yaml

from tests.commands import compose_down, nachos
from tests.test_lifecycle import platform_probe

BUS = {"client_port": 0, "monitor_port": 0, "healthcheck_interval": "500ms"}
HINT = re.compile(r"^\s+(talk to it|check it|its logs|remove it):\s+(nachos-deploy .*?)(\s{3}\(.*\))?$")


def shell_env() -> dict[str, str]:
    """The environment of a user's shell with nachos-deploy on PATH (the venv's console script)."""
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def paste(hint: str, folder: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """A hint as a user pastes it into a shell in ``folder``."""
    return subprocess.run(
        ["sh", "-c", hint], cwd=folder, env=shell_env(), capture_output=True, text=True, timeout=timeout
    )


def project_containers(project: str) -> list[str]:
    return subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=com.docker.compose.project={project}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()


def test_every_hint_of_up_works_from_another_folder_and_status_judges_what_was_deployed(
    engine: str, tmp_path: Path
) -> None:
    project = f"ndt-anyw-{uuid.uuid4().hex[:8]}"
    here, elsewhere = tmp_path / "deploy", tmp_path / "elsewhere"
    here.mkdir()
    elsewhere.mkdir()
    document = {
        "project": project,
        "bus": BUS,
        "components": {
            "gateway": platform_probe(),
            "llm-proxy": {"enabled": False},
        },
    }
    (here / "nachos-deploy.yaml").write_text(yaml.safe_dump(document))
    try:
        up = nachos(here, "up", "-c", "nachos-deploy.yaml", "--set", "bus.nodes=3", "--timeout", "120")
        assert up.returncode == 0, up.stdout + up.stderr
        hints = {m[1]: m[2] for m in (HINT.match(line) for line in up.stdout.splitlines()) if m}
        assert set(hints) == {"talk to it", "check it", "its logs", "remove it"}, up.stdout
        for hint in hints.values():  # a path in a hint is absolute: it works from any folder
            assert f"-c {here / 'nachos-deploy.yaml'} --set bus.nodes=3 -p {project}" in hint, hint

        # (b) A plain `status` (no --set) judges the three nodes that run, and says once why it does.
        plain = nachos(here, "status")
        assert plain.returncode == 0, plain.stdout + plain.stderr
        assert {"bus-2", "bus-3", "gateway"} <= set(re.findall(r"^(\S+)\s", plain.stdout, re.M))
        notes = [line for line in plain.stderr.splitlines() if line.startswith("note:")]
        assert (
            len(notes) == 1
            and f"`nachos-deploy up -c {here / 'nachos-deploy.yaml'} -p {project}`" in (notes[0])
        ), plain.stderr

        # (a) The hints, pasted in another folder: request authenticates through the deployed folder.
        talk = paste(hints["talk to it"], elsewhere)
        assert talk.returncode == 0 and '"runs"' in talk.stdout, talk.stdout + talk.stderr
        assert "note:" not in talk.stderr  # the hint names the configuration deployed, --set included
        env = nachos(elsewhere, "env", "-p", project)
        assert env.returncode == 0 and f"NACHOS_PROJECT={project}" in env.stdout, env.stderr
        assert re.search(r"^NATS_URL=nats://nachos-deploy:\w+@", env.stdout, re.M), env.stdout

        # (c) Another project's broken deploy file in that folder does not stop the commands that work
        # on what runs: one warning names it, and where the project was deployed from.
        (elsewhere / "nachos-deploy.yaml").write_text("project: other\nbus:\n  client_port: 1\n  - x\n")
        judged = nachos(elsewhere, "status", "-p", project)
        assert judged.returncode == 0, judged.stdout + judged.stderr
        assert f"{elsewhere / 'nachos-deploy.yaml'} is not valid YAML" in judged.stderr, judged.stderr
        assert f"as deployed from {here / 'nachos-deploy.yaml'}" in judged.stderr, judged.stderr
        # With no such project running, the file's error is what the user needs: exit 3 as before.
        assert nachos(elsewhere, "status", "-p", f"{project}-typo").returncode == 3
        # Another project's valid deploy file there: no offer to apply it to this project.
        (elsewhere / "nachos-deploy.yaml").write_text("project: other\n")
        judged = nachos(elsewhere, "status", "-p", project)
        assert judged.returncode == 0, judged.stdout + judged.stderr
        assert f"is project other's, not {project}'s" in judged.stderr, judged.stderr
        assert "nachos-deploy up" not in judged.stderr, judged.stderr
        (elsewhere / "nachos-deploy.yaml").unlink()
        # A mistyped name is read neither as a stack removed nor as a quiet one.
        typo = nachos(elsewhere, "down", "-p", f"{project}-typo")
        assert typo.returncode == 0 and "nothing was running to remove" in typo.stdout, typo.stdout
        quiet = nachos(elsewhere, "logs", "-p", f"{project}-typo")
        assert quiet.returncode == 0 and "has no containers on this engine" in quiet.stderr, quiet.stderr

        # With the gateway stopped, `status` from anywhere (the hint, and with -p alone) is not ok and
        # lists every service of the stack as deployed.
        subprocess.run(["docker", "stop", "-t", "2", f"{project}-gateway-1"], capture_output=True, check=True)
        for check in (paste(hints["check it"], elsewhere), nachos(elsewhere, "status", "-p", project)):
            assert check.returncode == 1, check.stdout + check.stderr
            listed = set(re.findall(r"^(\S+)\s", check.stdout, re.M))
            assert {"bus", "bus-2", "bus-3", "bus-ports", "gateway", "bus-gateway"} <= listed
            assert "everything is running" not in check.stdout
            assert "problem: gateway" in check.stdout, check.stdout

        logs = subprocess.Popen(
            ["sh", "-c", f"exec {hints['its logs']}"],
            cwd=elsewhere,
            env=shell_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            assert logs.stdout is not None
            first = logs.stdout.readline()  # follows the stack's services: their lines come
            assert first.strip() and not first.startswith(("error", "note")), first
            time.sleep(0.5)
            assert logs.poll() is None  # still following
        finally:
            logs.kill()
            logs.communicate(timeout=30)

        remove = paste(hints["remove it"] + " --volumes --yes", elsewhere, timeout=180)
        assert remove.returncode == 0, remove.stdout + remove.stderr
        assert project_containers(project) == []  # bus-2 and bus-3 too, though the file has one node
        assert not (here / ".nachos" / ".deployed").exists()
    finally:
        compose_down(project)


def test_a_missing_absolute_bind_source_is_refused_before_anything_is_deployed(
    engine: str, tmp_path: Path
) -> None:
    project = f"ndt-bind-{uuid.uuid4().hex[:8]}"
    absent = tmp_path / "not-made"
    document = {
        "project": project,
        "bus": BUS,
        "components": {
            "gateway": {"enabled": False},
            "llm-proxy": {"enabled": False},
            "webchat": platform_probe(enabled=True, volumes=[f"{absent}:/data"]),
        },
    }
    (tmp_path / "nachos-deploy.yaml").write_text(yaml.safe_dump(document))
    try:
        validate = nachos(tmp_path, "validate")
        assert validate.returncode == 3 and "components.webchat.volumes" in validate.stderr
        up = nachos(tmp_path, "up", "--timeout", "60")
        message = " ".join(up.stderr.split())
        assert up.returncode == 3, up.stdout + up.stderr
        assert f"components.webchat.volumes (webchat) names {absent}" in message
        assert not absent.exists()  # Compose alone would have made an empty folder there
        assert project_containers(project) == []
    finally:
        subprocess.run(
            ["docker", "compose", "-p", project, "down", "--volumes", "-t", "1"],
            capture_output=True,
            timeout=60,
        )
