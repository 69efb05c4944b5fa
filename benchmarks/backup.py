"""Measure `backup` and `restore` at the issue's sizes: 100,000 audit messages and a gateway database
of 10,000 rows, with publishing and requests going on while the backup runs.

Prints: the backup's time and size, what the clients saw meanwhile (acked publishes, requests
answered, failures), the restore's time (and its parts), and the acked messages up to the snapshot's
recorded last sequence that are missing after the restore (goal: 0), read back by a pull consumer
and compared byte for byte. Runs on the real engine with throwaway projects on engine-picked ports.

    .venv/bin/python benchmarks/backup.py [--messages 100000] [--rows 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import nats
import yaml
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for tests/

from tests import gateway_stack

PAYLOAD = 256


def deploy_file(folder: Path, project: str) -> None:
    folder.mkdir(parents=True)
    (folder / "nachos-deploy.yaml").write_text(yaml.safe_dump(gateway_stack.document(project)))


def cli(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "nachos_deploy", *args]
    done = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"nachos-deploy {' '.join(args)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return done


async def fill(nats_url: str, messages: int, rows: int) -> dict[int, bytes]:
    """``messages`` acked audit messages and ``rows`` answered gateway requests, 500 in flight."""
    client = await nats.connect(nats_url, connect_timeout=5)
    js = client.jetstream(timeout=30)
    acked: dict[int, bytes] = {}

    async def one() -> None:
        data = os.urandom(PAYLOAD)
        acked[(await js.publish("nachos.audit.log", data)).seq] = data

    try:
        for start in range(0, messages, 500):
            await asyncio.gather(*(one() for _ in range(min(500, messages - start))))
        for start in range(0, rows, 200):
            await asyncio.gather(
                *(
                    client.request("nachos.gateway.subagents.list", b"{}", timeout=30)
                    for _ in range(min(200, rows - start))
                )
            )
    finally:
        await client.close()
    return acked


async def read_all(nats_url: str, last_seq: int) -> dict[int, bytes]:
    """Every message of AUDIT up to ``last_seq``, through an ephemeral pull consumer."""
    client = await nats.connect(nats_url, connect_timeout=5)
    js = client.jetstream(timeout=30)
    found: dict[int, bytes] = {}
    try:
        config = ConsumerConfig(ack_policy=AckPolicy.NONE, deliver_policy=DeliverPolicy.ALL)
        sub = await js.pull_subscribe("nachos.audit.>", stream="AUDIT", config=config)
        while len(found) < last_seq:
            try:
                batch = await sub.fetch(1000, timeout=10)
            except TimeoutError:
                break
            for msg in batch:
                found[msg.metadata.sequence.stream] = bytes(msg.data)
    finally:
        await client.close()
    return found


def main() -> None:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--rows", type=int, default=10_000)
    options = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="nachos-backup-bench-"))
    tag = uuid.uuid4().hex[:6]
    source, copy = root / "source", root / "copy"
    deploy_file(source, f"bench-bk-{tag}")
    deploy_file(copy, f"bench-rs-{tag}")
    figures: dict[str, Any] = {"messages": options.messages, "rows": options.rows}
    try:
        up = json.loads(cli(source, "up", "--json").stdout)
        started = time.monotonic()
        acked = asyncio.run(fill(up["nats_url"], options.messages, options.rows))
        figures["fill_seconds"] = round(time.monotonic() - started, 1)
        load = gateway_stack.Load(up["nats_url"], payload=PAYLOAD)
        load.thread.start()
        time.sleep(1.0)
        before = (len(load.acked), load.answered)
        started = time.monotonic()
        done = cli(source, "backup", "--to", str(root / "stack.tar"), "--json")
        figures["backup_seconds"] = round(time.monotonic() - started, 1)
        during = (len(load.acked) - before[0], load.answered - before[1])
        load.stop.set()
        load.thread.join(timeout=30)
        result = json.loads(done.stdout)
        acked.update(load.acked)
        stream = result["streams"]["AUDIT"]
        figures.update(
            backup_bytes=result["size"],
            snapshot_last_seq=stream["last_seq"],
            snapshot_messages=stream["messages"],
            database_rows=result["database"]["rows"],
            database_pages=result["database"]["page_count"],
            during_backup={"acked_publishes": during[0], "requests_answered": during[1]},
            client_failures=len(load.failures),
        )
        cli(source, "down", "--volumes", "--yes")
        started = time.monotonic()
        restored = json.loads(cli(copy, "restore", str(root / "stack.tar"), "--json").stdout)
        figures["restore_seconds"] = round(time.monotonic() - started, 1)
        figures["restore_parts"] = restored["timings"]
        url = json.loads(cli(copy, "env", "--format", "json").stdout)["NATS_URL"]
        back = asyncio.run(read_all(url, stream["last_seq"]))
        wanted = [seq for seq in acked if seq <= stream["last_seq"]]
        figures["acked_before_snapshot"] = len(wanted)
        figures["missing_after_restore"] = sum(1 for seq in wanted if back.get(seq) != acked[seq])
    finally:
        for folder in (source, copy):
            subprocess.run(
                [sys.executable, "-m", "nachos_deploy", "down", "--volumes", "--yes"],
                cwd=folder,
                capture_output=True,
                timeout=300,
            )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
