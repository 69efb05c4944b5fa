"""The example configurations under compose/ and their rendered output must stay in sync."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from nachos_deploy.core import platform_config
from nachos_deploy.io import files
from nachos_deploy.io.stack import prepare

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
    on_disk = {p.name for p in stack.output_dir.iterdir() if p.is_file()}  # not credentials/ (make demo)
    assert on_disk == set(stack.files), "stale files in the rendered folder; run `make compose`"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_platform_configs_are_ones_the_platform_accepts(example: Path) -> None:
    # The platform refuses unknown keys ("Unknown config key: tools.code-runner") and exits at start;
    # the key tree checked here follows its validation code.
    stack = prepare(example / "nachos-deploy.yaml", cwd=example, environ={})
    own = example / "nachos.toml"
    texts = [own.read_text()] if own.is_file() else []
    texts += [text for _, text in stack.plan.platform_files]  # each component's own copy too
    if not texts:
        assert not stack.plan.components  # a bus alone needs no platform configuration
        return
    for text in texts:
        assert platform_config.problems_in(tomllib.loads(text)) == ()
    assert not [w for w in stack.plan.warnings if "refused by the platform" in w]


def test_the_platform_key_check_catches_what_the_platform_refuses() -> None:
    document = {
        "nachos": {"name": "x"},
        "llm": {"provider": "anthropic", "model": "m"},
        "security": {"mode": "standard"},
        "tools": {"code-runner": {"enabled": True}},
    }
    assert platform_config.problems_in(document) == (
        "unknown key tools.code-runner",
        "missing required key nachos.version",
    )
