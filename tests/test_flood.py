"""A compromised channel floods its own sidecar (issue 19, attacks 3 and 5), on the real engine: the
flooder (tests/flooder.py) runs inside the webchat container, as the attacker did, while the host
keeps asking the gateway. ``make flood`` (benchmarks/flood.py) runs each attack for 30 s with the
figures in docs/benchmarks.md; here each runs a few seconds.

What the fixes promise, each asserted so that removing it fails a test:
- an idle capped sidecar is never throttled by its own health checks (the CPU cap's period holds a
  check with room: at Docker's 100 ms period a 0.03 CPU sidecar was throttled for ~0.4 s of every
  second, and a message arriving then waited up to 100 ms; at 30 ms in each 1 s period, on a busy
  host where a check cost up to 30 ms, in one period of four, and CI read one of five here);
- 16-byte messages as fast as the channel can send: every gateway request is answered meanwhile
  and no container is killed for memory (the sidecars' max_pending and memory, and the CPU cap of
  the channel's sidecar, which limits how fast it can push messages at the gateway);
- a 10 MB message is refused by the channel's sidecar (max_payload 1 MB for a channel);
- more connections than a component needs are refused, and the sidecar lives (max_connections);
- 20,000 queue subscriptions stop at the sidecar (max_subscriptions), never reaching the hub;
- a loop of refused publishes, which makes the sidecar log a line each, keeps its log on disk
  within logging.max_size x logging.max_file.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from nachos_deploy.interfaces import api
from nachos_deploy.io.stack import Stack
from tests import floods

CHANNEL = "webchat"
LOG_SIZE = 1024 * 1024  # logging.max_size of the test stack: the engine's smallest we allow
LOG_FILES = 2


@pytest.fixture(scope="module")
def stack(engine: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    folder = tmp_path_factory.mktemp("flood")
    stack = floods.make_stack(
        folder,
        f"ndt-flood-{uuid.uuid4().hex[:8]}",
        llm_proxy=False,
        logging={"max_size": LOG_SIZE, "max_file": LOG_FILES},
    )
    try:
        api.up(stack, timeout=120)
        yield stack
    finally:
        api.down(stack, volumes=True)


def restarts(stack: Stack, service: str) -> int:
    container = floods.container(stack.project, service)
    out = subprocess.run(
        ["docker", "inspect", "-f", "{{.RestartCount}}", container],
        capture_output=True,
        text=True,
        check=True,
    )
    return int(out.stdout)


def test_an_idle_channel_sidecar_is_not_throttled_by_its_own_health_checks(stack: Stack) -> None:
    service = f"bus-{CHANNEL}"
    before = floods.cpu_stat(stack.project, service)
    time.sleep(10)  # ten health checks or more, each an exec in the sidecar's cgroup
    after = floods.cpu_stat(stack.project, service)
    ran = after["nr_periods"] - before["nr_periods"]
    throttled = after["nr_throttled"] - before["nr_throttled"]
    assert ran >= 1, f"the sidecar ran in no CPU period in 10 s: {before} -> {after}"
    # One period is allowed: on a host whose hypervisor takes CPU (steal), one exec now and then costs
    # twice its usual 25-30 ms and fills a period's room (CI, 2026-12-07: 1 of 6, with 0 in the runs
    # before). A cap that starves the sidecar is throttled in a quarter of its periods or more (30 ms:
    # 5 of 20, docs/security.md#limits-of-a-sidecar), which this still fails.
    assert throttled <= 1, f"{service} was throttled in {throttled} of the {ran} periods it ran in while idle"


def test_a_flood_of_small_messages_leaves_the_gateway_answering(stack: Stack) -> None:
    result = floods.run(stack.project, floods.operator_url(stack), CHANNEL, "small", 6.0, rate=10)
    print(result)  # the figures, in the captured output
    sent = result.flooder.get("sent")
    assert isinstance(sent, int) and sent > 10_000, f"the flood did not flow: {result.flooder}"
    assert not result.kills, f"killed for memory: {dict(result.kills)}"
    assert result.requests.answered == result.requests.sent, (
        f"{result.requests.sent - result.requests.answered} of {result.requests.sent} gateway requests "
        f"failed during the flood: {dict(result.requests.failures)}"
    )


def test_a_10_mb_message_is_refused_at_the_channels_sidecar(stack: Stack) -> None:
    before = restarts(stack, f"bus-{CHANNEL}")
    result = floods.run(stack.project, floods.operator_url(stack), CHANNEL, "big", 2.0, rate=5)
    print(result)
    errors = result.flooder.get("errors")
    assert isinstance(errors, dict) and any("Maximum Payload Violation" in e for e in errors), result.flooder
    assert result.flooder.get("sent") == 0, f"a 10 MB message went through: {result.flooder}"
    assert not result.kills and restarts(stack, f"bus-{CHANNEL}") == before
    assert result.requests.answered == result.requests.sent


def test_connections_beyond_a_handful_are_refused_and_the_sidecar_lives(stack: Stack) -> None:
    before = restarts(stack, f"bus-{CHANNEL}")
    result = floods.run(stack.project, floods.operator_url(stack), CHANNEL, "conns", 3.0, rate=5)
    print(result)
    most = result.flooder.get("most_open")
    assert isinstance(most, int) and most < 10, f"the sidecar kept {most} connections open: {result.flooder}"
    assert not result.kills and restarts(stack, f"bus-{CHANNEL}") == before
    assert result.requests.answered == result.requests.sent


def test_queue_subscriptions_stop_at_the_sidecar(stack: Stack) -> None:
    result = floods.run(stack.project, floods.operator_url(stack), CHANNEL, "subs", 2.0, rate=5)
    print(result)
    errors = result.flooder.get("errors")
    refused = (
        sum(n for e, n in errors.items() if "maximum subscriptions" in e) if isinstance(errors, dict) else 0
    )
    assert refused > 19_000, f"the sidecar took the subscriptions: {result.flooder}"
    assert not result.kills
    assert result.requests.answered == result.requests.sent


def log_bytes(container: str) -> int:
    """What the container's log takes on the engine's disk (either driver's files)."""
    found = subprocess.run(
        ["docker", "inspect", "-f", "{{.Id}} {{.HostConfig.LogConfig.Type}}", container],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    root = subprocess.run(
        ["docker", "info", "-f", "{{.DockerRootDir}}"], capture_output=True, text=True, check=True
    ).stdout.strip()
    folder = Path(root) / "containers" / found[0]
    files = [*folder.glob("local-logs/*"), *folder.glob("*-json.log*")]
    assert files, f"no log file of {container} under {folder} ({found[1]} driver)"
    return sum(f.stat().st_size for f in files)


def test_a_loop_of_refused_publishes_keeps_the_sidecars_log_bounded(stack: Stack) -> None:
    sidecar = floods.container(stack.project, f"bus-{CHANNEL}")
    process = floods.start_flood(stack.project, CHANNEL, "small", 5.0, subject="nachos.llm.request")
    result = floods.flood_result(process)
    print(result)
    sent = result.get("sent")
    # Each refused publish is a log line of about 150 bytes: far more than the bound went to the log.
    assert isinstance(sent, int) and sent * 150 > 3 * LOG_SIZE * LOG_FILES, result
    used = log_bytes(sidecar)
    assert used <= LOG_SIZE * LOG_FILES + 64 * 1024, f"{used} bytes of log, above the bound"
