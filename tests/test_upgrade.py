"""Upgrades on the real engine (Compose): a good version replaces the components one at a time while
requests are answered, a broken one (the probe's PROBE_FAIL_AFTER_UPGRADE, baked into an image of
this test's own) is rolled back with exit 6, and `rollback` returns to the previous deployment.

The versions are images derived FROM the shared probe and tagged uniquely for this module (never a
retag of a shared image): ``:1`` and ``:2`` differ by a label only, ``:3`` crash-loops after joining
the bus. Each component's gap (the time its ping subject went unanswered) is printed for
docs/upgrades.md, not asserted, as timings under a loaded CI machine vary; that the gaps of two
components never overlap (one at a time) is asserted."""

from __future__ import annotations

import asyncio
import json
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import pytest
import yaml

from tests import derived_images
from tests.commands import nachos_on
from tests.test_lifecycle import PROBE

COMPONENTS = ("gateway", "llm-proxy")


def docker(*args: str) -> None:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def build(tag: str, lines: str) -> str:
    """An image FROM the probe with ``lines`` added, tagged ``tag``; returns its id."""
    return derived_images.build_with(tag, PROBE, lines)


class Versions:
    """This module's three versions of the component image."""

    def __init__(self) -> None:
        self.repository = f"nachos-test/upgrade-{uuid.uuid4().hex[:8]}"
        self.ids = {
            "1": build(self.tag("1"), 'LABEL nachos.test.version="1"'),
            "2": build(self.tag("2"), 'LABEL nachos.test.version="2"'),
            "3": build(self.tag("3"), "ENV PROBE_FAIL_AFTER_UPGRADE=3"),
        }

    def tag(self, version: str) -> str:
        return f"{self.repository}:{version}"

    def remove(self) -> None:
        subprocess.run(
            ["docker", "image", "rm", "-f", *(self.tag(v) for v in self.ids)],
            capture_output=True,
            timeout=120,
        )


