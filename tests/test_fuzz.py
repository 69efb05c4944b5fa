"""Hypothesis fuzz of the loader and the command line: random YAML documents (known keys mixed with
junk, wrong types, huge and odd strings, deep nesting), random bytes, odd --set paths and
NACHOS_DEPLOY_* names. Whatever comes in, `render` ends with exit 0 or 3, one short message and
no traceback, and writes nothing when it refuses."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from nachos_deploy.interfaces.cli import app

runner = CliRunner()
FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

KNOWN = [
    "project", "output", "images", "prefix", "tag", "bus", "auth", "image", "max_payload", "max_pending",
    "client_port", "monitor_port", "bind_address", "healthcheck_interval", "resources", "memory", "cpus",
    "pids", "audit", "enabled", "stream", "storage", "max_age", "max_bytes", "components", "gateway",
    "llm-proxy", "slack", "filesystem", "environment", "secrets", "volumes", "networks", "egress", "user",
    "healthcheck", "test", "interval", "retries", "permissions", "publish", "subscribe", "command", "role",
    "build", "context", "connection_name", "read_only",
]  # fmt: skip
ODD_TEXT = st.sampled_from(
    ["", " ", "[/]", "[bold]x", "\u202e", "\ud7ff", "é", "😀", "a\nb", "$HOME", "${X}", "{{x}}", "../..",
     "0755", "12:30", "NO", "1e400", "nan", "-0", "\t", "~", "null", "x" * 3000, "1MB", "10s", "0.0.0.0"]
)  # fmt: skip
KEY = st.sampled_from(KNOWN) | st.text(max_size=12)
SCALAR = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | ODD_TEXT
    | st.text(max_size=40)
)
VALUE = st.recursive(
    SCALAR,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEY, inner, max_size=5),
    max_leaves=25,
)
DOCUMENT = st.dictionaries(KEY, VALUE, max_size=6)


@contextmanager
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="nachos-fuzz-") as tmp:
        old = Path.cwd()
        os.chdir(tmp)
        try:
            yield Path(tmp)
        finally:
            os.chdir(old)


def check(where: Path, args: list[str], env: dict[str, str] | None = None) -> int:
    clean = {name: None for name in os.environ if name.startswith("NACHOS_DEPLOY_")}
    before = sorted(p.name for p in where.iterdir())
    result = runner.invoke(app, ["render", *args], env={**clean, **(env or {})})  # type: ignore[dict-item]
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.stderr
    assert result.exit_code in (0, 3), (result.exit_code, result.stderr[-600:])
    if result.exit_code == 3:
        assert 0 < len(" ".join(result.stderr.split())) < 3000, result.stderr[-600:]
        assert sorted(p.name for p in where.iterdir()) == before, "files written on error"
    return result.exit_code


@FUZZ
@given(document=DOCUMENT)
def test_random_documents(document: dict[str, Any]) -> None:
    with folder() as where:
        (where / "nachos-deploy.yaml").write_text(
            yaml.safe_dump(document, allow_unicode=True), encoding="utf-8"
        )
        check(where, [])


@FUZZ
@given(text=st.text(max_size=300) | st.binary(max_size=300).map(lambda b: b.decode("latin-1")))
def test_random_text(text: str) -> None:
    with folder() as where:
        (where / "nachos-deploy.yaml").write_text(text, encoding="utf-8", errors="surrogatepass")
        check(where, [])


@FUZZ
@given(
    path=st.lists(KEY, min_size=0, max_size=5).map(".".join) | st.text(max_size=30),
    value=ODD_TEXT | st.text(max_size=40).filter(lambda v: "\x00" not in v) | st.just("[" * 3000),
)
def test_random_set_options(path: str, value: str) -> None:
    with folder() as where:
        check(where, ["--set", f"{path}={value}"])


ENV_NAME = st.lists(
    st.sampled_from([k.upper().replace("-", "_") for k in KNOWN])
    | st.from_regex(r"[A-Z0-9_]{0,8}", fullmatch=True),
    min_size=0,
    max_size=4,
).map(lambda parts: "NACHOS_DEPLOY_" + "__".join(parts))


@FUZZ
@given(name=ENV_NAME, value=ODD_TEXT | st.text(max_size=40).filter(lambda v: "\x00" not in v))
def test_random_environment_variables(name: str, value: str) -> None:
    if name == "NACHOS_DEPLOY_CONFIG":
        return
    with folder() as where:
        check(where, [], {name: value})
