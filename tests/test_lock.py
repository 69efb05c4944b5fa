"""The image lock on the real engine (docs/images.md): `lock` records the test's own derived images (the
bus's pushed to an in-process registry, so it has a registry digest and is pinned; the gateway's a
local build, locked by id). After both tags are rebuilt, `up` (on a running, unchanged stack, where the
fast path would otherwise skip Compose), `validate` and `doctor` refuse the gateway's, naming the
image, both ids and `nachos-deploy lock`, while the pinned bus still runs its locked image; a service
added to the configuration is refused until it is locked. A lock broken by hand stops none of
`status`, `down` and `lock` (which writes it again)."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import yaml

from nachos_deploy.core.image_lock import LOCK_FILE
from tests import derived_images
from tests.commands import compose_down, nachos


def test_up_validate_and_doctor_refuse_an_image_that_differs_from_the_lock(
    engine: str, tmp_path: Path
) -> None:
    stack = derived_images.own_stack(tmp_path, "lock", "h21l")
    project, bus, bus_id, probe = stack.project, stack.bus, stack.bus_id, stack.probe
    made = [bus, probe, bus_id]
    try:
        first_id = stack.build_probe()
        locked = nachos(tmp_path, "lock", "--json")
        assert locked.returncode == 0, locked.stdout + locked.stderr
        services = json.loads(locked.stdout)["services"]
        assert set(services) == {"bus", "bus-ports", "bus-gateway", "volume-init", "gateway"}
        assert services["gateway"] == {"image": probe, "id": first_id, "digest": None}
        digest = services["bus"]["digest"]
        assert digest.startswith("sha256:") and services["volume-init"] == services["bus"]
        assert services["bus"]["id"] == bus_id
        assert json.loads((tmp_path / LOCK_FILE).read_text())["services"] == services

        up = nachos(tmp_path, "up", "--timeout", "120", timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        again = nachos(tmp_path, "up", "--json", timeout=300)  # unchanged: the fast path
        assert again.returncode == 0 and json.loads(again.stdout)["unchanged"] is True, again.stdout

        rendered = yaml.safe_load((tmp_path / ".nachos" / "docker-compose.yml").read_text())["services"]
        pinned = f"{bus.rsplit(':', 1)[0]}@{digest}"
        assert {rendered[name]["image"] for name in ("bus", "bus-ports", "bus-gateway", "volume-init")} == {
            pinned
        }
        assert rendered["gateway"]["image"] == probe  # a local build: locked by id, not pinned

        made.append(first_id)  # the rebuilds leave them untagged; removed by id at the end
        made.append(derived_images.build(bus, "nats:alpine"))  # the pinned bus keeps running bus_id
        second_id = stack.build_probe()
        assert second_id != first_id
        refused = nachos(tmp_path, "up", "--timeout", "120", timeout=300)
        assert refused.returncode == 4, refused.stdout + refused.stderr
        for named in (probe, first_id, second_id, "nachos-deploy lock", "gateway", str(tmp_path / LOCK_FILE)):
            assert named in refused.stderr, (named, refused.stderr)
        assert f"gateway runs {probe}, whose id is {second_id}; the lock has {first_id}" in refused.stderr
        for pinned_service in ("bus runs", "bus-gateway runs", "volume-init runs"):
            assert pinned_service not in refused.stderr  # pinned by digest: still the locked image
        validate = nachos(tmp_path, "validate")
        assert validate.returncode == 4 and second_id in validate.stderr, validate.stdout + validate.stderr
        doctor = nachos(tmp_path, "doctor", "--json")
        assert doctor.returncode == 1, doctor.stdout + doctor.stderr
        checks = {c["name"]: c for c in json.loads(doctor.stdout)["checks"]}
        assert checks["image lock"]["level"] == "fail" and second_id in checks["image lock"]["detail"]

        relocked = nachos(tmp_path, "lock")
        assert relocked.returncode == 0, relocked.stdout + relocked.stderr
        assert nachos(tmp_path, "validate").returncode == 0

        stack.document["components"] = {
            "gateway": {"image": probe},
            "llm-proxy": {"enabled": False},
            "chat": {"role": "channel", "image": probe},
        }
        stack.file.write_text(yaml.safe_dump(stack.document))
        added = nachos(tmp_path, "up", "--timeout", "120", timeout=300)
        assert added.returncode == 4, added.stdout + added.stderr
        assert "chat (" in added.stderr and "is not in the lock" in added.stderr
        assert "nachos-deploy lock" in added.stderr

        (tmp_path / LOCK_FILE).write_text("{ cut by a bad merge", encoding="utf-8")
        status = nachos(tmp_path, "status")  # reading and removing commands go on, with one warning
        assert "goes on without it" in status.stderr and status.returncode != 3, status.stdout + status.stderr
        down = nachos(tmp_path, "down", timeout=300)
        assert down.returncode == 0 and "not valid JSON" in down.stderr, down.stdout + down.stderr
        assert not subprocess.run(
            ["docker", "ps", "-q", "--filter", f"label=com.docker.compose.project={project}"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        rewritten = nachos(tmp_path, "lock")
        assert rewritten.returncode == 0, rewritten.stdout + rewritten.stderr
        assert json.loads((tmp_path / LOCK_FILE).read_text())["services"]["gateway"]["image"] == probe
    finally:
        compose_down(project)
        derived_images.remove(made)


def test_lock_names_an_image_the_engine_does_not_have_and_writes_nothing(engine: str, tmp_path: Path) -> None:
    missing = f"nachos-test/lock-missing-{uuid.uuid4().hex[:8]}:1"
    document = {
        "project": "h21l-missing",
        "state": {"enabled": False},
        "components": {"gateway": {"image": missing}, "llm-proxy": {"enabled": False}},
    }
    (tmp_path / "nachos-deploy.yaml").write_text(yaml.safe_dump(document))
    done = nachos(tmp_path, "lock")
    assert done.returncode == 4, done.stdout + done.stderr
    assert missing in done.stderr and "(for gateway)" in done.stderr
    assert not (tmp_path / LOCK_FILE).exists()