class Stack:
    def __init__(self, folder: Path, versions: Versions) -> None:
        self.project = f"h21up-{uuid.uuid4().hex[:6]}"
        self.folder = folder
        self.file = folder / "nachos-deploy.yaml"
        self.versions = versions

    def deploy(self, images: dict[str, str], environment: dict[str, str] | None = None) -> None:
        """The deploy file with each component on a version (and the gateway's extra environment)."""
        components: dict[str, Any] = {
            name: {"image": self.versions.tag(version), "egress": False} for name, version in images.items()
        }
        if environment:
            components["gateway"]["environment"] = environment
        document = {
            "project": self.project,
            "bus": {"client_port": 0, "monitor_port": 0, "healthcheck_interval": "500ms"},
            "ingress": {"enabled": False},
            "components": components,
        }
        self.file.write_text(yaml.safe_dump(document))

    def run(self, *args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return nachos_on(self.file, *args, timeout=timeout)

    def json(self, *args: str) -> tuple[int, dict[str, Any]]:
        done = self.run(*args, "--json")
        try:
            return done.returncode, dict(json.loads(done.stdout))
        except ValueError:
            raise AssertionError(done.stdout + done.stderr) from None

    def container(self, service: str) -> dict[str, Any]:
        listed = subprocess.run(
            [
                "docker", "ps", "-q",
                "--filter", f"label=com.docker.compose.project={self.project}",
                "--filter", f"label=com.docker.compose.service={service}",
            ],
            capture_output=True, text=True, check=True,
        ).stdout.split()  # fmt: skip
        assert len(listed) == 1, f"{service}: {listed}"
        found = json.loads(
            subprocess.run(["docker", "inspect", listed[0]], capture_output=True, check=True).stdout
        )
        return dict(found[0])


class Pinger:
    """Each component's ping subject asked every 50 ms from the host, in a thread of its own: when it
    went unanswered, to measure each component's gap during an upgrade."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: dict[str, list[tuple[float, bool]]] = {name: [] for name in COMPONENTS}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        client = await nats.connect(self.url, max_reconnect_attempts=-1, reconnect_time_wait=0.1)

        async def ask(name: str) -> None:
            while not self._stop.is_set():
                at = time.monotonic()
                try:
                    await client.request(f"nachos.health.ping.{name}", b"{}", timeout=0.5)
                    self.answers[name].append((at, True))
                except Exception:  # any failure is an unanswered ping
                    self.answers[name].append((at, False))
                await asyncio.sleep(0.05)

        await asyncio.gather(*(ask(name) for name in COMPONENTS))
        await client.close()

    def __enter__(self) -> Pinger:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def gap(self, name: str) -> tuple[float, float] | None:
        """The longest unanswered stretch: from the first unanswered ping to the next answered one."""
        longest: tuple[float, float] | None = None
        start: float | None = None
        for at, ok in self.answers[name]:
            if not ok and start is None:
                start = at
            elif ok and start is not None:
                if longest is None or at - start > longest[1] - longest[0]:
                    longest = (start, at)
                start = None
        return longest


@pytest.fixture(scope="module")
def stack(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    versions = Versions()
    made = Stack(tmp_path_factory.mktemp("upgrade"), versions)
    try:
        yield made
    finally:
        made.run("down", "--volumes", "--yes")
        versions.remove()


def test_upgrades_one_at_a_time_roll_back_a_broken_version_and_rollback_returns(stack: Stack) -> None:
    ids = stack.versions.ids
    stack.deploy({"gateway": "1", "llm-proxy": "1"})
    code, first = stack.json("up", "--timeout", "120")
    assert code == 0, first
    assert first["upgraded"] == {}

    # A good version: each component replaced alone, answering before the next is touched.
    stack.deploy({"gateway": "2", "llm-proxy": "2"})
    with Pinger(first["nats_url"]) as pinger:
        time.sleep(1.0)  # answered before
        started = time.monotonic()
        code, good = stack.json("up", "--timeout", "120")
        took = time.monotonic() - started
        time.sleep(1.0)
    assert code == 0, json.dumps(good)
    assert list(good["upgraded"]) == ["gateway", "llm-proxy"], good
    gaps = {name: pinger.gap(name) for name in COMPONENTS}
    answered = {name: sum(ok for _, ok in pinger.answers[name]) for name in COMPONENTS}
    print(
        f"\nupgrade of {', '.join(COMPONENTS)} in {took:.1f}s (up --json phases {good['phases']}); "
        + "; ".join(
            f"{name}: replaced and proven in {good['upgraded'][name]:.2f}s, gap "
            + (f"{gap[1] - gap[0]:.2f}s" if gap else "none")
            + f", {answered[name]} pings answered"
            for name, gap in gaps.items()
        )
    )
    assert all(answered.values())
    gateway_gap, proxy_gap = gaps["gateway"], gaps["llm-proxy"]
    if gateway_gap and proxy_gap:  # one at a time: the gateway was back before llm-proxy went
        assert gateway_gap[1] <= proxy_gap[0] + 0.1, gaps
    for name in COMPONENTS:
        assert stack.container(name)["Image"] == ids["2"]

    # A broken version of llm-proxy, with a new environment for the gateway in the same up: the
    # gateway is replaced and proven, llm-proxy's new container crash-loops, both are put back.
    stack.deploy({"gateway": "2", "llm-proxy": "3"}, environment={"UPGRADE_MARK": "three"})
    code, broken = stack.json("up", "--timeout", "60")
    assert code == 6, json.dumps(broken)
    assert broken["ok"] is False and broken["rolled_back"] == ["gateway", "llm-proxy"], broken
    assert "upgrade of llm-proxy failed" in broken["error"], broken["error"]
    human = stack.run("status")
    assert human.returncode == 0, human.stdout + human.stderr
    for name in COMPONENTS:
        assert stack.container(name)["Image"] == ids["2"]
    assert not any(v.startswith("UPGRADE_MARK=") for v in stack.container("gateway")["Config"]["Env"])

    # A rollback whose image is gone (its tag moved on, the old image removed) is refused before
    # anything changes, naming the service and the way back; the saved image loaded, it works.
    saved = stack.folder / "version-1.tar"
    docker("save", "-o", str(saved), stack.versions.tag("1"))
    docker("tag", stack.versions.tag("2"), stack.versions.tag("1"))
    docker("image", "rm", ids["1"])
    code, refused = stack.json("rollback", "--timeout", "60")
    assert code == 4, json.dumps(refused)
    assert f"gateway ran {stack.versions.tag('1')} as {ids['1']}" in refused["error"], refused["error"]
    assert "Nothing was changed" in refused["error"] and "bundle load" in refused["error"]
    for name in COMPONENTS:
        assert stack.container(name)["Image"] == ids["2"]
    docker("load", "-i", str(saved))

    # `rollback`: back to the previous successful deployment (version 1), proven as `up` proves it.
    code, back = stack.json("rollback", "--timeout", "120")
    assert code == 0, json.dumps(back)
    assert set(back["upgraded"]) == {"gateway", "llm-proxy"}, back
    for name in COMPONENTS:
        assert stack.container(name)["Image"] == ids["1"]
    code, status = stack.json("status")
    assert code == 0 and status["ok"], status
