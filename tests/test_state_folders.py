"""State folders on the real engine (docs/components.md#state-folders): the gateway and each channel
write under RUNTIME_STATE_DIR (the gateway its identity/ and memory/, a channel pairing/<channel>.json)
on a named volume of their own, which volume-init hands to their user, so the writes work under the
read-only root, are the component's uid's, survive `down` and `up`, and go with `down --volumes`."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import yaml

from tests.commands import compose_down, docker, nachos

PROBE = "nachos-deploy/probe:latest"
UID = "61000:61000"  # run_as.components


def read_volume(volume: str) -> dict[str, tuple[str, str]]:
    """Each file of ``volume``: (owner uid:gid, content), read by a throwaway container."""
    script = (
        'cd /s && for f in $(find . -type f | sort); do echo "@@ $(stat -c %u:%g "$f") $f"; cat "$f"; done'
    )
    out = docker(
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        f"{volume}:/s:ro",
        "--entrypoint",
        "sh",
        "nats:alpine",
        "-c",
        script,
    )
    files: dict[str, tuple[str, str]] = {}
    for chunk in out.split("@@ ")[1:]:
        head, _, body = chunk.partition("\n")
        owner, name = head.split(" ", 1)
        files[name.removeprefix("./")] = (owner, body)
    return files


def test_state_is_written_as_the_components_uid_and_kept_across_down_and_up(
    engine: str, tmp_path: Path
) -> None:
    project = f"h20s-{uuid.uuid4().hex[:6]}"
    document = {
        "project": project,
        "bus": {"client_port": 0, "monitor_port": 0},
        "state": {"enabled": False},  # the Redis store is not what this tests
        "components": {
            "gateway": {"image": PROBE},
            "llm-proxy": {"enabled": False},
            "chat": {"role": "channel", "image": PROBE, "environment": {"PROBE_PAIR_AT_START": "alice,bob"}},
        },
    }
    file = tmp_path / "nachos-deploy.yaml"
    file.write_text(yaml.safe_dump(document))
    try:
        first = nachos(tmp_path, "up", "-c", str(file), "--timeout", "120", timeout=300)
        assert first.returncode == 0, first.stdout + first.stderr
        gateway, chat = read_volume(f"{project}_gateway-state"), read_volume(f"{project}_chat-state")
        assert set(gateway) == {"identity/gateway.json", "memory/starts.jsonl"}, gateway
        assert all(owner == UID for owner, _ in (*gateway.values(), *chat.values())), (gateway, chat)
        assert len(gateway["memory/starts.jsonl"][1].splitlines()) == 1
        pairing = json.loads(chat["pairing/chat.json"][1])
        assert [entry["id"] for entry in pairing["paired"]] == ["alice", "bob"]

        down = nachos(tmp_path, "down", "-c", str(file))
        assert down.returncode == 0, down.stdout + down.stderr
        again = nachos(tmp_path, "up", "-c", str(file), "--timeout", "120", timeout=300)
        assert again.returncode == 0, again.stdout + again.stderr
        kept = read_volume(f"{project}_gateway-state")
        assert kept["identity/gateway.json"] == gateway["identity/gateway.json"]  # written once, kept
        assert len(kept["memory/starts.jsonl"][1].splitlines()) == 2  # one line per start
        assert read_volume(f"{project}_chat-state")["pairing/chat.json"] == chat["pairing/chat.json"]

        gone = nachos(tmp_path, "down", "-c", str(file), "--volumes", "--yes")
        assert gone.returncode == 0, gone.stdout + gone.stderr
        volumes = docker("volume", "ls", "-q", "--filter", f"label=com.docker.compose.project={project}")
        assert volumes == "", volumes
    finally:
        compose_down(project)
