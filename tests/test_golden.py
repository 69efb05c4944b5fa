"""The example configurations under compose/ and their rendered output must stay in sync."""

from __future__ import annotations

from pathlib import Path

import pytest

from nachos_deploy import files
from nachos_deploy.stack import prepare

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = sorted(p.parent for p in (ROOT / "compose").glob("*/nachos-deploy.yaml"))


def test_the_required_examples_exist() -> None:
    assert {p.name for p in EXAMPLES} >= {"default", "full", "ci-bus-only", "demo"}


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_golden_files_match(example: Path) -> None:
    stack = prepare(example / "nachos-deploy.yaml", cwd=example, environ={})
    assert stack.output_dir == example / "rendered"
    changed = files.differences(stack.output_dir, stack.files)
    assert not changed, f"{example.name}: {changed} out of date; run `make compose` to regenerate"
    on_disk = {p.name for p in stack.output_dir.iterdir()}
    assert on_disk == set(stack.files), "stale files in the rendered folder; run `make compose`"
