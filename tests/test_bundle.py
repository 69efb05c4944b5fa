"""Bundles on the real engine (docs/images.md#air-gapped-install): a stack of the test's own derived
images (the bus's pushed to an in-process registry, so locked by digest; the gateway's a local build)
is locked and saved; its images are removed; a copy of the bundle with one byte changed is refused
before anything is loaded (the images stay absent); the bundle itself loads, its images are the
locked ones, and `up` of what it wrote works with no registry (the bus held to its id there, since
`docker load` drops registry digests)."""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

from nachos_deploy.core.image_lock import LOCK_FILE
from tests import derived_images
from tests.archives import tampered
from tests.commands import compose_down, nachos


def test_save_remove_load_and_up_with_no_registry_and_a_changed_byte_is_refused_first(
    engine: str, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    source.mkdir()
    stack = derived_images.own_stack(source, "bundle", "h21bdl")
    project, bus, probe = stack.project, stack.bus, stack.probe
    ids = {bus: stack.bus_id}
    try:
        ids[probe] = stack.build_probe()
        assert nachos(source, "lock").returncode == 0
        source_lock = json.loads((source / LOCK_FILE).read_text())["services"]
        assert source_lock["bus"]["digest"] is not None and source_lock["gateway"]["digest"] is None
        bundle = tmp_path / "stack.tar"
        saved = nachos(source, "bundle", "save", str(bundle), "--json", timeout=300)
        assert saved.returncode == 0, saved.stdout + saved.stderr
        result = json.loads(saved.stdout)
        assert result["images"] == sorted([bus, probe]) and result["lock_from_deploy_folder"] is True
        assert "Saving 2 images" in saved.stderr  # a progress line while docker save runs
        with tarfile.open(bundle) as tar:
            names = tar.getnames()
        assert names[0] == "manifest.json"
        assert {"images.tar", LOCK_FILE, "nachos-deploy.yaml", "rendered/docker-compose.yml"} <= set(names)

        derived_images.remove([bus, probe, *ids.values()])
        assert derived_images.image_id(bus) == derived_images.image_id(probe) == ""  # gone

        damaged = tmp_path / "damaged.tar"
        shutil.copyfile(bundle, damaged)
        tampered(damaged, "images.tar")
        refused = nachos(
            tmp_path, "bundle", "load", str(damaged), "--to", str(tmp_path / "never"), timeout=300
        )
        assert refused.returncode == 9, refused.stdout + refused.stderr
        assert "member images.tar" in refused.stderr and str(damaged) in refused.stderr
        assert derived_images.image_id(bus) == derived_images.image_id(probe) == ""  # nothing loaded
        assert not (tmp_path / "never" / LOCK_FILE).exists()

        target = tmp_path / "air-gapped"
        target.mkdir()  # a folder pinned before to other images (the source's digests): replaced, and said
        shutil.copyfile(source / LOCK_FILE, target / LOCK_FILE)
        loaded = nachos(tmp_path, "bundle", "load", str(bundle), "--to", str(target), "--json", timeout=300)
        assert loaded.returncode == 0, loaded.stdout + loaded.stderr
        assert {derived_images.image_id(bus), derived_images.image_id(probe)} == set(ids.values())
        assert {LOCK_FILE, "nachos-deploy.yaml", "rendered/docker-compose.yml"} <= set(
            json.loads(loaded.stdout)["written"]
        )
        assert json.loads(loaded.stdout)["unpinned"] == ["bus", "bus-gateway", "bus-ports", "volume-init"]
        assert json.loads(loaded.stdout)["replaced_lock"] is True
        written_lock = json.loads((target / LOCK_FILE).read_text())["services"]
        assert written_lock["bus"] == {**source_lock["bus"], "digest": None}  # held to the same id
        assert written_lock["gateway"] == source_lock["gateway"]

        up = nachos(target, "up", "--timeout", "120", timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
    finally:
        compose_down(project)
        derived_images.remove([bus, probe, *ids.values()])
