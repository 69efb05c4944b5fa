"""The built wheel carries the templates: an installed nachos-deploy renders without the checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_wheel_packages_templates_and_renders(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(tmp_path / "dist")],
        cwd=ROOT,
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp_path / "dist").glob("nachos_deploy-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "site")
    for template in ("docker-compose.yml.j2", "nats.conf.j2", "sidecar.conf.j2"):
        assert f"nachos_deploy/templates/{template}" in names
    # The pytest fixtures are registered by installing the wheel.
    (entry_points,) = [n for n in names if n.endswith(".dist-info/entry_points.txt")]
    text = (tmp_path / "site" / entry_points).read_text()
    assert "[pytest11]\nnachos_deploy = nachos_deploy.interfaces.pytest_plugin" in text

    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    code = (
        "import nachos_deploy, nachos_deploy.core.render as r; "
        "print(nachos_deploy.__file__); print(r.templates_dir())"
    )
    where = subprocess.run(
        [sys.executable, "-c", code], cwd=work, env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert where[0].startswith(str(tmp_path / "site"))
    assert where[1] == str(tmp_path / "site" / "nachos_deploy" / "templates")
    subprocess.run(
        [sys.executable, "-m", "nachos_deploy", "render"], cwd=work, env=env, check=True, capture_output=True
    )
    assert "max_payload: 10MB" in (work / ".nachos" / "nats.conf").read_text()
