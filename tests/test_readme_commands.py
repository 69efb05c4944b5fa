"""The README's set-up commands, in the order it gives them (issue 18, section 7).

`make demo`, `make demo-down`, then `make test` on a fresh clone: the demo's live files (.last-up,
credentials) must not land in a golden folder (compose/<example>/rendered), which `make test`
compares byte for byte. `.ci/run` runs the three in that order and fails, naming the files, when
the demo changed a golden folder; these tests keep both true without an engine.
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _make_variable(name: str) -> str:
    found = re.search(rf"^{name} := (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert found, f"Makefile sets no {name}"
    return found.group(1).strip()


def _recipe(target: str) -> str:
    found = re.search(rf"^{target}:.*\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert found, f"Makefile has no {target} target"
    return found.group(1)


def test_the_demo_writes_its_live_files_outside_the_golden_folders() -> None:
    output = _make_variable("DEMO_OUT")
    for target in ("demo", "demo-down"):  # both name the same folder, so down finds what up started
        assert re.search(r"-o \$\(DEMO_OUT\)(\s|$)", _recipe(target)), f"make {target} ignores DEMO_OUT"
    folder = (ROOT / output).resolve()
    assert not folder.is_relative_to(ROOT / "compose"), f"{output} is under compose/, beside golden files"
    # git ignores it (and what the demo puts in it: credentials, .last-up), so a clone stays clean
    ignored = subprocess.run(
        ["git", "check-ignore", "-q", "--no-index", f"{output}/credentials/bus.env"], cwd=ROOT, check=False
    )
    assert ignored.returncode == 0, f"{output} is not ignored by git"


def test_ci_runs_the_readme_commands_in_order_and_checks_the_golden_folders() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    lines = [line.strip() for line in script.splitlines()]
    order = [lines.index(command) for command in ("make install", "make demo", "make demo-down", "make test")]
    assert order == sorted(order), "CI must run make demo, then make demo-down, then make test"
    assert "'compose/*/rendered/*'" in script  # the golden folders' files, compared before and after
    readme = (ROOT / "README.md").read_text()
    shown = [readme.index(f"make {name} ") for name in ("demo", "demo-down", "test")]
    assert shown == sorted(shown)


def test_make_install_byte_compiles_the_package() -> None:
    """With PYTHONDONTWRITEBYTECODE set (as on these machines), Python never writes a module's
    bytecode, so an editable install compiled every module it imported on each start of the command
    (about 0.15 s of every `nachos-deploy` run, docs/benchmarks.md). `make install`, which every other
    target runs first, compiles what is missing or changed."""
    source = ROOT / "nachos_deploy" / "core" / "units.py"
    cached = Path(importlib.util.cache_from_source(str(source)))
    cached.unlink(missing_ok=True)
    environment = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        ["make", "-s", "install"], cwd=ROOT, env=environment, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert cached.is_file(), f"make install left {source.name} uncompiled"
    header = cached.read_bytes()[8:12]  # the source's mtime the bytecode was compiled from
    assert int.from_bytes(header, "little") == int(source.stat().st_mtime)
